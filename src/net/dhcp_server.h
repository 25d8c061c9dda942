// One dnsmasq per sandbox TAP, daemonized (so it survives a daemon restart
// and is adopted again) and found later through its pidfile. It serves DHCP:
// exactly the guest's address, the route and the DNS servers, on that TAP
// alone. DNS itself is off (port 0, no port 53 bound) unless the sandbox's
// egress allow-list needs it (DnsService).
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "core/ipv4.h"

namespace ephemera {

// DNS on the TAP's gateway, for an egress allow-list: only the allowed
// domains (and names under them) are forwarded, to `upstreams`, and the
// IPv4 addresses of their answers go into the nftables set `nftset`; every
// other name is NXDOMAIN, so no data leaves through queries either. DHCP
// then offers the gateway as the only DNS server.
struct DnsService {
  std::vector<Ipv4> upstreams;
  std::vector<std::string> domains;
  std::string nftset;  // dnsmasq's --nftset target (EgressNftsetTarget)
};

struct DhcpServerSpec {
  std::string dnsmasq_binary = "dnsmasq";
  std::string tap;
  Subnet30 subnet;
  std::vector<Ipv4> dns_servers;
  std::filesystem::path dir;  // pidfile, lease file and log live here
  std::optional<DnsService> dns = std::nullopt;
};

std::vector<std::string> BuildDnsmasqArgs(const DhcpServerSpec& spec);

// Starts dnsmasq and waits until it runs. kUnavailable if dnsmasq is not
// installed; kInternal quoting dnsmasq's own message otherwise.
void StartDhcpServer(const DhcpServerSpec& spec);
bool DhcpServerRunning(const std::filesystem::path& dir);
// Stops the dnsmasq of `dir`, if any (idempotent).
void StopDhcpServer(const std::filesystem::path& dir);

}  // namespace ephemera
