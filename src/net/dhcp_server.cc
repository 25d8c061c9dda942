#include "net/dhcp_server.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "core/error.h"
#include "core/subprocess.h"
#include "core/tracked_process.h"

namespace ephemera {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace {

fs::path Pidfile(const fs::path& dir) { return dir / "dnsmasq.pid"; }

}  // namespace

std::vector<std::string> BuildDnsmasqArgs(const DhcpServerSpec& spec) {
  const std::string guest = spec.subnet.guest().str();
  std::vector<std::string> args = {
      spec.dnsmasq_binary,
      "--conf-file=/dev/null",  // ignore /etc/dnsmasq.conf and friends
      spec.dns ? "--port=53" : "--port=0",
      "--no-resolv",
      "--no-hosts",
      "--interface=" + spec.tap,
      "--bind-interfaces",  // with one interface: SO_BINDTODEVICE on the DHCP socket
      "--except-interface=lo",
      fmt::format("--dhcp-range={},{},{},1h", guest, guest, Subnet30::kNetmask),
      "--dhcp-option=option:router," + spec.subnet.gateway().str(),
      "--dhcp-authoritative",
      "--no-ping",  // the /30 has one guest; probing it only delays the offer
      "--dhcp-leasefile=" + (spec.dir / "dnsmasq.leases").string(),
      "--pid-file=" + Pidfile(spec.dir).string(),
      "--log-facility=" + (spec.dir / "dnsmasq.log").string(),
      "--log-dhcp",
  };
  if (spec.dns) {
    args.push_back("--dhcp-option=option:dns-server," + spec.subnet.gateway().str());
    for (const std::string& domain : spec.dns->domains) {
      for (const Ipv4& upstream : spec.dns->upstreams) {
        args.push_back(fmt::format("--server=/{}/{}", domain, upstream.str()));
      }
    }
    args.push_back("--address=/#/");  // every name not forwarded above: NXDOMAIN
    if (!spec.dns->domains.empty()) {
      args.push_back(
          fmt::format("--nftset=/{}/{}", fmt::join(spec.dns->domains, "/"), spec.dns->nftset));
    }
  } else if (!spec.dns_servers.empty()) {
    std::vector<std::string> servers;
    for (const auto& s : spec.dns_servers) servers.push_back(s.str());
    args.push_back(fmt::format("--dhcp-option=option:dns-server,{}", fmt::join(servers, ",")));
  }
  return args;
}

void StartDhcpServer(const DhcpServerSpec& spec) {
  if (!FindProgram(spec.dnsmasq_binary)) {
    Fail(ErrorCode::kUnavailable, "'{}' not found (install the Debian package dnsmasq-base)",
         spec.dnsmasq_binary);
  }
  // dnsmasq forks into the background once its sockets are bound; its exit
  // status and stderr tell whether that worked.
  ProcessResult result = RunProcess(BuildDnsmasqArgs(spec), 15s);
  if (!result.ok()) {
    std::string detail = result.err;
    while (!detail.empty() && detail.back() == '\n') detail.pop_back();
    Fail(ErrorCode::kInternal, "dnsmasq for {} failed to start: {}", spec.tap, detail);
  }
  if (!TrackedProcess::Find(Pidfile(spec.dir), spec.dir)) {
    Fail(ErrorCode::kInternal, "dnsmasq for {} exited right after starting", spec.tap);
  }
}

bool DhcpServerRunning(const fs::path& dir) {
  return TrackedProcess::Find(Pidfile(dir), dir).has_value();
}

void StopDhcpServer(const fs::path& dir) {
  if (auto process = TrackedProcess::Find(Pidfile(dir), dir)) process->Stop(2s);
}

}  // namespace ephemera
