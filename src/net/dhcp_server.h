// One dnsmasq per sandbox TAP, daemonized (so it survives a daemon restart
// and is adopted again) and found later through its pidfile. It serves DHCP
// only: exactly the guest's address, the route and the DNS servers, on that
// TAP alone; DNS itself is off (port 0), so it binds no port 53.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "core/ipv4.h"

namespace ephemera {

struct DhcpServerSpec {
  std::string dnsmasq_binary = "dnsmasq";
  std::string tap;
  Subnet30 subnet;
  std::vector<Ipv4> dns_servers;
  std::filesystem::path dir;  // pidfile, lease file and log live here
};

std::vector<std::string> BuildDnsmasqArgs(const DhcpServerSpec& spec);

// Starts dnsmasq and waits until it runs. kUnavailable if dnsmasq is not
// installed; kInternal quoting dnsmasq's own message otherwise.
void StartDhcpServer(const DhcpServerSpec& spec);
bool DhcpServerRunning(const std::filesystem::path& dir);
// Stops the dnsmasq of `dir`, if any (idempotent).
void StopDhcpServer(const std::filesystem::path& dir);

}  // namespace ephemera
