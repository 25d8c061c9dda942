#include "api/ip_filter.h"

#include <charconv>

#include "core/error.h"

namespace ephemera {

namespace ip = boost::asio::ip;

namespace {

std::array<unsigned char, 16> AsV6Bytes(const ip::address& address) {
  if (address.is_v4()) return ip::make_address_v6(ip::v4_mapped, address.to_v4()).to_bytes();
  return address.to_v6().to_bytes();
}

}  // namespace

IpFilter::IpFilter(const std::vector<std::string>& allow, const std::vector<std::string>& deny) {
  for (const auto& entry : allow) allow_.push_back(ParseRange(entry, "allow"));
  for (const auto& entry : deny) deny_.push_back(ParseRange(entry, "deny"));
}

IpFilter::Range IpFilter::ParseRange(const std::string& entry, const char* list) {
  if (entry == "any") return Range{};  // prefix 0 matches everything
  const auto slash = entry.find('/');
  const std::string address_text = entry.substr(0, slash);
  boost::system::error_code ec;
  ip::address address = ip::make_address(address_text, ec);
  if (ec) {
    Fail(ErrorCode::kInvalidArgument, "{}: '{}' is not an IP address, CIDR or 'any'", list,
         entry.substr(0, 64));
  }
  const unsigned max_prefix = address.is_v4() ? 32 : 128;
  unsigned prefix = max_prefix;
  if (slash != std::string::npos) {
    const char* first = entry.data() + slash + 1;
    const char* last = entry.data() + entry.size();
    auto [end, parse_ec] = std::from_chars(first, last, prefix);
    if (parse_ec != std::errc() || end != last || first == last || prefix > max_prefix) {
      Fail(ErrorCode::kInvalidArgument, "{}: '{}' has a bad prefix length (0 to {})", list,
           entry.substr(0, 64), max_prefix);
    }
  }
  Range range;
  range.network = AsV6Bytes(address);
  range.prefix = address.is_v4() ? prefix + 96 : prefix;
  // Host bits set (10.1.2.3/8) are a typo more often than not.
  for (unsigned bit = range.prefix; bit < 128; ++bit) {
    if (range.network[bit / 8] & (0x80 >> (bit % 8))) {
      Fail(ErrorCode::kInvalidArgument, "{}: '{}' has host bits set beyond the prefix", list,
           entry.substr(0, 64));
    }
  }
  return range;
}

bool IpFilter::Contains(const Range& range, const ip::address& address) {
  const auto bytes = AsV6Bytes(address);
  unsigned bit = 0;
  for (; bit + 8 <= range.prefix; bit += 8) {
    if (bytes[bit / 8] != range.network[bit / 8]) return false;
  }
  if (bit < range.prefix) {
    const unsigned char mask = static_cast<unsigned char>(0xff << (8 - (range.prefix - bit)));
    if ((bytes[bit / 8] & mask) != (range.network[bit / 8] & mask)) return false;
  }
  return true;
}

bool IpFilter::Admits(const ip::address& address) const {
  ip::address normalized = address;
  if (address.is_v6() && address.to_v6().is_v4_mapped()) {
    normalized = ip::make_address_v4(ip::v4_mapped, address.to_v6());
  }
  for (const auto& range : deny_) {
    if (Contains(range, normalized)) return false;
  }
  if (allow_.empty()) return true;
  for (const auto& range : allow_) {
    if (Contains(range, normalized)) return true;
  }
  return false;
}

}  // namespace ephemera
