// SHA-256 of files, streamed (images are hundreds of MiB).
#pragma once

#include <cstddef>
#include <filesystem>
#include <string>
#include <string_view>

namespace ephemera {

// A digest computed as data streams by (SHA-256 unless told otherwise).
class StreamingDigest {
 public:
  enum class Algorithm { kSha256, kMd5 };
  explicit StreamingDigest(Algorithm algorithm = Algorithm::kSha256);
  ~StreamingDigest();
  StreamingDigest(const StreamingDigest&) = delete;
  StreamingDigest& operator=(const StreamingDigest&) = delete;
  void Update(const void* data, std::size_t size);
  std::string HexFinal();  // lowercase hex; once

 private:
  void* ctx_;  // EVP_MD_CTX
};

std::string Sha256File(const std::filesystem::path& path);  // lowercase hex
std::string Sha256Hex(std::string_view data);
// HMAC-SHA256 of `data` under `key`, lowercase hex.
std::string HmacSha256Hex(std::string_view key, std::string_view data);
// Only to check published md5sum.txt files (Anweddol's ISO mirror), never for trust on its own.
std::string Md5File(const std::filesystem::path& path);

}  // namespace ephemera
