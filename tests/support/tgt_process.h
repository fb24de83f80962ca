#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "jsonrpc/blocking_client.h"

namespace smad::testing {

// A real smad-tgt process started by a test: its own socket, its log in `dir`/smad-tgt.log.
// Thread compatible.
class TgtProcess {
 public:
  struct Options {
    std::string cpumask = "0x1";
    std::string config_file;
    std::vector<std::string> extra_args;
  };

  // `dir` holds the socket and the log.
  explicit TgtProcess(std::string dir, std::string name = "tgt");
  ~TgtProcess();  // SIGKILLs a process still running
  TgtProcess(const TgtProcess&) = delete;
  TgtProcess& operator=(const TgtProcess&) = delete;

  // Starts the binary and waits (up to 10 s) until its RPC socket answers spdk_get_version.
  absl::Status Start(const Options& options);
  absl::Status Start() { return Start(Options()); }
  // Sends `sig` and, unless it is 0, waits for the exit. Returns the wait status.
  int Stop(int sig);
  bool running() const { return pid_ > 0; }
  pid_t pid() const { return pid_; }
  const std::string& socket() const { return socket_; }
  std::string log_path() const { return log_; }
  std::string ReadLog() const;

  // A new connection to the RPC socket.
  absl::StatusOr<jsonrpc::BlockingClient> Connect() const;

  static std::string Binary();

 private:
  std::string dir_;
  std::string socket_;
  std::string log_;
  pid_t pid_ = -1;
};

}  // namespace smad::testing
