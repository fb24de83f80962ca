#pragma once

// The "bdev_crypto" crypto engine of SPDK's SMA: an encrypting bdev (bdev_crypto_create, SPDK's inline-key
// form, which makes the target create the accel key "<crypto bdev>_<cipher>") stacked on the volume's
// bdev. The device exposes the crypto bdev; QoS stays on the volume bdev.

#include "agent/core/crypto_engine.h"
#include "agent/spdk/target_rpc.h"

namespace smad::agent {

// Validation (before any target call): cipher AES_CBC(0) or AES_XTS(1), tweak_mode 0, key as hex text of
// 16 or 32 bytes (AES_XTS: key2 of the same length, different from key; AES_CBC: no key2). Errors are
// InvalidArgument "Invalid volume crypto configuration: bad <what>". Target failures of Setup: Internal
// "Failed to setup crypto for volume: <id>". Thread safety: as CryptoEngine.
CryptoEnginePtr MakeBdevCryptoEngine(TargetRpc& rpc);

}  // namespace smad::agent
