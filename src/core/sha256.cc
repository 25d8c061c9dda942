#include "core/sha256.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <memory>
#include <vector>

#include "core/error.h"
#include "core/unique_fd.h"

namespace ephemera {

StreamingDigest::StreamingDigest(Algorithm algorithm) : ctx_(EVP_MD_CTX_new()) {
  const EVP_MD* md = algorithm == Algorithm::kSha256 ? EVP_sha256() : EVP_md5();
  if (!ctx_ || EVP_DigestInit_ex(static_cast<EVP_MD_CTX*>(ctx_), md, nullptr) != 1) {
    EVP_MD_CTX_free(static_cast<EVP_MD_CTX*>(ctx_));
    Fail(ErrorCode::kInternal, "cannot initialise a message digest");
  }
}

StreamingDigest::~StreamingDigest() { EVP_MD_CTX_free(static_cast<EVP_MD_CTX*>(ctx_)); }

void StreamingDigest::Update(const void* data, std::size_t size) {
  EVP_DigestUpdate(static_cast<EVP_MD_CTX*>(ctx_), data, size);
}

std::string StreamingDigest::HexFinal() {
  std::array<unsigned char, EVP_MAX_MD_SIZE> md;
  unsigned int length = 0;
  EVP_DigestFinal_ex(static_cast<EVP_MD_CTX*>(ctx_), md.data(), &length);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string hex;
  for (unsigned i = 0; i < length; ++i) {
    hex.push_back(kHex[md[i] >> 4]);
    hex.push_back(kHex[md[i] & 0xf]);
  }
  return hex;
}

std::string Sha256Hex(std::string_view data) {
  StreamingDigest digest;
  digest.Update(data.data(), data.size());
  return digest.HexFinal();
}

std::string HmacSha256Hex(std::string_view key, std::string_view data) {
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  if (!HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
            reinterpret_cast<const unsigned char*>(data.data()), data.size(), mac, &length)) {
    Fail(ErrorCode::kInternal, "HMAC-SHA256 failed");
  }
  static constexpr char kHex[] = "0123456789abcdef";
  std::string hex;
  for (unsigned int i = 0; i < length; ++i) {
    hex += kHex[mac[i] >> 4];
    hex += kHex[mac[i] & 15];
  }
  return hex;
}

namespace {

std::string DigestFile(const std::filesystem::path& path, StreamingDigest::Algorithm algorithm) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) FailErrno(fmt::format("cannot open {}", path.string()), errno, ErrorCode::kNotFound);
  StreamingDigest digest(algorithm);
  std::vector<char> buffer(1 << 20);
  for (;;) {
    ssize_t n = ::read(fd.get(), buffer.data(), buffer.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      FailErrno(fmt::format("cannot read {}", path.string()), errno);
    }
    if (n == 0) break;
    digest.Update(buffer.data(), static_cast<std::size_t>(n));
  }
  return digest.HexFinal();
}

}  // namespace

std::string Sha256File(const std::filesystem::path& path) {
  return DigestFile(path, StreamingDigest::Algorithm::kSha256);
}
std::string Md5File(const std::filesystem::path& path) {
  return DigestFile(path, StreamingDigest::Algorithm::kMd5);
}

}  // namespace ephemera
