#include "agent/secrets/secret_box.h"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace smad::agent {
namespace {

constexpr size_t kNonceSize = 12;
constexpr size_t kTagSize = 16;

struct CipherCtx {
  EVP_CIPHER_CTX* ctx = EVP_CIPHER_CTX_new();
  ~CipherCtx() { EVP_CIPHER_CTX_free(ctx); }
};

absl::Status ReadExactly(int fd, unsigned char* data, size_t size, const std::string& path) {
  size_t done = 0;
  while (done < size) {
    ssize_t n = read(fd, data + done, size - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoStatus(errno, absl::StrCat("reading ", path));
    if (n == 0) break;
    done += static_cast<size_t>(n);
  }
  if (done != size) return absl::FailedPreconditionError(absl::StrCat(path, ": not a 32-byte key file"));
  unsigned char extra;
  if (read(fd, &extra, 1) != 0) return absl::FailedPreconditionError(absl::StrCat(path, ": not a 32-byte key file"));
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<SecretBox>> SecretBox::OpenOrCreate(const std::string& path) {
  std::array<unsigned char, 32> key{};
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd >= 0) {
    struct stat st {};
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || (st.st_mode & 077) != 0) {
      close(fd);
      return absl::FailedPreconditionError(
          absl::StrCat(path, ": the key file must be a regular file readable by its owner only (mode 0600)"));
    }
    absl::Status read_status = ReadExactly(fd, key.data(), key.size(), path);
    close(fd);
    if (!read_status.ok()) return read_status;
  } else if (errno == ENOENT) {
    // The kernel's CSPRNG rather than RAND_priv_bytes: OpenSSL's generator would be initialised at
    // every first start only for this (about 2 MB of libcrypto pages resident in an idle smad).
    if (getrandom(key.data(), key.size(), 0) != static_cast<ssize_t>(key.size())) {
      return absl::InternalError(absl::StrCat("cannot draw a random master key: ", ErrnoString(errno)));
    }
    fd = open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) return ErrnoStatus(errno, absl::StrCat("creating ", path));
    ssize_t written = write(fd, key.data(), key.size());
    int saved = errno;
    bool synced = fsync(fd) == 0;
    close(fd);
    if (written != static_cast<ssize_t>(key.size()) || !synced) {
      OPENSSL_cleanse(key.data(), key.size());
      unlink(path.c_str());
      return ErrnoStatus(written < 0 ? saved : EIO, absl::StrCat("writing ", path));
    }
  } else {
    return ErrnoStatus(errno, absl::StrCat("opening ", path));
  }
  std::unique_ptr<SecretBox> box(new SecretBox(key));
  OPENSSL_cleanse(key.data(), key.size());
  return box;
}

std::unique_ptr<SecretBox> SecretBox::FromKey(const std::array<unsigned char, 32>& key) {
  return std::unique_ptr<SecretBox>(new SecretBox(key));
}

SecretBox::~SecretBox() { OPENSSL_cleanse(key_.data(), key_.size()); }

absl::StatusOr<std::string> SecretBox::Seal(absl::string_view plaintext, absl::string_view context) const {
  std::vector<unsigned char> out(kNonceSize + plaintext.size() + kTagSize);
  if (RAND_bytes(out.data(), kNonceSize) != 1) return absl::InternalError("seal: no random nonce");
  CipherCtx c;
  int len = 0;
  bool ok = c.ctx != nullptr &&
            EVP_EncryptInit_ex(c.ctx, EVP_aes_256_gcm(), nullptr, key_.data(), out.data()) == 1 &&
            EVP_EncryptUpdate(c.ctx, nullptr, &len, reinterpret_cast<const unsigned char*>(context.data()),
                              static_cast<int>(context.size())) == 1 &&
            EVP_EncryptUpdate(c.ctx, out.data() + kNonceSize, &len,
                              reinterpret_cast<const unsigned char*>(plaintext.data()),
                              static_cast<int>(plaintext.size())) == 1 &&
            EVP_EncryptFinal_ex(c.ctx, out.data() + kNonceSize + len, &len) == 1 &&
            EVP_CIPHER_CTX_ctrl(c.ctx, EVP_CTRL_GCM_GET_TAG, kTagSize,
                                out.data() + kNonceSize + plaintext.size()) == 1;
  if (!ok) return absl::InternalError("seal: AES-256-GCM failed");
  std::string encoded = absl::Base64Escape(
      absl::string_view(reinterpret_cast<const char*>(out.data()), out.size()));
  return encoded;
}

absl::StatusOr<std::string> SecretBox::Open(absl::string_view sealed, absl::string_view context) const {
  std::string raw;
  if (!absl::Base64Unescape(sealed, &raw) || raw.size() < kNonceSize + kTagSize) {
    return absl::DataLossError("sealed secret is malformed");
  }
  const auto* bytes = reinterpret_cast<const unsigned char*>(raw.data());
  size_t text_size = raw.size() - kNonceSize - kTagSize;
  std::string plain(text_size, '\0');
  CipherCtx c;
  int len = 0;
  std::array<unsigned char, kTagSize> tag{};
  std::copy(bytes + kNonceSize + text_size, bytes + raw.size(), tag.begin());
  bool ok = c.ctx != nullptr &&
            EVP_DecryptInit_ex(c.ctx, EVP_aes_256_gcm(), nullptr, key_.data(), bytes) == 1 &&
            EVP_DecryptUpdate(c.ctx, nullptr, &len, reinterpret_cast<const unsigned char*>(context.data()),
                              static_cast<int>(context.size())) == 1 &&
            EVP_DecryptUpdate(c.ctx, reinterpret_cast<unsigned char*>(plain.data()), &len, bytes + kNonceSize,
                              static_cast<int>(text_size)) == 1 &&
            EVP_CIPHER_CTX_ctrl(c.ctx, EVP_CTRL_GCM_SET_TAG, kTagSize, tag.data()) == 1 &&
            EVP_DecryptFinal_ex(c.ctx, reinterpret_cast<unsigned char*>(plain.data()) + len, &len) == 1;
  OPENSSL_cleanse(raw.data(), raw.size());
  if (!ok) {
    OPENSSL_cleanse(plain.data(), plain.size());
    return absl::DataLossError("sealed secret does not open with this master key (wrong key file or tampered)");
  }
  return plain;
}

}  // namespace smad::agent
