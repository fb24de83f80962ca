#include "tgt/bdev/crypto_bdev.h"

#include <openssl/evp.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "common/status.h"
#include "spdlog/spdlog.h"

namespace smad::tgt {
namespace {

// SPDK's namespace for crypto bdev UUIDs (BDEV_CRYPTO_NAMESPACE_UUID).
constexpr std::array<uint8_t, 16> kCryptoUuidNamespace = {0x07, 0x8e, 0x3c, 0xf7, 0xf4, 0xb4, 0x45, 0x45,
                                                          0xb2, 0xc3, 0xd4, 0x00, 0x45, 0xa6, 0x4a, 0xe2};
// Bounce buffers are aligned for O_DIRECT bases.
constexpr size_t kBounceAlignment = 4096;
// Write-zeroes is emulated in writes of at most this size.
constexpr uint64_t kZeroChunkBytes = 1 << 20;

// A cursor over a scatter list, moved block by block.
class IovCursor {
 public:
  IovCursor(const iovec* iovs, int iovcnt) : iovs_(iovs), iovcnt_(iovcnt) {}

  // The next `len` bytes when a single iovec holds them, else nullptr. Does not advance.
  uint8_t* Contiguous(size_t len) {
    Settle();
    if (index_ >= iovcnt_ || iovs_[index_].iov_len - offset_ < len) return nullptr;
    return static_cast<uint8_t*>(iovs_[index_].iov_base) + offset_;
  }
  void Advance(size_t len) { Walk(len, [](uint8_t*, size_t) {}); }
  // Copies the next `len` bytes out, then advances.
  void Gather(uint8_t* to, size_t len) {
    Walk(len, [&to](uint8_t* from, size_t n) {
      std::memcpy(to, from, n);
      to += n;
    });
  }
  // Copies `len` bytes into the next bytes, then advances.
  void Scatter(const uint8_t* from, size_t len) {
    Walk(len, [&from](uint8_t* to, size_t n) {
      std::memcpy(to, from, n);
      from += n;
    });
  }

 private:
  // Skips exhausted and empty iovecs.
  void Settle() {
    while (index_ < iovcnt_ && offset_ == iovs_[index_].iov_len) {
      ++index_;
      offset_ = 0;
    }
  }
  template <typename F>
  void Walk(size_t len, F&& piece) {
    while (len > 0) {
      Settle();
      if (index_ >= iovcnt_) return;
      size_t n = std::min(len, iovs_[index_].iov_len - offset_);
      piece(static_cast<uint8_t*>(iovs_[index_].iov_base) + offset_, n);
      offset_ += n;
      len -= n;
    }
  }

  const iovec* iovs_;
  int iovcnt_;
  int index_ = 0;
  size_t offset_ = 0;
};

class CryptoChannel;

// One crypto bdev I/O in flight: the I/O it serves and, for writes, the bounce buffer of ciphertext.
struct CryptoIo {
  ~CryptoIo() { std::free(bounce); }
  // Makes the bounce buffer at least `bytes` long. False when memory is short.
  bool Reserve(size_t bytes) {
    if (bytes <= capacity) return true;
    size_t size = (bytes + kBounceAlignment - 1) / kBounceAlignment * kBounceAlignment;
    void* fresh = std::aligned_alloc(kBounceAlignment, size);
    if (fresh == nullptr) return false;
    std::free(bounce);
    bounce = static_cast<uint8_t*>(fresh);
    capacity = size;
    return true;
  }

  BdevIo* io = nullptr;
  CryptoChannel* channel = nullptr;
  iovec iov{};
  uint8_t* bounce = nullptr;
  size_t capacity = 0;
  uint64_t next_lba = 0;   // write-zeroes emulation: next block to write
  uint64_t remaining = 0;  // write-zeroes emulation: blocks not yet submitted
  CryptoIo* next_free = nullptr;
};

// A crypto bdev's context on one reactor: its base channel, its own cipher contexts, pooled I/O
// contexts and bounce buffers.
class CryptoChannel : public ModuleChannel {
 public:
  CryptoChannel(Bdev& base, Cipher cipher, uint32_t block_size, std::unique_ptr<AesCipher> encrypt,
                std::unique_ptr<AesCipher> decrypt)
      : base_(base),
        base_channel_(base.AcquireChannel()),
        cipher_(cipher),
        block_size_(block_size),
        encrypt_(std::move(encrypt)),
        decrypt_(std::move(decrypt)),
        scratch_(block_size),
        zeroes_(block_size, 0) {}
  ~CryptoChannel() override { base_.ReleaseChannel(base_channel_); }

