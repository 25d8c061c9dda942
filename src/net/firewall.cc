#include "net/firewall.h"

#include <arpa/inet.h>
#include <fmt/format.h>
#include <ifaddrs.h>
#include <netinet/in.h>

#include <bit>

#include "core/error.h"

namespace ephemera {

std::vector<Ipv4Cidr> HostConnectedSubnets() {
  std::vector<Ipv4Cidr> subnets;
  ifaddrs* list = nullptr;
  if (::getifaddrs(&list) != 0) return subnets;
  for (ifaddrs* it = list; it; it = it->ifa_next) {
    if (!it->ifa_addr || !it->ifa_netmask || it->ifa_addr->sa_family != AF_INET) continue;
    const std::uint32_t address =
        ntohl(reinterpret_cast<const sockaddr_in*>(it->ifa_addr)->sin_addr.s_addr);
    const std::uint32_t mask =
        ntohl(reinterpret_cast<const sockaddr_in*>(it->ifa_netmask)->sin_addr.s_addr);
    subnets.push_back(Ipv4Cidr{Ipv4{address & mask}, std::popcount(mask)});
  }
  ::freeifaddrs(list);
  return subnets;
}

const std::vector<std::string_view> kNatBlockedRanges = {
    "0.0.0.0/8",       // "this" network
    "10.0.0.0/8",      // RFC 1918
    "100.64.0.0/10",   // carrier-grade NAT (RFC 6598)
    "127.0.0.0/8",     // loopback
    "169.254.0.0/16",  // link-local: cloud metadata services live here
    "172.16.0.0/12",   // RFC 1918
    "192.0.0.0/24",    // IETF protocol assignments
    "192.168.0.0/16",  // RFC 1918
    "198.18.0.0/15",   // benchmarking
    "224.0.0.0/4",     // multicast
    "240.0.0.0/4",     // reserved, and broadcast
};

std::string BuildFirewallScript(const FirewallPolicy& policy,
                                const std::vector<FirewallEntry>& entries) {
  std::string taps, endpoints, gateways, dns_gateways;
  for (const auto& e : entries) {
    const char* sep = taps.empty() ? "" : ", ";
    taps += fmt::format("{}\"{}\"", sep, e.tap);
    endpoints += fmt::format("{}\"{}\" . {}", sep, e.tap, e.subnet.guest().str());
    gateways += fmt::format("{}\"{}\" . {}", sep, e.tap, e.subnet.gateway().str());
    if (e.serves_dns) {
      dns_gateways += fmt::format("{}\"{}\" . {}", dns_gateways.empty() ? "" : ", ", e.tap,
                                  e.subnet.gateway().str());
    }
  }
  auto elements = [](const std::string& list) {
    return list.empty() ? std::string() : fmt::format("\t\telements = {{ {} }}\n", list);
  };
  auto cidrs = [](const auto& list) {
    std::string out;
    for (const auto& c : list) out += fmt::format("{}{}", out.empty() ? "" : ", ", c);
    return out;
  };
  std::string nat_sets, nat_rules = "drop";
  if (policy.outbound_nat) {
    std::vector<std::string> blocked(kNatBlockedRanges.begin(), kNatBlockedRanges.end());
    for (const auto& s : policy.host_subnets) blocked.push_back(s.str());
    std::vector<std::string> allowed;
    for (const auto& a : policy.nat_allow) allowed.push_back(a.str());
    // auto-merge: the host's subnets may overlap the fixed ranges.
    nat_sets = fmt::format(
        "\tset nat_blocked {{\n\t\ttype ipv4_addr\n\t\tflags interval\n\t\tauto-merge\n{}\t}}\n"
        "\tset nat_allowed {{\n\t\ttype ipv4_addr\n\t\tflags interval\n\t\tauto-merge\n{}\t}}\n",
        elements(cidrs(blocked)), elements(cidrs(allowed)));
    nat_rules =
        "ip daddr @nat_allowed accept\n"
        "\t\tip daddr @nat_blocked drop\n"
        "\t\tmeta nfproto ipv4 accept\n"
        "\t\tdrop";
  }
  // "table ... {}" first makes the delete valid when the table is absent;
  // the whole buffer is one transaction, so no packet sees a half table.
  std::string script = fmt::format(
      "table inet {0} {{}}\n"
      "delete table inet {0}\n"
      "table inet {0} {{\n"
      "\tset taps {{\n\t\ttype ifname\n{1}\t}}\n"
      "\tset endpoints {{\n\t\ttype ifname . ipv4_addr\n{2}\t}}\n"
      "\tset gateways {{\n\t\ttype ifname . ipv4_addr\n{3}\t}}\n"
      "\tset dns_gateways {{\n\t\ttype ifname . ipv4_addr\n{6}\t}}\n"
      "{4}"
      "\tchain input {{\n"
      "\t\ttype filter hook input priority filter - 10; policy accept;\n"
      "\t\tiifname != @taps accept\n"
      "\t\tudp sport 68 udp dport 67 accept\n"
      // Whatever else a guest sends the host carries its own address, or
      // it is dropped here, whatever rp_filter says.
      "\t\tiifname . ip saddr != @endpoints drop\n"
      "\t\tct state established,related accept\n"
      "\t\tiifname . ip daddr @gateways icmp type echo-request accept\n"
      // DNS, only where the gateway serves it (an egress allow-list's):
      // elsewhere a resolver of the host's own must stay out of reach.
      "\t\tiifname . ip daddr @dns_gateways meta l4proto {{ tcp, udp }} th dport 53 accept\n"
      "\t\tdrop\n"
      "\t}}\n"
      "\tchain forward {{\n"
      "\t\ttype filter hook forward priority filter - 10; policy accept;\n"
      "\t\tiifname @taps oifname @taps drop\n"
      "\t\toifname @taps ct state established,related accept\n"
      "\t\toifname @taps drop\n"
      "\t\tiifname != @taps accept\n"
      "\t\tiifname . ip saddr != @endpoints drop\n"
      "\t\t{5}\n"
      "\t}}\n",
      Firewall::kTable, elements(taps), elements(endpoints), elements(gateways), nat_sets,
      nat_rules, elements(dns_gateways));
  if (policy.outbound_nat) {
    script += fmt::format(
        "\tchain postrouting {{\n"
        "\t\ttype nat hook postrouting priority srcnat; policy accept;\n"
        "\t\tip saddr {} oifname != @taps masquerade\n"
        "\t}}\n",
        policy.pool.str());
  }
  script += "}\n";
  return script;
}

void Firewall::Apply(const FirewallPolicy& policy, const std::vector<FirewallEntry>& entries) {
  nft_.Run(BuildFirewallScript(policy, entries), "the ephemera table");
}

void Firewall::Remove() { nft_.DeleteTable(kTable); }

std::string Firewall::List() { return nft_.ListTable(kTable); }

}  // namespace ephemera
