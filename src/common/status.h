#pragma once

// Error helpers shared by every component. Errors are absl::Status values; code that talks to SPDK-style
// peers also needs the POSIX errno behind a failure, which travels as a payload (see ErrnoStatus).

#include <cerrno>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace smad {

// Returns a status whose canonical code is derived from `errnum` (a positive POSIX errno) and which carries
// the errno itself, so a JSON-RPC layer can answer with SPDK's `-errno` convention. An empty `message` is
// replaced by strerror(errnum).
absl::Status ErrnoStatus(int errnum, absl::string_view message = {});

// The errno carried by `status`, if it was built by ErrnoStatus.
std::optional<int> StatusErrno(const absl::Status& status);

// absl's message() is an absl::string_view (Debian's absl does not alias std types); this copies it.
inline std::string StatusMessage(const absl::Status& status) { return std::string(status.message()); }

// strerror_r wrapper that is thread safe and returns a std::string.
std::string ErrnoString(int errnum);

}  // namespace smad

#define SMAD_CONCAT_INNER(a, b) a##b
#define SMAD_CONCAT(a, b) SMAD_CONCAT_INNER(a, b)

// Returns from the enclosing function when `expr` (an absl::Status) is not OK.
#define RETURN_IF_ERROR(expr)                        \
  do {                                               \
    ::absl::Status smad_status_ = (expr);            \
    if (!smad_status_.ok()) return smad_status_;     \
  } while (0)

// `lhs = value of expr` where expr is an absl::StatusOr<T>; returns the error otherwise.
#define ASSIGN_OR_RETURN(lhs, expr) ASSIGN_OR_RETURN_IMPL(SMAD_CONCAT(smad_statusor_, __LINE__), lhs, expr)
#define ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                          \
  if (!tmp.ok()) return tmp.status();         \
  lhs = std::move(tmp).value()
