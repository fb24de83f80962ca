#pragma once

// Volume encryption engines (SMA's CryptoEngine): "nop" (the default; refuses crypto), "bdev_crypto"
// (an encrypting bdev stacked on the volume), and engines registered by plugins.

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "agent/spdk/spdk_client.h"

namespace smad::agent {

// The crypto parameters of a request. `key`/`key2` are secrets: never log them.
struct CryptoParams {
  std::string key;   // hex text, as SMA sends it (the ASCII bytes of the proto field)
  std::string key2;  // empty when not given
  int cipher = 0;    // sma.VolumeCryptoParameters.Cipher (open enum: any value may arrive)
  int tweak_mode = 0;
};

// Errors: InvalidArgument for parameters the engine refuses or that do not match; Internal for target
// failures (Unavailable/DeadlineExceeded when it cannot be reached).
// Thread safety: calls for different volumes may run concurrently.
class CryptoEngine {
 public:
  virtual ~CryptoEngine() = default;
  virtual const std::string& name() const = 0;
  // Called once at start with the config's crypto.params.
  virtual absl::Status Init(const Json& params) { return absl::OkStatus(); }
  // Checks the parameters of a new volume before anything is recorded or sent to the target (so a bad
  // key or cipher changes nothing). InvalidArgument naming the problem.
  virtual absl::Status Validate(const CryptoParams& params) const { return absl::OkStatus(); }
  // Sets up encryption of the volume whose bdev is `volume_bdev`; returns the bdev to expose instead.
  virtual absl::StatusOr<std::string> Setup(const std::string& volume_id, const std::string& volume_bdev,
                                            const CryptoParams& params) = 0;
  // Setup, giving the crypto bdev the name `name` chosen (and recorded) by the caller beforehand, so an
  // interrupted setup can be finished or undone. Engines that choose their own names return another.
  virtual absl::StatusOr<std::string> SetupNamed(const std::string& volume_id, const std::string& volume_bdev,
                                                 const CryptoParams& params, const std::string& name) {
    return Setup(volume_id, volume_bdev, params);
  }
  // Checks a request against a volume set up earlier: `params` null means the request has no crypto,
  // `crypto_bdev` empty means the volume has none.
  virtual absl::Status Verify(const std::string& volume_id, const std::string& crypto_bdev,
                              const CryptoParams* params) = 0;
  // Removes what Setup created; success when nothing is there.
  virtual absl::Status Cleanup(const std::string& volume_id, const std::string& crypto_bdev) = 0;
  // Re-creates the crypto bdev `crypto_bdev` (named by an earlier Setup) when the target lost it, e.g.
  // after a target restart; success when it is there. Unimplemented for engines that cannot.
  virtual absl::Status Restore(const std::string& volume_id, const std::string& volume_bdev,
                               const std::string& crypto_bdev, const CryptoParams& params) {
    return absl::UnimplementedError("crypto engine " + name() + " cannot restore crypto bdevs");
  }
};

using CryptoEnginePtr = std::unique_ptr<CryptoEngine>;

// The default engine: Setup fails with InvalidArgument "Crypto is disabled"; Verify and Cleanup succeed.
CryptoEnginePtr MakeNopCryptoEngine();

}  // namespace smad::agent
