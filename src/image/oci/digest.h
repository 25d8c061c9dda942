// Content digests as OCI writes them ("sha256:<64 hex>"), and a streaming
// check of a blob against its descriptor while it is written.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "core/sha256.h"

namespace ephemera::oci {

struct Digest {
  std::string hex;  // 64 lowercase hex digits (sha256 is the only algorithm taken)

  // kInvalidArgument naming the text for anything but sha256:<64 lowercase hex>.
  static Digest Parse(std::string_view text);
  std::string str() const { return "sha256:" + hex; }
  friend bool operator==(const Digest&, const Digest&) = default;
};

// Hashes and counts bytes as they pass; Finish compares with what the
// descriptor promised. kFailedPrecondition names `what` and both sides.
class DigestVerifier {
 public:
  DigestVerifier(Digest expected, std::uint64_t expected_size, std::string what);
  ~DigestVerifier();
  // kFailedPrecondition as soon as more bytes come than the descriptor says.
  void Update(const void* data, std::size_t size);
  void Finish();

 private:
  StreamingDigest sha256_;
  Digest expected_;
  std::uint64_t expected_size_;
  std::uint64_t seen_ = 0;
  std::string what_;
};

}  // namespace ephemera::oci
