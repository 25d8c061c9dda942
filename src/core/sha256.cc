#include "core/sha256.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <memory>
#include <vector>

#include "core/error.h"
#include "core/unique_fd.h"

namespace ephemera {

namespace {

class Digest {
 public:
  explicit Digest(const EVP_MD* md = EVP_sha256()) : ctx_(EVP_MD_CTX_new(), EVP_MD_CTX_free) {
    if (!ctx_ || EVP_DigestInit_ex(ctx_.get(), md, nullptr) != 1) {
      Fail(ErrorCode::kInternal, "cannot initialise a message digest");
    }
  }
  void Update(const void* data, std::size_t size) { EVP_DigestUpdate(ctx_.get(), data, size); }
  std::string HexFinal() {
    std::array<unsigned char, EVP_MAX_MD_SIZE> md;
    unsigned int length = 0;
    EVP_DigestFinal_ex(ctx_.get(), md.data(), &length);
    static constexpr char kHex[] = "0123456789abcdef";
    std::string hex;
    for (unsigned i = 0; i < length; ++i) {
      hex.push_back(kHex[md[i] >> 4]);
      hex.push_back(kHex[md[i] & 0xf]);
    }
    return hex;
  }

 private:
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx_;
};

}  // namespace

std::string Sha256Hex(std::string_view data) {
  Digest digest;
  digest.Update(data.data(), data.size());
  return digest.HexFinal();
}

namespace {

std::string DigestFile(const std::filesystem::path& path, const EVP_MD* md) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) FailErrno(fmt::format("cannot open {}", path.string()), errno, ErrorCode::kNotFound);
  Digest digest(md);
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

std::string Sha256File(const std::filesystem::path& path) { return DigestFile(path, EVP_sha256()); }
std::string Md5File(const std::filesystem::path& path) { return DigestFile(path, EVP_md5()); }

}  // namespace ephemera
