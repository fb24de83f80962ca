#include "support/net.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fstream>
#include <random>

namespace smad::testing {
namespace {

// The kernel's ephemeral port range (what bind(port 0) and outgoing connections use).
std::pair<int, int> EphemeralRange() {
  std::ifstream in("/proc/sys/net/ipv4/ip_local_port_range");
  int low = 32768, high = 60999;
  in >> low >> high;
  return {low, high};
}

bool Bindable(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return false;
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  bool ok = bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  close(fd);
  return ok;
}

}  // namespace

// Picks a random free port *below* the ephemeral range: ports handed out by bind(0) to other tests
// running in parallel (and their client connections) never come from there, so the port stays free
// until the caller binds it, short of another caller drawing the same number.
std::string FreeTcpPort() {
  static thread_local std::mt19937 rng(std::random_device{}());
  auto [low, high] = EphemeralRange();
  int top = low > 20000 ? low - 1 : 32767;
  int bottom = top > 12000 ? top - 10000 : 1024;
  std::uniform_int_distribution<int> pick(bottom, top);
  for (int attempt = 0; attempt < 200; ++attempt) {
    int port = pick(rng);
    if (Bindable(port)) return std::to_string(port);
  }
  return std::to_string(pick(rng));
}

}  // namespace smad::testing
