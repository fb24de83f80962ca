#pragma once

#include <sys/types.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "sma.grpc.pb.h"

namespace smad::testing {

// A real smad process started by a test, with its state directory in `dir`/state, its log in
// `dir`/smad.log, and (unless the config names an external target) its own embedded smad-tgt.
// The destructor kills smad and any smad-tgt it left running. Thread compatible.
class SmadProcess {
 public:
  struct Options {
    std::string config_yaml;                     // written to `dir`/smad.yaml and passed with -c
    std::vector<std::string> extra_args;
    std::map<std::string, std::string> env;      // added to the environment (e.g. SMA_PLUGINS)
    bool wait_ready = true;                      // wait for the gRPC port to accept connections
  };

  explicit SmadProcess(std::string dir);
  ~SmadProcess();
  SmadProcess(const SmadProcess&) = delete;
  SmadProcess& operator=(const SmadProcess&) = delete;

  // Starts smad on a free loopback port (kept across restarts) and waits up to 60 s until it serves.
  absl::Status Start(const Options& options);
  // Starts it again with the same options (after Stop), on the same port and state directory.
  absl::Status Restart();
  // Sends `sig` and waits for the exit; returns the wait status.
  int Stop(int sig);
  // Waits for the process to exit by itself (e.g. a configuration error); returns the exit code, or -1
  // on timeout.
  int WaitExit(int timeout_ms);
  bool running() const { return pid_ > 0; }
  pid_t pid() const { return pid_; }
  uint16_t port() const { return port_; }
  const std::string& state_dir() const { return state_dir_; }
  // The embedded smad-tgt's socket and pid (from its pid file; -1 when none).
  std::string tgt_socket() const { return state_dir_ + "/smad-tgt.sock"; }
  pid_t TgtPid() const;
  std::string ReadLog() const;

  std::unique_ptr<sma::StorageManagementAgent::Stub> Stub() const;

  static std::string Binary();

 private:
  std::string dir_;
  std::string state_dir_;
  std::string log_;
  Options options_;
  uint16_t port_ = 0;
  pid_t pid_ = -1;
};

}  // namespace smad::testing