  BdevChannel& base() { return *base_channel_; }
  uint32_t block_size() const { return block_size_; }

  CryptoIo* Alloc(BdevIo& io) {
    if (free_ == nullptr) {
      ios_.push_back(std::make_unique<CryptoIo>());
      ios_.back()->next_free = free_;
      free_ = ios_.back().get();
    }
    CryptoIo* cio = free_;
    free_ = cio->next_free;
    cio->io = &io;
    cio->channel = this;
    return cio;
  }
  void Free(CryptoIo* cio) {
    cio->io = nullptr;
    cio->next_free = free_;
    free_ = cio;
  }

  // Encrypts `blocks` blocks from the scatter list (or zeroes when `iovs` is null) into `out`.
  bool Encrypt(const iovec* iovs, int iovcnt, uint64_t lba, uint64_t blocks, uint8_t* out) {
    IovCursor src(iovs, iovcnt);
    for (uint64_t i = 0; i < blocks; ++i) {
      const uint8_t* in = zeroes_.data();
      if (iovs != nullptr) {
        uint8_t* direct = src.Contiguous(block_size_);
        if (direct != nullptr) {
          in = direct;
          src.Advance(block_size_);
        } else {
          src.Gather(scratch_.data(), block_size_);
          in = scratch_.data();
        }
      }
      if (!encrypt_->Process(BlockIv(cipher_, lba + i), in, out + i * block_size_, block_size_)) return false;
    }
    return true;
  }

  // Decrypts `blocks` blocks of the scatter list in place.
  bool Decrypt(const iovec* iovs, int iovcnt, uint64_t lba, uint64_t blocks) {
    IovCursor data(iovs, iovcnt);
    for (uint64_t i = 0; i < blocks; ++i) {
      CipherIv iv = BlockIv(cipher_, lba + i);
      uint8_t* direct = data.Contiguous(block_size_);
      if (direct != nullptr) {
        if (!decrypt_->Process(iv, direct, direct, block_size_)) return false;
        data.Advance(block_size_);
        continue;
      }
      // A block split across iovecs: decrypt a gathered copy and put it back.
      IovCursor copy = data;
      copy.Gather(scratch_.data(), block_size_);
      if (!decrypt_->Process(iv, scratch_.data(), scratch_.data(), block_size_)) return false;
      data.Scatter(scratch_.data(), block_size_);
    }
    return true;
  }

