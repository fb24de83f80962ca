#pragma once

#include <sys/uio.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "nvme/spec.h"
#include "nvme/tcp_pdu.h"
#include "reactor/reactor.h"
#include "tgt/nvmf/tcp_transport.h"

namespace smad::tgt {

class Controller;
class NvmfTarget;
class PollGroup;
class TcpQpair;

// A request's data buffer. The data goes to the bdev as it is, and aio bdevs open their file with O_DIRECT,
// which refuses (-EINVAL) memory not aligned to the logical block size; std::vector's storage is only
// 16-byte aligned. So this keeps its bytes 4 KiB aligned (512-byte and 4Kn devices alike). The interface
// is the part of std::vector that the qpair and the controller use, with the same semantics (resize
// keeps the contents and zero-fills, assign replaces them); capacity is kept across clear().
class IoBuffer {
 public:
  static constexpr size_t kAlignment = 4096;

  IoBuffer() = default;
  IoBuffer(IoBuffer&& other) noexcept { swap(other); }
  IoBuffer& operator=(IoBuffer&& other) noexcept {
    IoBuffer(std::move(other)).swap(*this);
    return *this;
  }
  ~IoBuffer() { Free(bytes_); }

  uint8_t* data() { return bytes_; }
  const uint8_t* data() const { return bytes_; }
  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  size_t capacity() const { return capacity_; }
  void clear() { size_ = 0; }
  void resize(size_t n) {
    Reserve(n, /*keep=*/true);
    if (n > size_) std::memset(bytes_ + size_, 0, n - size_);
    size_ = n;
  }
  void assign(size_t n, uint8_t value) {
    Reserve(n, /*keep=*/false);
    if (n > 0) std::memset(bytes_, value, n);
    size_ = n;
  }
  template <typename It>
  void assign(It first, It last) {
    size_t n = static_cast<size_t>(std::distance(first, last));
    Reserve(n, /*keep=*/false);
    std::copy(first, last, bytes_);
    size_ = n;
  }
  void swap(IoBuffer& other) noexcept {
    std::swap(bytes_, other.bytes_);
    std::swap(size_, other.size_);
    std::swap(capacity_, other.capacity_);
  }

 private:
  static void Free(uint8_t* p) {
    if (p != nullptr) ::operator delete(p, std::align_val_t{kAlignment});
  }
  // Makes room for `n` bytes, keeping the current contents if `keep`.
  void Reserve(size_t n, bool keep) {
    if (n <= capacity_) return;
    auto* bigger = static_cast<uint8_t*>(::operator new(n, std::align_val_t{kAlignment}));
    if (keep && size_ > 0) std::memcpy(bigger, bytes_, size_);
    Free(bytes_);
    bytes_ = bigger;
    capacity_ = n;
  }

  uint8_t* bytes_ = nullptr;
  size_t size_ = 0;
  size_t capacity_ = 0;
};

// One command in flight on a qpair: the SQE, its data buffer, and where it is in its life.
struct Request {
  enum class State { kFree, kNeedData, kExecuting, kDone };
  State state = State::kFree;
  TcpQpair* qpair = nullptr;
  uint16_t slot = 0;  // index in the qpair's table; the R2T transfer tag
  nvme::Command cmd{};
  IoBuffer data;  // host-to-controller data received, or controller-to-host data to send (block aligned)
  uint32_t transfer_length = 0;  // bytes the SGL describes
  uint32_t received = 0;         // host-to-controller bytes received so far
  bool host_to_controller = false;
  iovec iov{};
  int pending = 0;  // bdev I/Os outstanding (dataset management issues several)
  int first_error = 0;
};

// A host's NVMe/TCP connection: one queue pair (admin when qid 0). Speaks the PDU protocol, runs the
// Connect handshake through the control thread, executes I/O commands on this reactor's poll group, and
// hands admin commands to its Controller.
//
// Lifetime: created by the transport on a data reactor; owns itself. Close() shuts the socket at once
// and deletes the object when no bdev I/O still references its buffers.
// Thread safety: reactor-affine; other threads reach it only by posting to its reactor with a weak
// handle (Handle()).
class TcpQpair : public std::enable_shared_from_this<TcpQpair> {
 public:
  TcpQpair(NvmfTarget& target, PollGroup& group, Reactor& control, int fd, const TransportOptions& options);
  ~TcpQpair();
  TcpQpair(const TcpQpair&) = delete;
  TcpQpair& operator=(const TcpQpair&) = delete;

