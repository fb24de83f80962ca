#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "tgt/bdev/bdev.h"
#include "tgt/bdev/bdev_manager.h"
#include "tgt/crypto/crypto_keys.h"

namespace smad::tgt {

// bdev_crypto: encrypts every block on its way to a base bdev and decrypts it on the way back, with a
// named crypto key, exactly as SPDK's crypto vbdev with its software accel path lays data out on the base
// (see BlockIv): data written by one reads back under the other.
//
// - Same block size and count as the base; the base is claimed ("crypto") for the crypto bdev's life.
// - Writes are encrypted into a per-I/O bounce buffer (the caller's buffer is never modified), then
//   written to the base. Reads go to the base into the caller's buffers and are decrypted in place.
// - Write-zeroes is emulated, as SPDK's bdev layer does for a crypto bdev (which reports it unsupported):
//   encrypted zero blocks are written. Unmap, flush and reset pass through to the base.
// - The UUID is derived from the base's UUID as SPDK derives it (SHA-1 name-based, SPDK's crypto
//   namespace), so it is stable across restarts.
// - When the base is hot-removed the crypto bdev unregisters itself.
//
// Thread safety: control-thread state (descriptor, claim, key reference) as Bdev's. Each reactor's module
// channel owns its own cipher contexts and its base channel; the I/O path takes no locks.
class CryptoBdev : public Bdev {
 public:
  static constexpr const char* kProductName = "crypto";

  struct Options {
    std::string name;
    std::string base_bdev_name;
    std::shared_ptr<const CryptoKey> key;
    // The key was created for this bdev (bdev_crypto_create's legacy inline key): destroyed in `keys`
    // once the bdev is unregistered.
    bool owns_key = false;
  };

  // Opens and claims the base. Control thread. Errors (errno payload): ENODEV when the base does not
  // exist, EPERM when it is claimed, EINVAL when the key cannot drive OpenSSL or the block size does not
  // fit the cipher. On error nothing is left open or claimed. `manager` and `keys` must outlive the bdev.
  static absl::StatusOr<std::unique_ptr<CryptoBdev>> Create(BdevManager& manager, CryptoKeyStore& keys,
                                                            Options options);
  ~CryptoBdev() override;

  const char* product_name() const override { return kProductName; }
  bool SupportsIoType(IoType type) const override;
  std::unique_ptr<ModuleChannel> CreateModuleChannel(Reactor& reactor) override;
  void SubmitIo(ModuleChannel& channel, BdevIo& io) override;
  Json ConfigEntry() const override;
  Json DriverSpecific() const override;
  void AmendDescription(Json& description) const override;
  void OnUnregistered() override;

  const std::string& base_bdev_name() const { return base_name_; }
  const CryptoKey& key() const { return *key_; }

 private:
  CryptoBdev(Params params, BdevManager& manager, CryptoKeyStore& keys, Options options);
  void OnBaseRemoved();
  void ReleaseBase();

  BdevManager& manager_;
  CryptoKeyStore& keys_;
  std::string base_name_;
  std::shared_ptr<const CryptoKey> key_;
  bool owns_key_;
  std::unique_ptr<BdevDesc> base_desc_;  // control thread
  Bdev* base_ = nullptr;                 // valid while base_desc_ is open (the whole registered life)
  bool base_supports_write_ = false;
};

// The UUID SPDK gives a crypto bdev over a base with `base_uuid` (RFC 4122 version 5 in SPDK's crypto
// namespace, the base UUID's 16 bytes as the name).
Uuid CryptoBdevUuid(const Uuid& base_uuid);

}  // namespace smad::tgt
