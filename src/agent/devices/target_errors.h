#pragma once

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "agent/spdk/target_rpc.h"

namespace smad::agent {

// The client-facing status for a failed target step: a target that cannot be reached keeps its code
// (Unavailable / DeadlineExceeded) so clients know to retry; an error answer becomes Internal. The message
// is "<what>: <cause>".
inline absl::Status TargetFailure(const absl::Status& cause, absl::string_view what) {
  if (IsTransportError(cause)) {
    return absl::Status(cause.code(), absl::StrCat(what, ": target unreachable: ", cause.message()));
  }
  return absl::InternalError(absl::StrCat(what, ": ", cause.message()));
}

}  // namespace smad::agent
