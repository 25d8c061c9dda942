#include "core/ipv4.h"

#include <arpa/inet.h>
#include <fmt/format.h>

#include <charconv>

#include "core/error.h"

namespace ephemera {

Ipv4 Ipv4::Parse(std::string_view text) {
  in_addr addr{};
  std::string copy(text);
  if (text.size() > 15 || ::inet_pton(AF_INET, copy.c_str(), &addr) != 1) {
    Fail(ErrorCode::kInvalidArgument, "'{}' is not an IPv4 address", text.substr(0, 64));
  }
  return Ipv4{ntohl(addr.s_addr)};
}

std::string Ipv4::str() const {
  return fmt::format("{}.{}.{}.{}", value >> 24, (value >> 16) & 0xff, (value >> 8) & 0xff,
                     value & 0xff);
}

Ipv4Cidr Ipv4Cidr::Parse(std::string_view text) {
  auto slash = text.find('/');
  if (slash == std::string_view::npos) {
    Fail(ErrorCode::kInvalidArgument, "'{}' is not an IPv4 CIDR (a.b.c.d/n)", text.substr(0, 64));
  }
  Ipv4Cidr cidr;
  cidr.base = Ipv4::Parse(text.substr(0, slash));
  std::string_view prefix = text.substr(slash + 1);
  auto [ptr, ec] = std::from_chars(prefix.data(), prefix.data() + prefix.size(), cidr.prefix);
  if (ec != std::errc() || ptr != prefix.data() + prefix.size() || cidr.prefix < 0 ||
      cidr.prefix > 32) {
    Fail(ErrorCode::kInvalidArgument, "'{}' has no valid prefix length (0-32)", text.substr(0, 64));
  }
  std::uint32_t host_mask = cidr.prefix == 0 ? ~0u : (1u << (32 - cidr.prefix)) - 1;
  if (cidr.base.value & host_mask) {
    Fail(ErrorCode::kInvalidArgument, "'{}' has host bits set", text.substr(0, 64));
  }
  return cidr;
}

std::string Ipv4Cidr::str() const { return fmt::format("{}/{}", base.str(), prefix); }

bool Ipv4Cidr::Contains(Ipv4 address) const {
  std::uint64_t offset = static_cast<std::uint64_t>(address.value) - base.value;
  return address.value >= base.value && offset < size();
}

}  // namespace ephemera
