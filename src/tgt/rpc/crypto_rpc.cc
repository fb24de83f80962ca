// SPDK's accel crypto key methods and its crypto bdev methods, with SPDK's decoding, result shapes and
// error codes (lib/accel/accel_rpc.c, module/bdev/crypto/vbdev_crypto_rpc.c). Key material never reaches
// a log or an error message; the copies these handlers make of hex keys are wiped after use.
#include <openssl/crypto.h>

#include "common/status.h"
#include "spdlog/spdlog.h"
#include "tgt/bdev/crypto_bdev.h"
#include "tgt/rpc/params.h"
#include "tgt/rpc/rpc.h"

namespace smad::tgt {
namespace {

using jsonrpc::Json;
using jsonrpc::Responder;

// bdev_crypto_create's legacy form without "cipher" (SPDK's BDEV_CRYPTO_DEFAULT_CIPHER).
constexpr const char* kLegacyDefaultCipher = "AES_CBC";
// SPDK writes the generated "<name>_<cipher>" key name into a buffer of 128 bytes.
constexpr size_t kLegacyKeyNameMax = 127;

// The values SPDK's accel_crypto_tweak_mode enum decoder accepts.
bool IsTweakModeName(const std::string& mode) {
  return mode == "SIMPLE_LBA" || mode == "JOIN_NEG_LBA_WITH_LBA" || mode == "INCR_512_FULL_LBA" ||
         mode == "INCR_512_UPPER_LBA";
}

void Wipe(std::string& secret) { OPENSSL_cleanse(secret.data(), secret.size()); }
void Wipe(std::optional<std::string>& secret) {
  if (secret) Wipe(*secret);
}
void Wipe(CryptoKeySpec& spec) {
  Wipe(spec.key);
  Wipe(spec.key2);
}

int Errno(const absl::Status& status) { return StatusErrno(status).value_or(EINVAL); }

void FailErrno(Responder& r, int err) { r.Fail(-err, ErrnoString(err)); }

void KeyCreate(RpcContext& ctx, const Json& params, Responder r) {
  ParamReader p(params, {"cipher", "key", "key2", "tweak_mode", "name"});
  CryptoKeySpec spec;
  spec.cipher = p.String("cipher", true);
  spec.key = p.String("key", true);
  spec.key2 = p.OptionalString("key2");
  std::optional<std::string> tweak_mode = p.OptionalString("tweak_mode");
  spec.name = p.String("name", true);
  // cipher and tweak_mode are enums in SPDK's schema: an unknown value fails decoding.
  bool decoded = p.ok() && ParseCipher(spec.cipher) && (!tweak_mode || IsTweakModeName(*tweak_mode));
  if (!decoded) {
    Wipe(spec);
    return r.Fail(jsonrpc::kParseError, "spdk_json_decode_object failed");
  }
  // The enum decoder leaves an absent tweak_mode at its first value, so SPDK records it either way.
  spec.tweak_mode = tweak_mode.value_or("SIMPLE_LBA");
  absl::Status status = ctx.keys->Create(spec);
  Wipe(spec);
  if (!status.ok()) {
    spdlog::warn("accel_crypto_key_create: {}", StatusMessage(status));
    return r.Fail(jsonrpc::kInvalidParams, "failed to create DEK, rc " + std::to_string(-Errno(status)));
  }
  r.Reply(true);
}

void KeysGet(RpcContext& ctx, const Json& params, Responder r) {
  ParamReader p(params, {"key_name"});
  std::optional<std::string> name = p.OptionalString("key_name");
  if (!p.ok()) return r.Fail(jsonrpc::kParseError, "spdk_json_decode_object failed");
  Json list = Json::array();
  if (name) {
    auto key = ctx.keys->Find(*name);
    if (key == nullptr) return r.Fail(jsonrpc::kInvalidParams, "key was not found");
    list.push_back(key->Describe());
  } else {
    for (const auto& key : ctx.keys->List()) list.push_back(key->Describe());
  }
  r.Reply(std::move(list));
}

void KeyDestroy(RpcContext& ctx, const Json& params, Responder r) {
  ParamReader p(params, {"key_name"});
  std::string name = p.String("key_name", true);
  if (!p.ok()) return r.Fail(jsonrpc::kParseError, "spdk_json_decode_object failed");
  if (ctx.keys->Find(name) == nullptr) return r.Fail(jsonrpc::kInvalidParams, "No key object found");
  // SPDK would free a key a crypto bdev still encrypts with; smad-tgt refuses with EBUSY instead.
  absl::Status status = ctx.keys->Destroy(name);
  if (!status.ok()) {
    return r.Fail(jsonrpc::kInvalidParams, "Failed to destroy key, rc " + std::to_string(-Errno(status)));
  }
  r.Reply(true);
}

struct CryptoCreateRequest {
  std::string base_bdev_name;
  std::string name;
  std::optional<std::string> key_name;
  std::optional<std::string> cipher;
  std::optional<std::string> key;
  std::optional<std::string> key2;
  ~CryptoCreateRequest() {
    Wipe(key);
    Wipe(key2);
  }
};

// Finds the key bdev_crypto_create names, or (legacy form) the "<name>_<cipher>" key, creating it from
// the inline key when absent. `created` tells whether this call created it.
std::shared_ptr<const CryptoKey> ResolveKey(RpcContext& ctx, const CryptoCreateRequest& req, bool& created) {
  created = false;
  if (req.key_name) return ctx.keys->Find(*req.key_name);
  CryptoKeySpec spec;
  spec.cipher = req.cipher.value_or(kLegacyDefaultCipher);
  spec.name = (req.name + "_" + spec.cipher).substr(0, kLegacyKeyNameMax);
  // A replayed configuration may already hold the generated key.
  if (auto existing = ctx.keys->Find(spec.name)) return existing;
  spec.key = req.key.value_or("");
  spec.key2 = req.key2;
  absl::Status status = ctx.keys->Create(spec);
  Wipe(spec);
  if (!status.ok()) {
    spdlog::warn("bdev_crypto_create {}: {}", req.name, StatusMessage(status));
    return nullptr;
  }
  created = true;
  return ctx.keys->Find(spec.name);
}

void CryptoCreate(RpcContext& ctx, const Json& params, Responder r) {
  ParamReader p(params, {"base_bdev_name", "name", "crypto_pmd", "key", "cipher", "key2", "key_name"});
  CryptoCreateRequest req;
  req.base_bdev_name = p.String("base_bdev_name", true);
  req.name = p.String("name", true);
  p.OptionalString("crypto_pmd");  // obsolete in SPDK too: accepted and ignored
  req.key = p.OptionalString("key");
  req.cipher = p.OptionalString("cipher");
  req.key2 = p.OptionalString("key2");
  req.key_name = p.OptionalString("key_name");
  if (!p.ok()) return r.Fail(jsonrpc::kParseError, "Failed to decode crypto disk create parameters.");

  bool created_key = false;
  std::shared_ptr<const CryptoKey> key = ResolveKey(ctx, req, created_key);
  if (key == nullptr) {
    if (req.key_name) return r.Fail(jsonrpc::kInvalidParams, "Key was not found");
    return r.Fail(jsonrpc::kInternalError, "No key was found");
  }
  std::string key_name = key->name();
  // From here on a failure must not leave the key this call created behind.
  auto fail = [&](int err) {
    if (created_key) {
      key.reset();
      ctx.keys->Destroy(key_name).IgnoreError();
    }
    FailErrno(r, err);
  };
  Bdev* existing = ctx.bdevs.Find(req.name);
  if (existing != nullptr && std::string(existing->product_name()) == CryptoBdev::kProductName) {
    return fail(EEXIST);
  }
  auto bdev = CryptoBdev::Create(ctx.bdevs, *ctx.keys,
                                 {.name = req.name, .base_bdev_name = req.base_bdev_name, .key = key,
                                  .owns_key = created_key});
  if (!bdev.ok()) {
    spdlog::warn("bdev_crypto_create {}: {}", req.name, StatusMessage(bdev.status()));
    return fail(Errno(bdev.status()));
  }
  // SPDK reports any registration failure (a name or UUID taken by another bdev) as EINVAL.
  if (!ctx.bdevs.Register(std::move(bdev).value()).ok()) return fail(EINVAL);
  r.Reply(req.name);
}

void CryptoDelete(RpcContext& ctx, const Json& params, Responder r) {
  ParamReader p(params, {"name"});
  std::string name = p.String("name", true);
  if (!p.ok()) return r.Fail(jsonrpc::kInvalidParams, "Invalid parameters");
  auto shared = std::make_shared<Responder>(std::move(r));
  // The bdev destroys a key it created itself (legacy form) as it goes.
  ctx.bdevs.Unregister(name, CryptoBdev::kProductName, [shared](absl::Status status) {
    if (!status.ok()) return FailErrno(*shared, Errno(status));
    shared->Reply(true);
  });
}

}  // namespace

void RegisterCryptoRpcs(RpcContext& ctx) {
  if (ctx.keys == nullptr) {
    spdlog::critical("RegisterCryptoRpcs: no key store");
    std::abort();
  }
  auto& d = ctx.dispatcher;
  d.Register("accel_crypto_key_create",
             [&ctx](const Json& params, Responder r) { KeyCreate(ctx, params, std::move(r)); });
  d.Register("accel_crypto_keys_get", [&ctx](const Json& params, Responder r) { KeysGet(ctx, params, std::move(r)); });
  d.Register("accel_crypto_key_destroy",
             [&ctx](const Json& params, Responder r) { KeyDestroy(ctx, params, std::move(r)); });
  d.Register("bdev_crypto_create",
             [&ctx](const Json& params, Responder r) { CryptoCreate(ctx, params, std::move(r)); });
  d.Register("bdev_crypto_delete",
             [&ctx](const Json& params, Responder r) { CryptoDelete(ctx, params, std::move(r)); });
}

}  // namespace smad::tgt
