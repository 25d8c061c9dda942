// SandboxId: a random (version 4) UUID, the name of a sandbox everywhere.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace ephemera {

class SandboxId {
 public:
  // A fresh random id from the kernel's CSPRNG.
  static SandboxId Generate();
  // Parses the canonical lowercase form; throws kInvalidArgument otherwise.
  static SandboxId Parse(std::string_view text);
  static bool IsValid(std::string_view text);

  const std::string& str() const { return text_; }
  // A short prefix, unique enough for host object names (TAP, nft, logs).
  std::string ShortName() const { return text_.substr(0, 8); }

  friend bool operator==(const SandboxId&, const SandboxId&) = default;
  friend auto operator<=>(const SandboxId&, const SandboxId&) = default;

 private:
  explicit SandboxId(std::string text) : text_(std::move(text)) {}
  std::string text_;
};

}  // namespace ephemera
