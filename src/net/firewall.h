// The nftables table ephemera owns ("inet ephemera"), written through
// libnftables. The whole table is replaced in one atomic transaction from
// the list of sandbox networks, so it is always exactly what the daemon
// knows: a sandbox may reach its gateway for DHCP (and ping; DNS where the
// gateway serves it) and nothing
// else on the host, sandboxes never reach each other, spoofed sources are
// dropped (on the way to the host as well as through it), and outbound NAT
// is on only when configured, and then only to public addresses.
#pragma once

#include <string>
#include <vector>

#include "core/ipv4.h"
#include "net/nft.h"

namespace ephemera {

struct FirewallEntry {
  std::string tap;
  Subnet30 subnet;
  bool serves_dns = false;  // its gateway answers DNS (an egress allow-list's resolver)
};

struct FirewallPolicy {
  Ipv4Cidr pool;
  bool outbound_nat = false;
  // With NAT, guests still never reach these: the host's own connected
  // subnets (its LAN), besides the fixed private and special ranges
  // (kNatBlockedRanges), unless `nat_allow` names them.
  std::vector<Ipv4Cidr> host_subnets;
  std::vector<Ipv4Cidr> nat_allow;
};

// Private, link-local (cloud metadata at 169.254.169.254), CGNAT, loopback,
// multicast and other non-public IPv4 ranges: never reached through NAT.
extern const std::vector<std::string_view> kNatBlockedRanges;

// The IPv4 subnets of this host's interfaces (its LANs), for FirewallPolicy.
std::vector<Ipv4Cidr> HostConnectedSubnets();

// The nft script for the table (a pure function, tested as text).
std::string BuildFirewallScript(const FirewallPolicy& policy,
                                const std::vector<FirewallEntry>& entries);

class Firewall {
 public:
  // Replaces the table atomically. kPermissionDenied without CAP_NET_ADMIN,
  // kUnavailable when the kernel lacks nf_tables.
  void Apply(const FirewallPolicy& policy, const std::vector<FirewallEntry>& entries);
  // Deletes the table; absent is fine (idempotent).
  void Remove();
  // The table as `nft list` prints it, or "" if absent.
  std::string List();

  static constexpr std::string_view kTable = "ephemera";

 private:
  NftContext nft_;
};

}  // namespace ephemera
