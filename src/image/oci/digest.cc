#include "image/oci/digest.h"

#include "core/error.h"
#include "core/text.h"

namespace ephemera::oci {

Digest Digest::Parse(std::string_view text) {
  constexpr std::string_view kPrefix = "sha256:";
  auto bad = [&] {
    Fail(ErrorCode::kInvalidArgument, "'{}' is not a sha256 digest (sha256:<64 hex digits>)",
         EscapeForLog(text, 100));
  };
  if (text.substr(0, kPrefix.size()) != kPrefix) bad();
  std::string_view hex = text.substr(kPrefix.size());
  if (hex.size() != 64) bad();
  for (char c : hex) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) bad();
  }
  return Digest{std::string(hex)};
}

DigestVerifier::DigestVerifier(Digest expected, std::uint64_t expected_size, std::string what)
    : expected_(std::move(expected)), expected_size_(expected_size), what_(std::move(what)) {}

DigestVerifier::~DigestVerifier() = default;

void DigestVerifier::Update(const void* data, std::size_t size) {
  seen_ += size;
  if (seen_ > expected_size_) {
    Fail(ErrorCode::kFailedPrecondition, "{}: more than the {} bytes its descriptor gives", what_,
         expected_size_);
  }
  sha256_.Update(data, size);
}

void DigestVerifier::Finish() {
  if (seen_ != expected_size_) {
    Fail(ErrorCode::kFailedPrecondition, "{}: {} bytes where its descriptor gives {}", what_, seen_,
         expected_size_);
  }
  const std::string hex = sha256_.HexFinal();
  if (hex != expected_.hex) {
    Fail(ErrorCode::kFailedPrecondition, "{}: its content has digest sha256:{}, not {}", what_, hex,
         expected_.str());
  }
}

}  // namespace ephemera::oci
