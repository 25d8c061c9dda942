#include "net/egress_firewall.h"

#include <fmt/format.h>

#include <algorithm>
#include <set>

#include "core/error.h"

namespace ephemera {

namespace {

// Interface names may hold characters nft names may not: each such one,
// and '_' itself, becomes '_' and two hex digits, so distinct devices keep
// distinct names.
std::string NameSuffix(const std::string& device) {
  std::string out;
  for (char c : device) {
    const bool plain = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
    out += plain ? std::string(1, c) : fmt::format("_{:02x}", static_cast<unsigned char>(c));
  }
  return out;
}

// A guest walking wildcard names cannot grow it without bound: answers
// beyond this many addresses are not added (dnsmasq logs it), so those
// names stay closed.
constexpr std::string_view kDnsSetSpec = "{ type ipv4_addr; size 65536; }";

std::string ChainName(const std::string& device) { return "allow_" + NameSuffix(device); }
std::string NetworkSet(const std::string& device) { return "net_" + NameSuffix(device); }

constexpr std::string_view kWhat = "the ephemera_egress table";

}  // namespace

std::string EgressDnsSet(const std::string& device) { return "dns_" + NameSuffix(device); }

std::string EgressNftsetTarget(const std::string& device) {
  return fmt::format("4#inet#{}#{}", EgressFirewall::kTable, EgressDnsSet(device));
}

std::vector<std::string> EgressDevicesListed(const std::string& listing) {
  // "chain allow_X {", "set net_X {", "set dns_X {": the suffix, which is
  // what the removal script needs (names are made from it alone).
  std::set<std::string> suffixes;
  std::size_t pos = 0;
  while (pos < listing.size()) {
    std::size_t end = listing.find('\n', pos);
    if (end == std::string::npos) end = listing.size();
    std::string_view line(listing.data() + pos, end - pos);
    pos = end + 1;
    while (!line.empty() && (line.front() == '\t' || line.front() == ' ')) line.remove_prefix(1);
    for (std::string_view prefix : {"chain allow_", "set net_", "set dns_"}) {
      if (line.substr(0, prefix.size()) != prefix) continue;
      std::string_view rest = line.substr(prefix.size());
      const std::size_t space = rest.find(' ');
      if (space != std::string_view::npos && space > 0) {
        suffixes.insert(std::string(rest.substr(0, space)));
      }
    }
  }
  return {suffixes.begin(), suffixes.end()};
}

std::string BuildEgressScript(const std::vector<EgressEntry>& entries,
                              const std::vector<std::string>& stale) {
  const std::string table = fmt::format("inet {}", EgressFirewall::kTable);
  // The skeleton, made idempotently; the map is refilled from scratch.
  std::string script = fmt::format(
      "add table {0}\n"
      "add map {0} by_device {{ type ifname : verdict; }}\n"
      "add chain {0} forward {{ type filter hook forward priority filter - 5; policy accept; }}\n"
      "flush chain {0} forward\n"
      "add rule {0} forward ct state established,related accept\n"
      "add rule {0} forward iifname vmap @by_device\n"
      "flush map {0} by_device\n",
      table);
  std::set<std::string> wanted;
  for (const EgressEntry& e : entries) {
    if (e.policy.mode == EgressMode::kAllow) wanted.insert(NameSuffix(e.device));
  }
  // What devices gone (or no longer restricted) had: the map no longer
  // points at their chains, so those can go ("add" first makes each delete
  // valid when that piece is already absent).
  for (const std::string& suffix : stale) {
    if (wanted.count(suffix)) continue;
    script += fmt::format(
        "add chain {0} allow_{1}\nflush chain {0} allow_{1}\ndelete chain {0} allow_{1}\n"
        "add set {0} net_{1} {{ type ipv4_addr; flags interval; auto-merge; }}\n"
        "delete set {0} net_{1}\n"
        "add set {0} dns_{1} {2}\ndelete set {0} dns_{1}\n",
        table, suffix, kDnsSetSpec);
  }
  std::string verdicts;
  for (const EgressEntry& e : entries) {
    if (e.policy.mode == EgressMode::kAll) continue;
    std::string verdict = "drop";
    if (e.policy.mode == EgressMode::kAllow) {
      const std::string chain = ChainName(e.device), nets = NetworkSet(e.device),
                        dns = EgressDnsSet(e.device);
      script += fmt::format(
          "add set {0} {1} {3}\n"
          "add set {0} {2} {{ type ipv4_addr; flags interval; auto-merge; }}\n"
          "flush set {0} {2}\n",
          table, dns, nets, kDnsSetSpec);
      if (!e.policy.networks.empty()) {
        std::string list;
        for (const Ipv4Cidr& c : e.policy.networks) list += (list.empty() ? "" : ", ") + c.str();
        script += fmt::format("add element {0} {1} {{ {2} }}\n", table, nets, list);
      }
      script += fmt::format(
          "add chain {0} {1}\nflush chain {0} {1}\n"
          "add rule {0} {1} ip daddr @{2} accept\n"
          "add rule {0} {1} ip daddr @{3} accept\n"
          "add rule {0} {1} drop\n",
          table, chain, nets, dns);
      verdict = "jump " + chain;
    }
    verdicts += fmt::format("{}\"{}\" : {}", verdicts.empty() ? "" : ", ", e.device, verdict);
  }
  if (!verdicts.empty()) {
    script += fmt::format("add element {} by_device {{ {} }}\n", table, verdicts);
  }
  return script;
}

void EgressFirewall::Apply(const std::vector<EgressEntry>& entries) {
  // Terse: the names are what matters, not the addresses learnt.
  const std::string listing = nft_.ListTable(kTable, /*terse=*/true);
  nft_.Run(BuildEgressScript(entries, EgressDevicesListed(listing)), kWhat);
}

void EgressFirewall::ForgetLearnt(const std::string& device) {
  const std::string set = EgressDnsSet(device);
  nft_.Run(fmt::format("add table inet {0}\nadd set inet {0} {1} {2}\nflush set inet {0} {1}\n",
                       kTable, set, kDnsSetSpec),
           kWhat);
}

void EgressFirewall::Remove() { nft_.DeleteTable(kTable); }

}  // namespace ephemera
