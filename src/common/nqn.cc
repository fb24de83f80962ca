#include "common/nqn.h"

#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/uuid.h"

namespace smad {
namespace {

constexpr absl::string_view kUuidPrefix = "nqn.2014-08.org.nvmexpress:uuid:";

bool IsValidUtf8(absl::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    size_t len;
    uint32_t cp;
    if (c < 0x80) { len = 1; cp = c; }
    else if ((c & 0xe0) == 0xc0) { len = 2; cp = c & 0x1f; }
    else if ((c & 0xf0) == 0xe0) { len = 3; cp = c & 0x0f; }
    else if ((c & 0xf8) == 0xf0) { len = 4; cp = c & 0x07; }
    else return false;
    if (i + len > s.size()) return false;
    for (size_t k = 1; k < len; ++k) {
      unsigned char cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xc0) != 0x80) return false;
      cp = cp << 6 | (cc & 0x3f);
    }
    // Reject overlong encodings, surrogates and out-of-range code points.
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
        (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff) {
      return false;
    }
    i += len;
  }
  return true;
}

// "yyyy-mm." date part of a reverse-domain NQN.
bool HasDatePrefix(absl::string_view s) {
  if (s.size() < 8) return false;
  for (int i : {0, 1, 2, 3, 5, 6}) {
    if (!absl::ascii_isdigit(static_cast<unsigned char>(s[i]))) return false;
  }
  if (s[4] != '-' || s[7] != '.') return false;
  int month = (s[5] - '0') * 10 + (s[6] - '0');
  return month >= 1 && month <= 12;
}

absl::Status ValidateDomain(absl::string_view domain) {
  if (domain.empty()) return absl::InvalidArgumentError("NQN has an empty domain name");
  size_t start = 0;
  while (start <= domain.size()) {
    size_t end = domain.find('.', start);
    if (end == absl::string_view::npos) end = domain.size();
    absl::string_view label = domain.substr(start, end - start);
    if (label.empty()) return absl::InvalidArgumentError("NQN domain has an empty label");
    if (!absl::ascii_isalpha(static_cast<unsigned char>(label.front()))) {
      return absl::InvalidArgumentError("NQN domain label must start with a letter");
    }
    if (label.back() == '-') return absl::InvalidArgumentError("NQN domain label must not end with '-'");
    for (char c : label) {
      if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '-') {
        return absl::InvalidArgumentError("NQN domain label has an invalid character");
      }
    }
    start = end + 1;
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateNqn(absl::string_view nqn) {
  if (nqn.size() > kMaxNqnLength) {
    return absl::InvalidArgumentError(absl::StrCat("NQN is longer than ", kMaxNqnLength, " bytes"));
  }
  if (!IsValidUtf8(nqn)) return absl::InvalidArgumentError("NQN is not valid UTF-8");
  for (char c : nqn) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
      return absl::InvalidArgumentError("NQN contains a control character");
    }
  }
  if (nqn == kDiscoveryNqn) return absl::OkStatus();
  if (absl::StartsWith(nqn, kUuidPrefix)) {
    absl::string_view uuid = nqn.substr(kUuidPrefix.size());
    if (!Uuid::Parse(uuid).ok()) return absl::InvalidArgumentError("NQN has an invalid UUID");
    return absl::OkStatus();
  }
  if (!absl::StartsWith(nqn, "nqn.")) return absl::InvalidArgumentError("NQN must start with \"nqn.\"");
  absl::string_view rest = nqn.substr(4);
  if (!HasDatePrefix(rest)) return absl::InvalidArgumentError("NQN must continue with a date \"yyyy-mm.\"");
  rest = rest.substr(8);
  size_t colon = rest.find(':');
  absl::string_view domain = rest.substr(0, colon);
  absl::Status domain_status = ValidateDomain(domain);
  if (!domain_status.ok()) return domain_status;
  if (colon != absl::string_view::npos && colon + 1 == rest.size()) {
    return absl::InvalidArgumentError("NQN has an empty user string after ':'");
  }
  return absl::OkStatus();
}

}  // namespace smad
