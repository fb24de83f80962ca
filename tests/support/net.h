#pragma once

#include <string>

namespace smad::testing {

// A loopback TCP port that was free a moment ago, drawn at random below the kernel's ephemeral range so
// that parallel tests binding port 0 cannot be handed the same one.
std::string FreeTcpPort();

}  // namespace smad::testing
