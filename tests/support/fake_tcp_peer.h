#pragma once

// FakeTcpPeer: a loopback TCP listener that misbehaves on purpose, standing in for a remote endpoint a
// real target cannot imitate: one that answers bytes that are not NVMe/TCP, or one that accepts and then
// never says anything. For fault injection only; tests talk to real smad-tgt processes otherwise.

#include <atomic>
#include <string>
#include <thread>
#include <vector>


namespace smad::testing {

// Thread safe. Serves every accepted connection on one background thread until destruction.
class FakeTcpPeer {
 public:
  enum class Mode {
    kGarbage,  // on accept, sends a burst of bytes that are no valid PDU, then reads and discards
    kSilent,   // accepts, reads and discards, never sends anything
  };

  // Listens on 127.0.0.1 at an ephemeral port.
  explicit FakeTcpPeer(Mode mode);
  // Closes the listener and every connection.
  ~FakeTcpPeer();
  FakeTcpPeer(const FakeTcpPeer&) = delete;
  FakeTcpPeer& operator=(const FakeTcpPeer&) = delete;

  std::string port() const { return std::to_string(port_); }
  int connections() const { return connections_.load(); }

 private:
  void Loop();

  Mode mode_;
  int listen_fd_ = -1;
  int wake_fd_ = -1;  // eventfd that ends Loop
  int port_ = 0;
  std::atomic<int> connections_{0};
  std::thread thread_;
};

}  // namespace smad::testing
