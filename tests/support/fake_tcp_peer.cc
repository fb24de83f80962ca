#include "support/fake_tcp_peer.h"

#include <netinet/in.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>

namespace smad::testing {

FakeTcpPeer::FakeTcpPeer(Mode mode) : mode_(mode) {
  listen_fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  if (listen_fd_ < 0 || bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      listen(listen_fd_, 64) != 0 || getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    std::abort();
  }
  port_ = ntohs(addr.sin_port);
  wake_fd_ = eventfd(0, EFD_CLOEXEC);
  thread_ = std::thread([this] { Loop(); });
}

FakeTcpPeer::~FakeTcpPeer() {
  uint64_t one = 1;
  (void)!write(wake_fd_, &one, sizeof(one));
  thread_.join();
  close(wake_fd_);
  close(listen_fd_);
}

void FakeTcpPeer::Loop() {
  std::vector<pollfd> fds = {{wake_fd_, POLLIN, 0}, {listen_fd_, POLLIN, 0}};
  while (true) {
    if (poll(fds.data(), fds.size(), -1) < 0) continue;
    if (fds[0].revents != 0) break;
    if (fds[1].revents & POLLIN) {
      int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd >= 0) {
        ++connections_;
        if (mode_ == Mode::kGarbage) {
          // Looks like nothing: not an ICResp (type 0x01), lengths inconsistent.
          std::vector<uint8_t> junk(4096);
          for (size_t i = 0; i < junk.size(); ++i) junk[i] = static_cast<uint8_t>(0x5a ^ (i * 31));
          (void)!send(fd, junk.data(), junk.size(), MSG_NOSIGNAL);
        }
        fds.push_back({fd, POLLIN, 0});
      }
    }
    for (size_t i = 2; i < fds.size();) {
      if (fds[i].revents == 0) {
        ++i;
        continue;
      }
      char buffer[4096];
      ssize_t n = recv(fds[i].fd, buffer, sizeof(buffer), 0);
      if (n > 0) {
        ++i;
        continue;
      }
      close(fds[i].fd);
      fds.erase(fds.begin() + static_cast<std::ptrdiff_t>(i));
    }
  }
  for (size_t i = 2; i < fds.size(); ++i) close(fds[i].fd);
}

}  // namespace smad::testing