  // Starts reading; keeps itself alive while the connection is open.
  void Start();
  // Closes the connection (idempotent). `reason` is logged.
  void Close(const std::string& reason);

  // --- Used by Controller (same reactor) ---
  // Completes `req` with `status` and CQE dwords 0-1 (`value`, low dword first). Sends the data in req.data first when the command
  // transfers controller-to-host data and `status` is success.
  void Complete(Request& req, nvme::Status status, uint64_t value = 0);
  PollGroup& group() { return group_; }
  Reactor& reactor() { return reactor_; }
  uint16_t qid() const { return qid_; }
  uint32_t subsystem_id() const { return subsystem_id_; }
  const std::string& peer() const { return peer_; }
  const std::string& local_traddr() const { return local_traddr_; }
  const std::string& local_trsvcid() const { return local_trsvcid_; }
  const TransportOptions& options() const { return options_; }

 private:
  void OnReadable();
  void OnWritable();
  void ScheduleFlush();
  void Flush();
  void HandlePdu(const nvme::tcp::Pdu& pdu);
  void HandleIcReq(const nvme::tcp::Pdu& pdu);
  void HandleCapsule(const nvme::tcp::Pdu& pdu);
  void HandleH2CData(const nvme::tcp::Pdu& pdu);
  void Fatal(const nvme::tcp::ProtocolError& error);
  void Execute(Request& req);
  void ExecuteConnect(Request& req);
  void ExecuteIo(Request& req);
  void SubmitBdevIo(Request& req);
  void FinishBdevIo(Request& req, int status);
  void FinishConnect(Request& req, nvme::Status status, uint16_t cntlid, uint32_t subsystem_id,
                     std::shared_ptr<Controller> controller);
  Request* AllocRequest(uint16_t cid);
  void FreeRequest(Request& req);
  void MaybeDestroy();
  static void OnBdevDone(void* arg, int status);

  NvmfTarget& target_;
  PollGroup& group_;
  Reactor& reactor_;
  Reactor& control_;
  int fd_;
  TransportOptions options_;
  nvme::tcp::PduReader reader_;
  nvme::tcp::Params params_;
  std::vector<uint8_t> out_;
  size_t out_sent_ = 0;
  bool flush_scheduled_ = false;
  bool want_write_ = false;
  bool ic_done_ = false;
  bool connected_ = false;
  bool connecting_ = false;
  bool sq_flow_disabled_ = false;  // CATTR bit 2: the host needs no SQ head updates
  uint32_t sqhd_ = 0;
  bool reading_paused_ = false;
  std::vector<uint64_t> cid_in_use_ = std::vector<uint64_t>(1024, 0);  // one bit per command id
  bool closed_ = false;
  uint16_t qid_ = 0;
  uint16_t cntlid_ = 0;
  uint32_t subsystem_id_ = 0;
  uint32_t queue_size_ = 0;
  std::string peer_, local_traddr_, local_trsvcid_;
  std::vector<std::unique_ptr<Request>> requests_;
  std::vector<uint16_t> free_slots_;
  uint64_t bdev_ios_ = 0;  // bdev I/Os referencing request buffers
  std::shared_ptr<TcpQpair> self_;  // keeps the object alive while open
  std::shared_ptr<Controller> controller_;  // admin qpair: its controller; I/O qpair: null
  friend class Controller;
};

}  // namespace smad::tgt
