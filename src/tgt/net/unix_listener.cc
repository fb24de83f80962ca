#include "tgt/net/unix_listener.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>

#include "common/status.h"
#include "spdlog/spdlog.h"

namespace smad::tgt {
namespace {

// An existing socket file: removed when nobody accepts on it, EADDRINUSE when a process serves it.
absl::Status RemoveStaleSocket(const std::string& path, const sockaddr_un& addr) {
  int probe = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (probe < 0) return ErrnoStatus(errno, "socket(AF_UNIX) failed: " + ErrnoString(errno));
  int rc = ::connect(probe, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr));
  int err = rc == 0 ? 0 : errno;
  ::close(probe);
  if (rc == 0 || err == EAGAIN || err == EINPROGRESS) {
    return ErrnoStatus(EADDRINUSE, "socket " + path + " is in use by another process");
  }
  if (err == ENOENT) return absl::OkStatus();  // removed meanwhile
  if (err != ECONNREFUSED) return ErrnoStatus(err, "cannot probe existing socket " + path + ": " + ErrnoString(err));
  spdlog::info("removing stale socket {}", path);
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
    return ErrnoStatus(errno, "cannot remove stale socket " + path + ": " + ErrnoString(errno));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<UnixListener>> UnixListener::Create(Reactor& reactor, std::string path,
                                                                   AcceptHandler on_accept) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof(addr.sun_path)) {
    return ErrnoStatus(ENAMETOOLONG, "socket path '" + path + "' is empty or longer than " +
                                         std::to_string(sizeof(addr.sun_path) - 1) + " bytes");
  }
  std::memcpy(addr.sun_path, path.data(), path.size());

  struct stat st;
  if (::lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) return ErrnoStatus(EEXIST, path + " exists and is not a socket");
    RETURN_IF_ERROR(RemoveStaleSocket(path, addr));
  } else if (errno != ENOENT) {
    return ErrnoStatus(errno, "cannot stat " + path + ": " + ErrnoString(errno));
  }

  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return ErrnoStatus(errno, "socket(AF_UNIX) failed: " + ErrnoString(errno));
  if (::bind(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) {
    int err = errno;
    ::close(fd);
    return ErrnoStatus(err, "cannot bind " + path + ": " + ErrnoString(err));
  }
  if (::listen(fd, SOMAXCONN) != 0) {
    int err = errno;
    ::close(fd);
    ::unlink(path.c_str());
    return ErrnoStatus(err, "cannot listen on " + path + ": " + ErrnoString(err));
  }
  auto listener = std::unique_ptr<UnixListener>(new UnixListener(reactor, path, fd, std::move(on_accept)));
  if (::stat(path.c_str(), &st) == 0) {
    listener->dev_ = st.st_dev;
    listener->ino_ = st.st_ino;
  }
  UnixListener* self = listener.get();
  absl::Status watched = reactor.WatchFd(fd, EPOLLIN, [self](uint32_t) { self->Accept(); });
  if (!watched.ok()) return watched;  // the destructor closes and unlinks
  return listener;
}

UnixListener::UnixListener(Reactor& reactor, std::string path, int fd, AcceptHandler on_accept)
    : reactor_(reactor), path_(std::move(path)), fd_(fd), on_accept_(std::move(on_accept)) {}

UnixListener::~UnixListener() {
  reactor_.UnwatchFd(fd_);
  ::close(fd_);
  struct stat st;
  if (::lstat(path_.c_str(), &st) == 0 && st.st_dev == dev_ && st.st_ino == ino_) {
    ::unlink(path_.c_str());
  }
}

void UnixListener::Accept() {
  for (;;) {
    int fd = ::accept4(fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno != EAGAIN) spdlog::warn("accept on {} failed: {}", path_, ErrnoString(errno));
      return;
    }
    on_accept_(fd);
  }
}

}  // namespace smad::tgt
