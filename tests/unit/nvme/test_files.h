#pragma once

// Loads test data files of the source tree (SMAD_SOURCE_DIR is set by smad_add_test).

#include <cstdint>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

namespace smad::nvme::test {

// The bytes of `relative` (a path from the repository root); empty if it cannot be read.
inline std::vector<uint8_t> ReadSourceFile(const std::string& relative) {
  std::ifstream in(std::string(SMAD_SOURCE_DIR) + "/" + relative, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// A binary file extracted from the captures in tests/data/nvme-tcp/.
inline std::vector<uint8_t> ReadCaptureStream(const std::string& name) {
  return ReadSourceFile("tests/data/nvme-tcp/" + name);
}

// Hex digits (whitespace ignored) to bytes.
inline std::vector<uint8_t> FromHex(const std::string& hex) {
  std::vector<uint8_t> bytes;
  int high = -1;
  for (char c : hex) {
    int digit;
    if (c >= '0' && c <= '9') {
      digit = c - '0';
    } else if (c >= 'a' && c <= 'f') {
      digit = c - 'a' + 10;
    } else if (c >= 'A' && c <= 'F') {
      digit = c - 'A' + 10;
    } else {
      continue;
    }
    if (high < 0) {
      high = digit;
    } else {
      bytes.push_back(static_cast<uint8_t>(high << 4 | digit));
      high = -1;
    }
  }
  return bytes;
}

}  // namespace smad::nvme::test
