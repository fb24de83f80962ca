// Encryption in smad-tgt: AES known-answer vectors, SPDK's IV layout, the key store's rules and key
// wiping, and the crypto bdev on a malloc bdev (ciphertext on the base byte for byte, scatter lists,
// write-zeroes, hot-remove, claims).
#include <openssl/evp.h>

#include <cstring>
#include <future>
#include <optional>
#include <utility>
#include <string>
#include <vector>

#include "common/status.h"
#include "gtest/gtest.h"
#include "support/bdev_layer_fixture.h"
#include "tgt/bdev/bdev_manager.h"
#include "tgt/bdev/crypto_bdev.h"
#include "tgt/bdev/memory_bdevs.h"
#include "tgt/crypto/aes_cipher.h"
#include "tgt/crypto/crypto_keys.h"

namespace smad::tgt {
namespace {

using Bytes = std::vector<uint8_t>;

Bytes FromHex(const std::string& hex) {
  Bytes out(hex.size() / 2);
  for (size_t i = 0; i < out.size(); ++i) out[i] = static_cast<uint8_t>(std::stoi(hex.substr(2 * i, 2), nullptr, 16));
  return out;
}

CipherIv IvFromHex(const std::string& hex) {
  CipherIv iv{};
  Bytes b = FromHex(hex);
  std::copy(b.begin(), b.end(), iv.begin());
  return iv;
}

// Runs AesCipher both ways over one data unit and checks the known answer.
void ExpectKnownAnswer(Cipher cipher, const std::string& key, const std::string& key2, const std::string& iv,
                       const Bytes& plain, const std::string& expected) {
  Bytes k = FromHex(key), k2 = FromHex(key2);
  auto enc = AesCipher::Create(cipher, k, k2, true);
  auto dec = AesCipher::Create(cipher, k, k2, false);
  ASSERT_TRUE(enc.ok() && dec.ok());
  Bytes out(plain.size());
  ASSERT_TRUE((*enc)->Process(IvFromHex(iv), plain.data(), out.data(), out.size()));
  EXPECT_EQ(out, FromHex(expected));
  ASSERT_TRUE((*dec)->Process(IvFromHex(iv), out.data(), out.data(), out.size()));  // in place
  EXPECT_EQ(out, plain);
}

// NIST SP 800-38A, F.2.1 and F.2.5.
TEST(AesCipherTest, CbcKnownAnswers) {
  Bytes plain = FromHex(
      "6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e5130c81c46a35ce411e5fbc1191a0a52ef"
      "f69f2445df4f9b17ad2b417be66c3710");
  ExpectKnownAnswer(Cipher::kAesCbc, "2b7e151628aed2a6abf7158809cf4f3c", "", "000102030405060708090a0b0c0d0e0f",
                    plain,
                    "7649abac8119b246cee98e9b12e9197d5086cb9b507219ee95db113a917678b273bed6b8e3c1743b7116e69e22229516"
                    "3ff1caa1681fac09120eca307586e1a7");
  ExpectKnownAnswer(Cipher::kAesCbc, "603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4", "",
                    "000102030405060708090a0b0c0d0e0f", plain,
                    "f58c4c04d6e5f1ba779eabfb5f7bfbd69cfc4e967edb808d679f777bc6702c7d39f23369a9d9bacfa530e26304231461"
                    "b2eb05e2c39be9fcda6c19078c6a9d1b");
}

// IEEE 1619-2007 XTS-AES vectors 2, 3 (XTS-AES-128) and 10 (XTS-AES-256, a 512-byte data unit).
TEST(AesCipherTest, XtsKnownAnswers) {
  Bytes fours(32, 0x44);
  ExpectKnownAnswer(Cipher::kAesXts, "11111111111111111111111111111111", "22222222222222222222222222222222",
                    "33333333330000000000000000000000", fours,
                    "c454185e6a16936e39334038acef838bfb186fff7480adc4289382ecd6d394f0");
  ExpectKnownAnswer(Cipher::kAesXts, "fffefdfcfbfaf9f8f7f6f5f4f3f2f1f0", "22222222222222222222222222222222",
                    "33333333330000000000000000000000", fours,
                    "af85336b597afc1a900b2eb21ec949d292df4c047e0b21532186a5971a227a89");
  Bytes counting(512);
  for (size_t i = 0; i < counting.size(); ++i) counting[i] = static_cast<uint8_t>(i);
  ExpectKnownAnswer(
      Cipher::kAesXts, "2718281828459045235360287471352662497757247093699959574966967627",
      "3141592653589793238462643383279502884197169399375105820974944592", "ff000000000000000000000000000000",
      counting,
      "1c3b3a102f770386e4836c99e370cf9bea00803f5e482357a4ae12d414a3e63b5d31e276f8fe4a8d66b317f9ac683f44"
      "680a86ac35adfc3345befecb4bb188fd5776926c49a3095eb108fd1098baec70aaa66999a72a82f27d848b21d4a741b0"
      "c5cd4d5fff9dac89aeba122961d03a757123e9870f8acf1000020887891429ca2a3e7a7d7df7b10355165c8b9a6d0a7d"
      "e8b062c4500dc4cd120c0f7418dae3d0b5781c34803fa75421c790dfe1de1834f280d7667b327f6c8cd7557e12ac3a0f"
      "93ec05c52e0493ef31a12d3d9260f79a289d6a379bc70c50841473d1a8cc81ec583e9645e07b8d9670655ba5bbcfecc6"
      "dc3966380ad8fecb17b6ba02469a020a84e18e8f84252070c13e9f1f289be54fbc481457778f616015e1327a02b140f1"
      "505eb309326d68378f8374595c849d84f4c333ec4423885143cb47bd71c5edae9be69a2ffeceb1bec9de244fbe15992b"
      "11b77c040f12bd8f6a975a44a0f90c29a9abc3d4d893927284c58754cce294529f8614dcd2aba991925fedc4ae74ffac"
      "6e333b93eb4aff0479da9a410e4450e0dd7ae4c6e2910900575da401fc07059f645e8b7e9bfdef33943054ff84011493"
      "c27b3429eaedb4ed5376441a77ed43851ad77f16f541dfd269d50d6a5f14fb0aab1cbb4c1550be97f7ab4066193c4caa"
      "773dad38014bd2092fa755c824bb5e54c4f36ffda9fcea70b9c6e693e148c151");
}

TEST(AesCipherTest, RefusesBadSizesAndLengths) {
  Bytes k16(16, 1), k24(24, 1), k16b(16, 2);
  EXPECT_FALSE(AesCipher::Create(Cipher::kAesCbc, k24, {}, true).ok());
  EXPECT_FALSE(AesCipher::Create(Cipher::kAesCbc, k16, k16b, true).ok());
  EXPECT_FALSE(AesCipher::Create(Cipher::kAesXts, k16, {}, true).ok());
  auto cbc = AesCipher::Create(Cipher::kAesCbc, k16, {}, true);
  ASSERT_TRUE(cbc.ok());
  uint8_t buf[32] = {};
  EXPECT_FALSE((*cbc)->Process(CipherIv{}, buf, buf, 15));
  EXPECT_FALSE((*cbc)->Process(CipherIv{}, buf, buf, 0));
}

// accel_sw: iv[0] = 0, iv[1] = LBA (two little-endian 64-bit words). DPDK cryptodev (the only CBC
// implementation): the LBA in the first 8 bytes.
TEST(AesCipherTest, SpdkIvLayout) {
  uint64_t lba = 0x0123456789abcdefULL;
  CipherIv xts = BlockIv(Cipher::kAesXts, lba);
  CipherIv cbc = BlockIv(Cipher::kAesCbc, lba);
  EXPECT_EQ(xts, IvFromHex("0000000000000000efcdab8967452301"));
  EXPECT_EQ(cbc, IvFromHex("efcdab89674523010000000000000000"));
  EXPECT_EQ(ParseCipher("AES_XTS"), Cipher::kAesXts);
  EXPECT_EQ(ParseCipher("aes_xts"), std::nullopt);
  EXPECT_STREQ(CipherName(Cipher::kAesCbc), "AES_CBC");
}

TEST(KeyBytesTest, DecodesAndKeepsTheDigitsCase) {
  KeyBytes key;
  ASSERT_TRUE(key.DecodeHex("00aAbBcCdDeEfF0123456789AbCdEf01"));
  EXPECT_EQ(key.size(), 16u);
  EXPECT_EQ(key.bytes()[1], 0xaa);
  EXPECT_EQ(key.ToHex(), "00aAbBcCdDeEfF0123456789AbCdEf01");
  EXPECT_FALSE(key.DecodeHex("0g"));
  EXPECT_TRUE(key.empty());
  EXPECT_FALSE(key.DecodeHex("abc"));
  EXPECT_FALSE(key.DecodeHex(std::string(66, 'a')));  // 33 bytes
  EXPECT_TRUE(key.DecodeHex(std::string(64, 'a')));
}

// Destroying key material leaves none of it in the memory that held it.
TEST(KeyBytesTest, WipedOnDestruction) {
  const std::string hex = "8f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1ff";
  Bytes raw = FromHex(hex);
  std::optional<KeyBytes> holder;
  holder.emplace();
  ASSERT_TRUE(holder->DecodeHex(hex));
  const auto* storage = reinterpret_cast<const unsigned char*>(&holder);
  auto contains_key = [&] {
    return std::search(storage, storage + sizeof(holder), raw.begin(), raw.begin() + 8) != storage + sizeof(holder);
  };
  ASSERT_TRUE(contains_key());
  holder.reset();
  EXPECT_FALSE(contains_key());
}

CryptoKeySpec Spec(std::string name, std::string cipher, std::string key, std::optional<std::string> key2 = {},
                   std::optional<std::string> tweak = {}) {
  return CryptoKeySpec{std::move(name), std::move(cipher), std::move(key), std::move(key2), std::move(tweak)};
}

const std::string kKey128 = "00112233445566778899aabbccddeeff";
const std::string kKey128b = "ffeeddccbbaa99887766554433221100";
const std::string kKey256 = "00112233445566778899aabbccddeeff0123456789abcdef0123456789abcdef";
const std::string kKey256b = kKey128b + kKey128b;

TEST(CryptoKeyTest, EnforcesSpdkRules) {
  auto invalid = [](const CryptoKeySpec& spec) {
    auto key = CryptoKey::Create(spec);
    return !key.ok() && StatusErrno(key.status()) == EINVAL;
  };
  EXPECT_TRUE(CryptoKey::Create(Spec("a", "AES_CBC", kKey128)).ok());
  EXPECT_TRUE(CryptoKey::Create(Spec("a", "AES_CBC", kKey256)).ok());
  EXPECT_TRUE(CryptoKey::Create(Spec("a", "AES_XTS", kKey128, kKey128b, "SIMPLE_LBA")).ok());
  EXPECT_TRUE(CryptoKey::Create(Spec("a", "AES_XTS", kKey256, kKey256b)).ok());
  EXPECT_TRUE(invalid(Spec("a", "AES_GCM", kKey128)));
  EXPECT_TRUE(invalid(Spec("a", "AES_CBC", "")));
  EXPECT_TRUE(invalid(Spec("a", "AES_CBC", "0011223344556677")));          // 64 bits
  EXPECT_TRUE(invalid(Spec("a", "AES_CBC", kKey128 + "0011223344556677")));  // 192 bits
  EXPECT_TRUE(invalid(Spec("a", "AES_CBC", kKey128.substr(1))));            // odd length
  EXPECT_TRUE(invalid(Spec("a", "AES_CBC", "zz" + kKey128.substr(2))));
  EXPECT_TRUE(invalid(Spec("a", "AES_CBC", kKey128, kKey128b)));            // CBC takes no key2
  EXPECT_TRUE(invalid(Spec("a", "AES_CBC", kKey128, "")));
  EXPECT_TRUE(invalid(Spec("a", "AES_XTS", kKey128)));                       // key2 missing
  EXPECT_TRUE(invalid(Spec("a", "AES_XTS", kKey128, kKey256)));              // sizes differ
  EXPECT_TRUE(invalid(Spec("a", "AES_XTS", kKey128, kKey128)));              // identical
  EXPECT_TRUE(invalid(Spec("a", "AES_XTS", kKey128, "00112233445566778899AABBCCDDEEFF")));  // same bytes
  EXPECT_TRUE(invalid(Spec("a", "AES_XTS", kKey128, kKey128b, "INCR_512_FULL_LBA")));
}

TEST(CryptoKeyTest, ErrorsNeverCarryKeyMaterial) {
  for (const auto& spec : {Spec("k", "AES_XTS", kKey128, kKey128), Spec("k", "AES_CBC", kKey128, kKey128b),
                           Spec("k", "AES_CBC", "zz" + kKey128)}) {
    auto key = CryptoKey::Create(spec);
    ASSERT_FALSE(key.ok());
    EXPECT_EQ(StatusMessage(key.status()).find(kKey128.substr(2, 8)), std::string::npos);
  }
}

TEST(CryptoKeyStoreTest, CreateFindDestroyAndShapes) {
  CryptoKeyStore store;
  ASSERT_TRUE(store.Create(Spec("k1", "AES_XTS", kKey128, kKey128b, "SIMPLE_LBA")).ok());
  ASSERT_TRUE(store.Create(Spec("k2", "AES_CBC", kKey128)).ok());
  EXPECT_EQ(StatusErrno(store.Create(Spec("k1", "AES_CBC", kKey128))), EEXIST);
  EXPECT_EQ(StatusErrno(store.Create(Spec("k1", "AES_CBC", "bad"))), EINVAL) << "validation comes first";
  EXPECT_EQ(store.Find("k1")->Describe(),
            nlohmann::json({{"name", "k1"}, {"cipher", "AES_XTS"}, {"key", kKey128}, {"key2", kKey128b},
                            {"tweak_mode", "SIMPLE_LBA"}}));
  EXPECT_EQ(store.Find("k2")->Describe(), nlohmann::json({{"name", "k2"}, {"cipher", "AES_CBC"}, {"key", kKey128}}));
  nlohmann::json config = store.ConfigEntries();
  ASSERT_EQ(config.size(), 2u);
  EXPECT_EQ(config[0]["method"], "accel_crypto_key_create");
  EXPECT_EQ(config[1]["params"]["name"], "k2");

  auto held = store.Find("k1");
  EXPECT_EQ(StatusErrno(store.Destroy("k1")), EBUSY);
  held.reset();
  EXPECT_TRUE(store.Destroy("k1").ok());
  EXPECT_EQ(StatusErrno(store.Destroy("k1")), ENOENT);
  EXPECT_EQ(store.Find("k1"), nullptr);
  EXPECT_EQ(store.List().size(), 1u);
}

TEST(CryptoBdevUuidTest, DerivedLikeSpdk) {
  // Version 5, RFC 4122 variant, deterministic, different per base.
  Uuid base = Uuid::Parse("7b2b4a6e-0c1d-4c53-9d0a-3f1e2a9b8c01").value();
  Uuid a = CryptoBdevUuid(base);
  EXPECT_EQ(a, CryptoBdevUuid(base));
  EXPECT_NE(a, CryptoBdevUuid(Uuid::Parse("7b2b4a6e-0c1d-4c53-9d0a-3f1e2a9b8c02").value()));
  EXPECT_EQ(a.bytes()[6] >> 4, 5);
  EXPECT_EQ(a.bytes()[8] & 0xc0, 0x80);
}

// The reference the crypto bdev must match: plain OpenSSL, with the IV written out byte by byte.
Bytes ReferenceCiphertext(Cipher cipher, const Bytes& key, const Bytes& key2, uint64_t first_lba,
                          uint32_t block_size, const Bytes& plain) {
  Bytes joined = key;
  joined.insert(joined.end(), key2.begin(), key2.end());
  const EVP_CIPHER* evp = cipher == Cipher::kAesCbc ? (key.size() == 16 ? EVP_aes_128_cbc() : EVP_aes_256_cbc())
                                                    : (key.size() == 16 ? EVP_aes_128_xts() : EVP_aes_256_xts());
  Bytes out(plain.size());
  EVP_CIPHER_CTX* ctx = EVP_CIPHER_CTX_new();
  for (size_t off = 0; off < plain.size(); off += block_size) {
    uint64_t lba = first_lba + off / block_size;
    uint8_t iv[16] = {};
    for (int i = 0; i < 8; ++i) iv[(cipher == Cipher::kAesXts ? 8 : 0) + i] = static_cast<uint8_t>(lba >> (8 * i));
    int len = 0;
    EXPECT_EQ(EVP_EncryptInit_ex(ctx, evp, nullptr, joined.data(), iv), 1);
    EVP_CIPHER_CTX_set_padding(ctx, 0);
    EXPECT_EQ(EVP_EncryptUpdate(ctx, out.data() + off, &len, plain.data() + off, static_cast<int>(block_size)), 1);
    EXPECT_EQ(static_cast<uint32_t>(len), block_size);
  }
  EVP_CIPHER_CTX_free(ctx);
  return out;
}

// The bdev layer on real reactors with a key store, and I/O helpers taking scatter lists.
class CryptoBdevTest : public testing::BdevLayerTest {
 protected:
  // Runs `fn` on the control reactor and returns its result.
  template <typename F>
  decltype(std::declval<F>()()) Control(F fn) {
    std::packaged_task<decltype(fn())()> task(std::move(fn));
    auto result = task.get_future();
    OnControl([&task] { task(); });
    return result.get();
  }

