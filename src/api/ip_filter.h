// Which peer addresses a front door serves: deny entries win, then an
// address must match an allow entry (an empty allow list allows any).
#pragma once

#include <array>
#include <string>
#include <vector>

#include <boost/asio/ip/address.hpp>

namespace ephemera {

class IpFilter {
 public:
  IpFilter() = default;  // admits every address
  // Entries are CIDRs ("10.0.0.0/8", "fd00::/8"), bare addresses, or "any".
  // kInvalidArgument naming the entry and the list.
  IpFilter(const std::vector<std::string>& allow, const std::vector<std::string>& deny);

  bool Admits(const boost::asio::ip::address& address) const;

 private:
  // IPv4 is kept as IPv4-mapped IPv6, so one comparison serves both.
  struct Range {
    std::array<unsigned char, 16> network{};
    unsigned prefix = 0;  // 0..128
  };
  static Range ParseRange(const std::string& entry, const char* list);
  static bool Contains(const Range& range, const boost::asio::ip::address& address);

  std::vector<Range> allow_;
  std::vector<Range> deny_;
};

}  // namespace ephemera
