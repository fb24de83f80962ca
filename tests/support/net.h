#pragma once

#include <string>

namespace smad::testing {

// A loopback TCP port that was free a moment ago (bind to port 0, read it back, close).
std::string FreeTcpPort();

}  // namespace smad::testing