  void AddMalloc(const std::string& name, uint64_t blocks, uint32_t block_size) {
    auto bdev = MallocBdev::Create({name, Uuid(), block_size, blocks});
    ASSERT_TRUE(bdev.ok());
    absl::Status status = Control([&] { return manager_->Register(std::move(bdev).value()); });
    ASSERT_TRUE(status.ok()) << status;
  }
  absl::Status AddKey(const CryptoKeySpec& spec) {
    return Control([&] { return keys_.Create(spec); });
  }
  absl::Status AddCrypto(const std::string& name, const std::string& base, const std::string& key_name,
                         bool owns_key = false) {
    return Control([&]() -> absl::Status {
      auto bdev = CryptoBdev::Create(*manager_, keys_, {name, base, keys_.Find(key_name), owns_key});
      if (!bdev.ok()) return bdev.status();
      return manager_->Register(std::move(bdev).value());
    });
  }
  Bdev* Find(const std::string& name) {
    return Control([&] { return manager_->Find(name); });
  }
  absl::Status Delete(const std::string& name, const char* product) {
    std::promise<absl::Status> result;
    control_.Post([&] { manager_->Unregister(name, product, [&](absl::Status s) { result.set_value(s); }); });
    return result.get_future().get();
  }

  // One I/O over `iovs` on data reactor `r`; returns its status.
  int Io(size_t r, Bdev* bdev, IoType type, uint64_t lba, uint64_t blocks, std::vector<iovec> iovs) {
    std::promise<int> result;
    reactors_.reactor(r).Post([&] {
      BdevChannel* channel = bdev->AcquireChannel();
      struct Done {
        std::promise<int>* result;
        Bdev* bdev;
        BdevChannel* channel;
      };
      auto* done = new Done{&result, bdev, channel};
      auto finish = [](void* arg, int status) {
        auto* d = static_cast<Done*>(arg);
        d->bdev->ReleaseChannel(d->channel);
        d->result->set_value(status);
        delete d;
      };
      int rc = channel->Submit(type, lba, blocks, iovs.empty() ? nullptr : iovs.data(), static_cast<int>(iovs.size()),
                               finish, done);
      if (rc != 0) finish(done, rc);
    });
    return result.get_future().get();
  }
  int Io(size_t r, Bdev* bdev, IoType type, uint64_t lba, Bytes& buf) {
    return Io(r, bdev, type, lba, buf.size() / bdev->block_size(), {{buf.data(), buf.size()}});
  }

