#pragma once

// FakeQemu: a TCP server on loopback speaking QMP like QEMU (greeting, capabilities, query-pci with PCI
// bridges, device_add/device_del with DEVICE_DELETED events, chardev-add/remove/query), recording every
// request, with fault injection. The QEMU peer of the vfiouser and vhost_blk device managers, for their
// unit tests (in process) and for integration tests against a real smad (started with its port).

#include <atomic>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "nlohmann/json.hpp"

namespace smad::testing {

using Json = nlohmann::json;

// Thread safe. Serves one connection at a time (QEMU's monitor does too), each until the client closes it.
class FakeQemu {
 public:
  struct Device {
    std::string id;
    std::string bus;
    uint32_t slot = 0;
    Json args;  // the device_add arguments
  };

  // Listens on 127.0.0.1 (an ephemeral port) with bridges `bridges` on root bus 0.
  explicit FakeQemu(std::vector<std::string> bridges = {"pci.spdk.0", "pci.spdk.1"});
  // Stops serving and closes the listening socket (the port then refuses connections).
  ~FakeQemu();
  FakeQemu(const FakeQemu&) = delete;
  FakeQemu& operator=(const FakeQemu&) = delete;

  uint16_t port() const { return port_; }

  // ---- fault injection ----
  // Every `command` fails with {"class": error_class, "desc": desc} until ClearFaults().
  void FailCommand(const std::string& command, const std::string& error_class = "GenericError",
                   const std::string& desc = "injected failure");
  // `command` gets no answer (the client must time out).
  void SilenceCommand(const std::string& command);
  // The connection is closed when `command` arrives.
  void CloseOnCommand(const std::string& command);
  // Replaces the reply line (without "\r\n") to `command`; "{id}" is replaced by the request's id.
  void RawReply(const std::string& command, const std::string& line);
  void ClearFaults();
  // The greeting line (without "\r\n"); nullopt: never greet.
  void SetGreeting(std::optional<std::string> line);
  // Whether the guest releases unplugged devices (device_del then removes the device and QEMU emits
  // DEVICE_DELETED); otherwise the device stays and no event comes.
  void SetGuestReleasesDevices(bool releases);
  // Unrelated events sent before every reply (the client must skip them).
  void SetNoiseEvents(bool noise);
  // The DEVICE_DELETED event of device_del is sent before its reply.
  void SetEventBeforeReply(bool before);

  // ---- state ----
  std::vector<Json> Requests();
  // The commands received so far, qmp_capabilities excluded.
  std::vector<std::string> Commands();
  // The request lines as received (with their "\r"), without the final "\n".
  std::vector<std::string> RawLines();
  // The arguments of the last `command` received (null when none).
  Json LastArguments(const std::string& command);
  // The arguments of every `command` received, oldest first.
  std::vector<Json> AllArguments(const std::string& command);
  void ClearRequests();
  std::optional<Device> FindDevice(const std::string& id);
  std::vector<Device> Devices();
  bool HasChardev(const std::string& id);
  std::string ChardevPath(const std::string& id);
  // The DEVICE_DELETED events sent so far: the "device" of each.
  std::vector<std::string> DeletedEvents();
  // Out-of-band changes (a VM restart, an operator).
  void RemoveDevice(const std::string& id);
  void RemoveChardev(const std::string& id);
  int connections();

 private:
  void Serve();
  void ServeConnection(int fd);
  Json QueryPci() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Handles one request line (`raw`: as received, without its "\n"); fills `reply` (possibly several
  // lines). False: close the connection.
  bool Handle(const std::string& raw, const std::string& line, std::string& reply);

  const std::vector<std::string> bridges_;
  int listen_fd_ = -1;
  uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread thread_;

  absl::Mutex mu_;
  std::optional<std::string> greeting_ ABSL_GUARDED_BY(mu_) =
      R"({"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": ""}, "capabilities": ["oob"]}})";
  std::map<std::string, std::pair<std::string, std::string>> failures_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> silenced_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> close_on_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::string> raw_replies_ ABSL_GUARDED_BY(mu_);
  bool guest_releases_ ABSL_GUARDED_BY(mu_) = true;
  bool noise_ ABSL_GUARDED_BY(mu_) = false;
  bool event_before_reply_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<Json> requests_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> raw_lines_ ABSL_GUARDED_BY(mu_);
  std::vector<Device> devices_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::string> chardevs_ ABSL_GUARDED_BY(mu_);  // label -> socket path
  std::vector<std::string> deleted_events_ ABSL_GUARDED_BY(mu_);
  int connections_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace smad::testing
