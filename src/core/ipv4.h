// IPv4 addresses and the /30 subnets a sandbox network is made of.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace ephemera {

struct Ipv4 {
  std::uint32_t value = 0;  // host byte order

  static Ipv4 Parse(std::string_view text);  // dotted quad; kInvalidArgument
  std::string str() const;
  friend auto operator<=>(const Ipv4&, const Ipv4&) = default;
};

struct Ipv4Cidr {
  Ipv4 base;
  int prefix = 0;

  // "a.b.c.d/n" with the host bits zero; kInvalidArgument naming the problem.
  static Ipv4Cidr Parse(std::string_view text);
  std::string str() const;
  std::uint64_t size() const { return std::uint64_t{1} << (32 - prefix); }
  bool Contains(Ipv4 address) const;
};

// One sandbox's /30: network, gateway (the TAP), guest, broadcast.
struct Subnet30 {
  std::uint32_t index = 0;  // position in its pool
  Ipv4 network;

  Ipv4 gateway() const { return Ipv4{network.value + 1}; }
  Ipv4 guest() const { return Ipv4{network.value + 2}; }
  Ipv4 broadcast() const { return Ipv4{network.value + 3}; }
  std::string cidr() const { return network.str() + "/30"; }
  static constexpr std::string_view kNetmask = "255.255.255.252";
  friend bool operator==(const Subnet30&, const Subnet30&) = default;
};

}  // namespace ephemera
