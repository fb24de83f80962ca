#pragma once

#include <sys/types.h>

#include <memory>
#include <string>

#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"
#include "reactor/reactor.h"

namespace smad::tgt {

// A listening Unix stream socket served by one reactor: the endpoint of a vhost-user or vfio-user
// controller. Destroying it stops accepting and removes the socket file, unless the file was replaced
// by someone else meanwhile.
//
// Thread safety: create, use and destroy on the reactor's thread.
class UnixListener {
 public:
  // Receives each accepted connection (non-blocking, close-on-exec) and owns it from then on.
  using AcceptHandler = absl::AnyInvocable<void(int fd)>;

  // Binds `path` and starts accepting. A socket file that nobody serves (left by a crashed process) is
  // replaced. Errors (errno payload): ENAMETOOLONG (path does not fit a sockaddr_un), EEXIST (the path
  // exists and is not a socket), EADDRINUSE (a live process serves it), and what bind/listen report
  // (ENOENT when the directory is missing, EACCES, ...).
  static absl::StatusOr<std::unique_ptr<UnixListener>> Create(Reactor& reactor, std::string path,
                                                              AcceptHandler on_accept);
  ~UnixListener();
  UnixListener(const UnixListener&) = delete;
  UnixListener& operator=(const UnixListener&) = delete;

  const std::string& path() const { return path_; }

 private:
  UnixListener(Reactor& reactor, std::string path, int fd, AcceptHandler on_accept);
  void Accept();

  Reactor& reactor_;
  std::string path_;
  int fd_;
  dev_t dev_ = 0;  // identity of the socket file, to remove only our own
  ino_t ino_ = 0;
  AcceptHandler on_accept_;
};

}  // namespace smad::tgt
