#include "core/sandbox_id.h"

#include <fmt/format.h>

#include "core/error.h"
#include "core/random.h"

namespace ephemera {

SandboxId SandboxId::Generate() {
  std::array<std::byte, 16> bytes;
  FillRandom(bytes);
  bytes[6] = (bytes[6] & std::byte{0x0f}) | std::byte{0x40};  // version 4
  bytes[8] = (bytes[8] & std::byte{0x3f}) | std::byte{0x80};  // RFC 4122 variant
  std::string text;
  for (std::size_t i = 0; i < bytes.size(); ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) text.push_back('-');
    text += fmt::format("{:02x}", static_cast<unsigned>(bytes[i]));
  }
  return SandboxId(std::move(text));
}

bool SandboxId::IsValid(std::string_view text) {
  if (text.size() != 36) return false;
  for (std::size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (i == 8 || i == 13 || i == 18 || i == 23) {
      if (c != '-') return false;
    } else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
      return false;
    }
  }
  // Version 4, RFC 4122 variant.
  return text[14] == '4' &&
         (text[19] == '8' || text[19] == '9' || text[19] == 'a' || text[19] == 'b');
}

SandboxId SandboxId::Parse(std::string_view text) {
  if (!IsValid(text)) {
    Fail(ErrorCode::kInvalidArgument, "'{}' is not a sandbox id (a lowercase UUID4)",
         text.substr(0, 64));
  }
  return SandboxId(std::string(text));
}

}  // namespace ephemera
