#include "agent/core/crypto_engine.h"

namespace smad::agent {
namespace {

class NopCryptoEngine : public CryptoEngine {
 public:
  const std::string& name() const override { return name_; }
  absl::Status Validate(const CryptoParams&) const override {
    return absl::InvalidArgumentError("Crypto is disabled");
  }
  absl::StatusOr<std::string> Setup(const std::string&, const std::string&, const CryptoParams&) override {
    return absl::InvalidArgumentError("Crypto is disabled");
  }
  absl::Status Verify(const std::string&, const std::string&, const CryptoParams*) override {
    return absl::OkStatus();
  }
  absl::Status Cleanup(const std::string&, const std::string&) override { return absl::OkStatus(); }

 private:
  const std::string name_ = "nop";
};

}  // namespace

CryptoEnginePtr MakeNopCryptoEngine() { return std::make_unique<NopCryptoEngine>(); }

}  // namespace smad::agent