  CryptoKeyStore keys_;  // the manager is gone (TearDown) before it
};

Bytes Pattern(size_t size, uint8_t seed) {
  Bytes b(size);
  for (size_t i = 0; i < size; ++i) b[i] = static_cast<uint8_t>(i * 31 + seed + i / 512);
  return b;
}

struct CipherCase {
  Cipher cipher;
  std::string key, key2;
  uint32_t block_size;
};

class CryptoDataPathTest : public CryptoBdevTest, public ::testing::WithParamInterface<CipherCase> {};

TEST_P(CryptoDataPathTest, CiphertextOnBaseMatchesSpdkLayout) {
  const CipherCase& c = GetParam();
  const uint32_t bs = c.block_size;
  AddMalloc("base", 64, bs);
  std::optional<std::string> key2;
  if (!c.key2.empty()) key2 = c.key2;
  ASSERT_TRUE(AddKey(Spec("key", CipherName(c.cipher), c.key, key2)).ok());
  ASSERT_TRUE(AddCrypto("crypt", "base", "key").ok());
  Bdev* crypt = Find("crypt");
  Bdev* base = Find("base");
  ASSERT_NE(crypt, nullptr);
  EXPECT_EQ(crypt->block_size(), bs);
  EXPECT_EQ(crypt->num_blocks(), 64u);
  EXPECT_EQ(crypt->uuid(), CryptoBdevUuid(base->uuid()));

  // Four blocks at LBA 5 from a scatter list whose pieces split blocks at odd places.
  Bytes plain = Pattern(4 * bs, 7);
  std::vector<iovec> pieces = {{plain.data(), 100}, {plain.data() + 100, bs - 100 + 16},
                               {plain.data() + bs + 16, 2 * bs}, {plain.data() + 3 * bs + 16, bs - 16}};
  Bytes untouched = plain;
  ASSERT_EQ(Io(0, crypt, IoType::kWrite, 5, 4, pieces), 0);
  EXPECT_EQ(plain, untouched) << "the caller's buffer must not be encrypted in place";

  Bytes on_base(4 * bs);
  ASSERT_EQ(Io(1, base, IoType::kRead, 5, on_base), 0);
  EXPECT_EQ(on_base, ReferenceCiphertext(c.cipher, FromHex(c.key), FromHex(c.key2), 5, bs, plain));

  // Read back through the crypto bdev, on the other reactor, into another odd scatter list.
  Bytes back(4 * bs, 0);
  std::vector<iovec> out = {{back.data(), 48}, {back.data() + 48, 3 * bs}, {back.data() + 3 * bs + 48, bs - 48}};
  ASSERT_EQ(Io(1, crypt, IoType::kRead, 5, 4, out), 0);
  EXPECT_EQ(back, plain);
  Bytes single(bs);
  ASSERT_EQ(Io(0, crypt, IoType::kRead, 7, single), 0);
  EXPECT_TRUE(std::equal(single.begin(), single.end(), plain.begin() + 2 * bs));
}

INSTANTIATE_TEST_SUITE_P(
    Ciphers, CryptoDataPathTest,
    ::testing::Values(CipherCase{Cipher::kAesXts, kKey128, kKey128b, 512},
                      CipherCase{Cipher::kAesXts, kKey256, kKey256b, 4096},
                      CipherCase{Cipher::kAesCbc, kKey128, "", 512}, CipherCase{Cipher::kAesCbc, kKey256, "", 4096}));

TEST_F(CryptoBdevTest, WriteZeroesWritesEncryptedZeroes) {
  AddMalloc("base", 4096, 512);
  ASSERT_TRUE(AddKey(Spec("key", "AES_XTS", kKey128, kKey128b)).ok());
  ASSERT_TRUE(AddCrypto("crypt", "base", "key").ok());
  Bdev* crypt = Find("crypt");
  Bdev* base = Find("base");
  EXPECT_TRUE(crypt->SupportsIoType(IoType::kWriteZeroes));
  EXPECT_EQ(Control([&] { return crypt->Describe(); })["supported_io_types"]["write_zeroes"], false);
  Bytes data = Pattern(4096 * 512, 1);
  ASSERT_EQ(Io(0, crypt, IoType::kWrite, 0, data), 0);
  // More than one emulation chunk (1 MiB = 2048 blocks of 512 bytes).
  ASSERT_EQ(Io(0, crypt, IoType::kWriteZeroes, 10, 3000, {}), 0);
  Bytes back(4096 * 512);
  ASSERT_EQ(Io(1, crypt, IoType::kRead, 0, back), 0);
  Bytes expected = data;
  std::fill(expected.begin() + 10 * 512, expected.begin() + 3010 * 512, 0);
  EXPECT_EQ(back, expected);
  Bytes raw(512);
  ASSERT_EQ(Io(1, base, IoType::kRead, 20, raw), 0);
  EXPECT_EQ(raw, ReferenceCiphertext(Cipher::kAesXts, FromHex(kKey128), FromHex(kKey128b), 20, 512, Bytes(512)));
  // Flush and unmap pass through (an unmapped block reads back as decrypted zeroes, as on SPDK).
  EXPECT_EQ(Io(0, crypt, IoType::kFlush, 0, 0, {}), 0);
  EXPECT_EQ(Io(0, crypt, IoType::kUnmap, 0, 1, {}), 0);
  ASSERT_EQ(Io(1, base, IoType::kRead, 0, raw), 0);
  EXPECT_EQ(raw, Bytes(512));
}

TEST_F(CryptoBdevTest, ClaimsTheBaseAndDescribesItselfLikeSpdk) {
  AddMalloc("base", 16, 512);
  ASSERT_TRUE(AddKey(Spec("key", "AES_CBC", kKey128)).ok());
  ASSERT_TRUE(AddCrypto("crypt", "base", "key").ok());
  EXPECT_EQ(StatusErrno(AddCrypto("crypt2", "base", "key")), EPERM) << "base already claimed";
  EXPECT_EQ(StatusErrno(AddCrypto("crypt3", "nope", "key")), ENODEV);
  nlohmann::json base = Control([&] { return manager_->Find("base")->Describe(); });
  EXPECT_EQ(base["claimed"], true);
  EXPECT_EQ(base["claimed_by"], "crypto");
  nlohmann::json crypt = Control([&] { return manager_->Find("crypt")->Describe(); });
  EXPECT_EQ(crypt["product_name"], "crypto");
  EXPECT_EQ(crypt["driver_specific"],
            nlohmann::json({{"crypto", {{"base_bdev_name", "base"}, {"name", "crypt"}, {"key_name", "key"}}}}));
  EXPECT_EQ(Control([&] { return manager_->Find("crypt")->ConfigEntry(); }),
            nlohmann::json({{"method", "bdev_crypto_create"},
                            {"params", {{"base_bdev_name", "base"}, {"name", "crypt"}, {"key_name", "key"}}}}));
  EXPECT_EQ(StatusErrno(Control([&] { return keys_.Destroy("key"); })), EBUSY);

  ASSERT_TRUE(Delete("crypt", CryptoBdev::kProductName).ok());
  EXPECT_EQ(Control([&] { return manager_->Find("base")->claimed(); }), false);
  EXPECT_TRUE(Control([&] { return keys_.Destroy("key"); }).ok()) << "no longer in use";
}

TEST_F(CryptoBdevTest, BaseHotRemoveRemovesTheCryptoBdevAndItsOwnKey) {
  AddMalloc("base", 16, 512);
  ASSERT_TRUE(AddKey(Spec("crypt_AES_CBC", "AES_CBC", kKey128)).ok());
  ASSERT_TRUE(AddCrypto("crypt", "base", "crypt_AES_CBC", /*owns_key=*/true).ok());
  Bdev* crypt = Find("crypt");
  Bytes buf(512);
  ASSERT_EQ(Io(0, crypt, IoType::kWrite, 0, buf), 0);  // the crypto bdev has had channels on a reactor
  ASSERT_TRUE(Delete("base", "Malloc disk").ok());
  EXPECT_EQ(Find("crypt"), nullptr);
  EXPECT_EQ(Find("base"), nullptr);
  EXPECT_EQ(Control([&] { return keys_.Find("crypt_AES_CBC"); }), nullptr) << "an owned key goes with its bdev";
}

TEST_F(CryptoBdevTest, FailedRegistrationLeavesNoClaim) {
  AddMalloc("base", 16, 512);
  AddMalloc("taken", 16, 512);
  ASSERT_TRUE(AddKey(Spec("key", "AES_CBC", kKey128)).ok());
  EXPECT_EQ(StatusErrno(AddCrypto("taken", "base", "key")), EEXIST);
  EXPECT_FALSE(Control([&] { return manager_->Find("base")->claimed(); }));
  EXPECT_TRUE(Control([&] { return keys_.Destroy("key"); }).ok()) << "no reference left behind";
}

}  // namespace
}  // namespace smad::tgt
