#pragma once

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace smad {

// Maximum NQN length in bytes, excluding the terminating NUL (NVMe Base Specification).
inline constexpr size_t kMaxNqnLength = 223;
inline constexpr absl::string_view kDiscoveryNqn = "nqn.2014-08.org.nvmexpress.discovery";

// Checks `nqn` against the NVMe Qualified Name rules, as SPDK's target enforces them:
//  - at most 223 bytes, valid UTF-8, no control characters;
//  - either "nqn.2014-08.org.nvmexpress:uuid:" followed by a canonical UUID,
//  - or "nqn.yyyy-mm." followed by a reverse domain name (labels of letters, digits and '-', each
//    starting with a letter and not ending with '-'), optionally followed by ':' and a free-form string;
//  - the discovery NQN is valid.
// Returns InvalidArgument with a message naming the rule that failed.
absl::Status ValidateNqn(absl::string_view nqn);

}  // namespace smad
