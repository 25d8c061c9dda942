// Per-sandbox egress rules, in a table of their own ("inet ephemera_egress")
// because its sets are filled at run time: dnsmasq adds the addresses its
// answers give for an allow-list's domains (--nftset), and those must
// survive every change to the other sandboxes (the main table is replaced
// whole). Its forward chain runs after the main table's, which has already
// applied isolation and the operator's NAT policy; here a device in the
// `by_device` map is either dropped (none) or sent to its own chain that
// accepts only its networks and its DNS-learnt addresses (allow). Replies
// to connections made towards the sandbox pass.
#pragma once

#include <string>
#include <vector>

#include "core/egress.h"
#include "net/nft.h"

namespace ephemera {

struct EgressEntry {
  std::string device;  // the host end of the sandbox's NIC
  EgressPolicy policy;
};

// The set dnsmasq fills for `device` (its name in the table).
std::string EgressDnsSet(const std::string& device);
// dnsmasq's --nftset target for it: "4#inet#ephemera_egress#<set>".
std::string EgressNftsetTarget(const std::string& device);

// The devices that have chains or sets in a listing of the table (what a
// previous run left), for removal.
std::vector<std::string> EgressDevicesListed(const std::string& listing);

// The nft script that makes the table match `entries` (kAll ones need
// nothing) and removes what `stale` devices had; DNS-learnt sets are made
// when missing and otherwise left as they are.
std::string BuildEgressScript(const std::vector<EgressEntry>& entries,
                              const std::vector<std::string>& stale);

class EgressFirewall {
 public:
  void Apply(const std::vector<EgressEntry>& entries);
  // Empties what `device`'s DNS set learnt: a device name can come back (a
  // pipeline's rerun), and must not inherit the previous sandbox's.
  void ForgetLearnt(const std::string& device);
  void Remove();  // the whole table; absent is fine

  static constexpr std::string_view kTable = "ephemera_egress";

 private:
  NftContext nft_;
};

}  // namespace ephemera
