#include "common/status.h"

#include <cstring>

#include "absl/strings/cord.h"

namespace smad {
namespace {

constexpr char kErrnoPayloadUrl[] = "type.smad.dev/errno";

absl::StatusCode CodeForErrno(int errnum) {
  switch (errnum) {
    case 0: return absl::StatusCode::kOk;
    case EINVAL: case ERANGE: case E2BIG: case ENAMETOOLONG: return absl::StatusCode::kInvalidArgument;
    case ENOENT: case ENODEV: case ENXIO: case ESRCH: return absl::StatusCode::kNotFound;
    case EEXIST: case EALREADY: return absl::StatusCode::kAlreadyExists;
    case EPERM: case EACCES: return absl::StatusCode::kPermissionDenied;
    case ENOMEM: case ENOSPC: case EMFILE: case ENFILE: return absl::StatusCode::kResourceExhausted;
    case EBUSY: case ENOTEMPTY: return absl::StatusCode::kFailedPrecondition;
    case EAGAIN: case ECONNREFUSED: case ECONNRESET: case EPIPE: case ENOTCONN:
      return absl::StatusCode::kUnavailable;
    case ETIMEDOUT: return absl::StatusCode::kDeadlineExceeded;
    case ENOTSUP: case ENOSYS: return absl::StatusCode::kUnimplemented;
    case ECANCELED: return absl::StatusCode::kCancelled;
    default: return absl::StatusCode::kInternal;
  }
}

}  // namespace

std::string ErrnoString(int errnum) {
  char buf[128];
  // GNU strerror_r returns a pointer that may or may not be `buf`.
  const char* text = strerror_r(errnum, buf, sizeof(buf));
  return text;
}

absl::Status ErrnoStatus(int errnum, absl::string_view message) {
  absl::Status status(CodeForErrno(errnum),
                      message.empty() ? absl::string_view(ErrnoString(errnum)) : message);
  if (status.ok()) return status;
  status.SetPayload(kErrnoPayloadUrl, absl::Cord(std::to_string(errnum)));
  return status;
}

std::optional<int> StatusErrno(const absl::Status& status) {
  auto payload = status.GetPayload(kErrnoPayloadUrl);
  if (!payload) return std::nullopt;
  return std::stoi(std::string(*payload));
}

}  // namespace smad
