// Where a sandbox may connect to (its egress), enforced on the host: nothing
// (kNone), whatever outbound NAT reaches (kAll), or only the listed networks
// and the addresses its host-served DNS gives for the listed domains
// (kAllow). The operator's NAT policy (network.outbound_nat, nat_allow and
// the blocked ranges) still holds in every mode: an allow-list narrows it,
// never widens it.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "core/ipv4.h"

namespace ephemera {

enum class EgressMode { kNone, kAll, kAllow };

std::string_view EgressModeName(EgressMode mode);
EgressMode ParseEgressMode(std::string_view name);  // kInvalidArgument naming the choices

struct EgressPolicy {
  EgressMode mode = EgressMode::kAll;
  std::vector<Ipv4Cidr> networks;    // kAllow: reachable networks
  std::vector<std::string> domains;  // kAllow: names and all names under them, lower case

  bool operator==(const EgressPolicy& other) const { return Text() == other.Text(); }
  // "none", "all", or "allow" followed by its entries, space-separated: the
  // stored form (ParseEgress reads it back).
  std::string Text() const;
  // Its allow-list as given: CIDRs, then domain names.
  std::vector<std::string> Entries() const;
};

inline constexpr std::size_t kMaxEgressEntries = 64;

// `mode` with `allow`'s entries: each an IPv4 address, a CIDR or a domain
// name (letters, digits, '-' and '.', at most 253 characters, at least two
// labels). Entries go only with "allow", and "allow" needs at least one.
// kInvalidArgument naming the bad entry.
EgressPolicy MakeEgressPolicy(std::string_view mode, const std::vector<std::string>& allow);
// The stored form (EgressPolicy::Text); kInvalidArgument when malformed.
EgressPolicy ParseEgress(std::string_view text);

}  // namespace ephemera
