#pragma once

// A scripted fake NVMe/TCP controller for host-side unit tests. It listens on 127.0.0.1 (port 0), serves
// each connection on its own thread with blocking I/O, and speaks enough of the protocol for the
// initiator's state machine: ICReq/ICResp (digests, CPDA, MAXH2CDATA), Fabrics Connect, Property Get/Set
// (CAP, VS, CC, CSTS with RDY and SHST), Identify (controller, namespace, active list, descriptors),
// Set Features Number of Queues, Keep Alive, Get Log Page (discovery), Read (C2HData, optionally with
// SUCCESS) and Write (in-capsule or R2T/H2CData) against an in-memory namespace. Tests change behaviour
// per command through a hook. It validates what the host sends with the controller-role PduReader.
//
// This is a test tool, not a target: it has no subsystems, hosts list or queue accounting.

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "nvme/spec.h"
#include "nvme/tcp_pdu.h"

namespace smad::nvme::testing {

class FakeController {
 public:
  struct Config {
    bool discovery = false;
    std::string subnqn = "nqn.2016-06.io.spdk:cnode1";
    bool allow_hdgst = true;  // grant digests the host asks for
    bool allow_ddgst = true;
    uint8_t cpda = 0;
    uint32_t maxh2cdata = 8192;
    uint32_t ioccsz = 4;          // 16-byte units: 4 = 64 bytes = no in-capsule data on I/O queues
    uint32_t admin_in_capsule = 8192;
    uint8_t mdts = 5;             // 4 KiB << 5 = 128 KiB
    uint32_t c2h_chunk = 4096;    // C2HData PDU size for reads
    bool c2h_success = true;      // complete reads with C2HData SUCCESS instead of a CapsuleResp
    uint32_t r2t_chunk = 1u << 20;  // bytes asked for per R2T
    uint32_t block_size = 512;
    uint64_t blocks = 2048;
    uint16_t io_queues = 4;
    std::optional<Status> connect_status;  // reject Connect with this status
    // Discovery log entries returned for LID 70h (discovery controllers).
    uint32_t discovery_records = 0;
    // Raise the generation counter after the first full header read (to exercise the retry).
    bool bump_genctr_once = false;
  };

  // One connection as a hook sees it.
  class Connection {
   public:
    void Send(const std::vector<uint8_t>& bytes);
    void SendResponse(uint16_t cid, Status status, uint32_t cdw0 = 0, uint32_t cdw1 = 0);
    void SendC2HData(uint16_t cid, uint32_t offset, const uint8_t* data, uint32_t length, bool last, bool success);
    void SendR2T(uint16_t cid, uint16_t ttag, uint32_t offset, uint32_t length);
    void SendTermReq(uint16_t fes, uint32_t fei);
    void SendRaw(const uint8_t* bytes, size_t n);
    // Closes the socket.
    void Close();
    uint16_t qid() const { return qid_; }
    const tcp::Params& params() const { return params_; }

   private:
    friend class FakeController;
    struct PendingWrite {
      std::vector<uint8_t> sqe;
      std::vector<uint8_t> data;
      uint32_t requested = 0;  // bytes asked for by R2Ts so far
      uint32_t received = 0;
      uint16_t ttag = 0;
    };
    int fd_ = -1;
    uint16_t qid_ = 0;
    tcp::Params params_;
    std::map<uint16_t, PendingWrite> pending_writes_;
    uint16_t next_ttag_ = 1;
    std::mutex send_mu_;
  };

  // Called for each command capsule before the default handling; return true when the hook handled it
  // (sent a response, or deliberately none).
  using CommandHook = std::function<bool(Connection& conn, const Command& cmd, const uint8_t* data, uint32_t length)>;

  explicit FakeController(Config config);
  ~FakeController();
  FakeController(const FakeController&) = delete;
  FakeController& operator=(const FakeController&) = delete;

  std::string port() const { return std::to_string(port_); }
  void SetHook(CommandHook hook);

  // Observations, thread safe.
  int connections() const { return connections_.load(); }
  int keep_alives() const { return keep_alives_.load(); }
  int term_reqs_received() const { return term_reqs_.load(); }
  bool saw_shutdown() const { return shutdown_seen_.load(); }
  bool negotiated_hdgst() const { return hdgst_.load(); }
  bool negotiated_ddgst() const { return ddgst_.load(); }
  uint16_t last_connect_sqsize() const { return last_sqsize_.load(); }
  uint32_t last_connect_kato() const { return last_kato_.load(); }
  std::string last_hostnqn() const;
  int in_capsule_writes() const { return in_capsule_writes_.load(); }
  int r2ts_sent() const { return r2ts_.load(); }
  int h2c_pdus() const { return h2c_pdus_.load(); }
  // The namespace's bytes (block_size * blocks).
  std::vector<uint8_t> Snapshot() const;
  void Fill(uint64_t offset, const std::vector<uint8_t>& bytes);

 private:
  void AcceptLoop();
  void Serve(std::shared_ptr<Connection> conn);
  void HandleCommand(Connection& conn, const Command& cmd, const uint8_t* data, uint32_t length);
  void HandleAdmin(Connection& conn, const Command& cmd);
  void HandleRead(Connection& conn, const Command& cmd);
  void HandleWrite(Connection& conn, const Command& cmd, const uint8_t* data, uint32_t length);
  void HandleH2CData(Connection& conn, const tcp::Pdu& pdu);
  void FinishWrite(Connection& conn, uint16_t cid);
  std::vector<uint8_t> IdentifyController() const;
  std::vector<uint8_t> IdentifyNamespace(uint32_t nsid) const;
  std::vector<uint8_t> DiscoveryLogPage();
  void SendData(Connection& conn, uint16_t cid, const std::vector<uint8_t>& data, uint32_t length);

  Config config_;
  int listen_fd_ = -1;
  uint16_t port_ = 0;
  std::thread accept_thread_;
  std::atomic<bool> stopping_{false};
  mutable std::mutex mu_;
  std::vector<std::shared_ptr<Connection>> conns_;  // guarded by mu_
  std::vector<std::thread> threads_;                // guarded by mu_
  CommandHook hook_;                                 // guarded by mu_
  std::vector<uint8_t> media_;                       // guarded by mu_
  std::string last_hostnqn_;                         // guarded by mu_
  uint32_t cc_ = 0;                                  // guarded by mu_
  uint64_t genctr_ = 5;                              // guarded by mu_
  int header_reads_ = 0;                             // guarded by mu_
  std::atomic<int> connections_{0};
  std::atomic<int> keep_alives_{0};
  std::atomic<int> term_reqs_{0};
  std::atomic<bool> shutdown_seen_{false};
  std::atomic<bool> hdgst_{false};
  std::atomic<bool> ddgst_{false};
  std::atomic<uint16_t> last_sqsize_{0};
  std::atomic<uint32_t> last_kato_{0};
  std::atomic<int> in_capsule_writes_{0};
  std::atomic<int> r2ts_{0};
  std::atomic<int> h2c_pdus_{0};
};

}  // namespace smad::nvme::testing