 private:
  Bdev& base_;
  BdevChannel* base_channel_;
  Cipher cipher_;
  uint32_t block_size_;
  std::unique_ptr<AesCipher> encrypt_;
  std::unique_ptr<AesCipher> decrypt_;
  std::vector<uint8_t> scratch_;
  std::vector<uint8_t> zeroes_;
  std::vector<std::unique_ptr<CryptoIo>> ios_;
  CryptoIo* free_ = nullptr;
};

absl::StatusOr<std::unique_ptr<AesCipher>> MakeCipher(const CryptoKey& key, bool encrypt) {
  return AesCipher::Create(key.cipher(), key.key().bytes(), key.key2().bytes(), encrypt);
}

// Completes `io` after SubmitIo (or a base callback) returned, with a base refusal's -errno.
void CompleteLater(BdevIo& io, int status) {
  Reactor::Current()->Defer([&io, status] { Bdev::CompleteIo(io, status); });
}

void OnBaseDone(void* arg, int status);

// Encrypts the next chunk of zero blocks of a write-zeroes and writes it.
void SubmitZeroChunk(CryptoIo& cio) {
  CryptoChannel& ch = *cio.channel;
  BdevIo& io = *cio.io;
  uint64_t blocks = std::min(cio.remaining, std::max<uint64_t>(1, kZeroChunkBytes / ch.block_size()));
  size_t bytes = blocks * ch.block_size();
  int rc = 0;
  if (!cio.Reserve(bytes)) {
    rc = -ENOMEM;
  } else if (!ch.Encrypt(nullptr, 0, cio.next_lba, blocks, cio.bounce)) {
    rc = -EIO;
  } else {
    cio.iov = {cio.bounce, bytes};
    uint64_t lba = cio.next_lba;
    cio.next_lba += blocks;
    cio.remaining -= blocks;
    rc = ch.base().Submit(IoType::kWrite, lba, blocks, &cio.iov, 1, &OnBaseDone, &cio);
  }
  if (rc != 0) {
    ch.Free(&cio);
    CompleteLater(io, rc);
  }
}

void OnBaseDone(void* arg, int status) {
  auto* cio = static_cast<CryptoIo*>(arg);
  BdevIo& io = *cio->io;
  CryptoChannel& ch = *cio->channel;
  if (status == 0 && io.type == IoType::kRead &&
      !ch.Decrypt(io.iovs, io.iovcnt, io.offset_blocks, io.num_blocks)) {
    status = -EIO;
  }
  if (status == 0 && io.type == IoType::kWriteZeroes && cio->remaining > 0) {
    SubmitZeroChunk(*cio);
    return;
  }
  // Back to the pool first: completing may release (and destroy) this channel.
  ch.Free(cio);
  Bdev::CompleteIo(io, status);
}

}  // namespace

Uuid CryptoBdevUuid(const Uuid& base_uuid) {
  uint8_t input[32];
  std::memcpy(input, kCryptoUuidNamespace.data(), 16);
  std::memcpy(input + 16, base_uuid.bytes().data(), 16);
  uint8_t digest[EVP_MAX_MD_SIZE];
  unsigned int digest_len = 0;
  if (EVP_Digest(input, sizeof(input), digest, &digest_len, EVP_sha1(), nullptr) != 1 || digest_len < 16) {
    return Uuid::Generate();  // OpenSSL without SHA-1: a random UUID is still a valid identity
  }
  std::array<uint8_t, 16> bytes;
  std::memcpy(bytes.data(), digest, 16);
  bytes[6] = static_cast<uint8_t>((bytes[6] & 0x0f) | 0x50);  // version 5
  bytes[8] = static_cast<uint8_t>((bytes[8] & 0x3f) | 0x80);  // RFC 4122 variant
  return Uuid(bytes);
}

absl::StatusOr<std::unique_ptr<CryptoBdev>> CryptoBdev::Create(BdevManager& manager, CryptoKeyStore& keys,
                                                               Options options) {
  if (options.key == nullptr) return ErrnoStatus(EINVAL, "crypto bdev needs a key");
  Bdev* base = manager.Find(options.base_bdev_name);
  if (base == nullptr) return ErrnoStatus(ENODEV, "base bdev " + options.base_bdev_name + " not found");
  if (base->block_size() % kAesBlockBytes != 0) return ErrnoStatus(EINVAL, "block size does not fit AES");
  // Fail here, on the control thread, rather than when a reactor first needs the cipher.
  if (!MakeCipher(*options.key, true).ok() || !MakeCipher(*options.key, false).ok()) {
    return ErrnoStatus(EINVAL, "OpenSSL refused crypto key " + options.key->name());
  }
  Params params{options.name, CryptoBdevUuid(base->uuid()), base->block_size(), base->num_blocks()};
  auto bdev = std::unique_ptr<CryptoBdev>(new CryptoBdev(std::move(params), manager, keys, std::move(options)));
  CryptoBdev* raw = bdev.get();
  ASSIGN_OR_RETURN(bdev->base_desc_, manager.Open(bdev->base_name_, [raw] { raw->OnBaseRemoved(); }));
  RETURN_IF_ERROR(base->Claim(kProductName));
  bdev->base_ = base;
  bdev->base_supports_write_ = base->SupportsIoType(IoType::kWrite);
  return bdev;
}

CryptoBdev::CryptoBdev(Params params, BdevManager& manager, CryptoKeyStore& keys, Options options)
    : Bdev(std::move(params)),
      manager_(manager),
      keys_(keys),
      base_name_(std::move(options.base_bdev_name)),
      key_(std::move(options.key)),
      owns_key_(options.owns_key) {}

CryptoBdev::~CryptoBdev() { ReleaseBase(); }

void CryptoBdev::ReleaseBase() {
  if (base_ != nullptr) base_->ReleaseClaim();  // set only once the claim was taken
  base_ = nullptr;
  base_desc_.reset();
}

void CryptoBdev::OnBaseRemoved() {
  // Not from inside the base's deletion: unregister from the control loop, unless this bdev is already
  // on its way out.
  BdevManager& manager = manager_;
  uint64_t id = this->id();
  std::string name = this->name();
  manager.control().Post([&manager, id, name] {
    Bdev* self = manager.Find(name);
    if (self == nullptr || self->id() != id) return;
    spdlog::info("crypto bdev {}: base bdev removed; removing it too", name);
    manager.Unregister(name, kProductName, [](absl::Status) {});
  });
}

void CryptoBdev::OnUnregistered() {
  ReleaseBase();
  std::string key_name = key_->name();
  key_.reset();
  if (!owns_key_) return;
  absl::Status destroyed = keys_.Destroy(key_name);
  if (!destroyed.ok()) {
    spdlog::warn("crypto bdev {}: its key {} is kept: {}", name(), key_name, StatusMessage(destroyed));
  }
}

bool CryptoBdev::SupportsIoType(IoType type) const {
  if (base_ == nullptr) return false;
  // Write-zeroes becomes encrypted zero blocks: the base only needs to take writes.
  if (type == IoType::kWriteZeroes) return base_supports_write_;
  return base_->SupportsIoType(type);
}

void CryptoBdev::AmendDescription(Json& description) const {
  // As SPDK's crypto bdev reports it: write-zeroes is served by emulation, never natively.
  description["supported_io_types"]["write_zeroes"] = false;
}

std::unique_ptr<ModuleChannel> CryptoBdev::CreateModuleChannel(Reactor&) {
  auto encrypt = MakeCipher(*key_, true);
  auto decrypt = MakeCipher(*key_, false);
  if (!encrypt.ok() || !decrypt.ok()) {
    // The same key built both ciphers at creation: OpenSSL failing now is not recoverable.
    spdlog::critical("crypto bdev {}: cannot set up the cipher on this reactor", name());
    std::abort();
  }
  return std::make_unique<CryptoChannel>(*base_, key_->cipher(), block_size(), std::move(encrypt).value(),
                                         std::move(decrypt).value());
}

void CryptoBdev::SubmitIo(ModuleChannel& channel, BdevIo& io) {
  auto& ch = static_cast<CryptoChannel&>(channel);
  CryptoIo* cio = ch.Alloc(io);
  int rc = 0;
  switch (io.type) {
    case IoType::kRead:
      rc = ch.base().Submit(IoType::kRead, io.offset_blocks, io.num_blocks, io.iovs, io.iovcnt, &OnBaseDone, cio);
      break;
    case IoType::kWrite: {
      size_t bytes = io.num_blocks * block_size();
      if (!cio->Reserve(bytes)) {
        rc = -ENOMEM;
      } else if (!ch.Encrypt(io.iovs, io.iovcnt, io.offset_blocks, io.num_blocks, cio->bounce)) {
        rc = -EIO;
      } else {
        cio->iov = {cio->bounce, bytes};
        rc = ch.base().Submit(IoType::kWrite, io.offset_blocks, io.num_blocks, &cio->iov, 1, &OnBaseDone, cio);
      }
      break;
    }
    case IoType::kWriteZeroes:
      cio->next_lba = io.offset_blocks;
      cio->remaining = io.num_blocks;
      SubmitZeroChunk(*cio);  // completes on its own, also on failure
      return;
    case IoType::kUnmap:
    case IoType::kFlush:
    case IoType::kReset:
      rc = ch.base().Submit(io.type, io.offset_blocks, io.num_blocks, nullptr, 0, &OnBaseDone, cio);
      break;
  }
  if (rc != 0) {
    ch.Free(cio);
    CompleteLater(io, rc);
  }
}

Json CryptoBdev::DriverSpecific() const {
  return Json{{"crypto", {{"base_bdev_name", base_name_}, {"name", name()}, {"key_name", key_->name()}}}};
}

Json CryptoBdev::ConfigEntry() const {
  return Json{{"method", "bdev_crypto_create"},
              {"params", {{"base_bdev_name", base_name_}, {"name", name()}, {"key_name", key_->name()}}}};
}

}  // namespace smad::tgt
