#pragma once

// Internal to smad_agent_spdk: the Unix/TCP client behind CreateJsonRpcClient.

#include "absl/status/statusor.h"
#include "agent/spdk/spdk_client.h"
#include "agent/spdk/transport.h"

namespace smad::agent {

// The client for a kUnix or kTcp `address`; `options` were validated by CreateJsonRpcClient.
//
// One persistent connection, owned by a background I/O thread that connects (with backoff), writes what
// callers could not write at once, and watches for the target hanging up. Callers write their request
// directly when the socket accepts it. Answers are read by the callers themselves: one waiting caller
// at a time holds the "reader" role, reads whatever the socket has, hands each answer to its caller by
// id, and passes the role on to another waiting caller once its own answer is in. So a lone call costs
// one wake-up (the target's answer waking the caller), not two.
// Errors of Create: Internal when the thread's wake-up eventfd cannot be created.
//
// An error answer with id null means the target could not read one of the requests on the connection
// (SPDK answers that to invalid JSON and closes the connection). It cannot be attributed to one caller,
// so every call waiting on the connection fails with DataLoss naming the target's error, and the
// connection is dropped and re-established.
absl::StatusOr<SpdkClientPtr> NewStreamClient(SpdkAddress address, JsonRpcClientOptions options);

}  // namespace smad::agent
