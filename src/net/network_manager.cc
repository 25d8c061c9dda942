#include "net/network_manager.h"

#include <sys/capability.h>

#include <spdlog/spdlog.h>
#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "core/error.h"
#include "core/fs.h"
#include "core/netdev.h"
#include "core/subprocess.h"
#include "net/dhcp_server.h"
#include "net/sysctl.h"
#include "net/tap.h"
#include "net/veth.h"

namespace ephemera {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr char kRecord[] = "network.json";

bool HasNetAdmin() {
  cap_t caps = cap_get_proc();
  if (!caps) return false;
  cap_flag_value_t value = CAP_CLEAR;
  cap_get_flag(caps, CAP_NET_ADMIN, CAP_EFFECTIVE, &value);
  cap_free(caps);
  return value == CAP_SET;
}

const char* ModeName(LinkMode mode) {
  switch (mode) {
    case LinkMode::kBridge:
      return "bridge";
    case LinkMode::kShared:
      return "shared";
    case LinkMode::kVeth:
      return "veth";
    case LinkMode::kTap:
      break;
  }
  return "tap";
}

LinkMode ParseMode(const std::string& name) {
  if (name == "bridge") return LinkMode::kBridge;
  if (name == "shared") return LinkMode::kShared;
  if (name == "tap") return LinkMode::kTap;
  if (name == "veth") return LinkMode::kVeth;
  Fail(ErrorCode::kFailedPrecondition, "recorded link mode '{}' is unknown", name);
}

json ToJson(const SandboxNetwork& n) {
  json j = {{"id", n.id.str()},
            {"tap", n.tap},
            {"subnet_index", n.subnet.index},
            {"subnet", n.subnet.cidr()},
            {"mac", n.mac},
            {"host_port", n.host_port},
            {"guest_port", n.guest_port},
            {"mode", ModeName(n.mode)}};
  if (n.shared_guest) j["shared_guest"] = n.shared_guest->str();
  j["egress"] = n.egress.Text();
  if (!n.peer.empty()) j["peer"] = n.peer;
  if (!n.exposed.empty()) {
    json ports = json::array();
    for (const ExposedPort& p : n.exposed) {
      ports.push_back({{"guest_port", p.guest_port}, {"host_port", p.host_port}});
    }
    j["exposed"] = ports;
  }
  return j;
}

SandboxNetwork FromJson(const json& j, const AddressPool& pool) {
  SandboxNetwork n{SandboxId::Parse(j.at("id").get<std::string>()),
                   j.at("tap").get<std::string>(),
                   {},
                   j.at("mac").get<std::string>(),
                   j.at("host_port").get<std::uint16_t>(),
                   j.at("guest_port").get<std::uint16_t>(),
                   ParseMode(j.value("mode", std::string("tap"))),
                   {}};
  if (j.contains("shared_guest"))
    n.shared_guest = Ipv4::Parse(j["shared_guest"].get<std::string>());
  n.peer = j.value("peer", std::string());
  // Records from before egress rules: what they had, all.
  if (auto egress = j.find("egress"); egress != j.end()) {
    try {
      n.egress = ParseEgress(egress->get<std::string>());
    } catch (const Error& e) {
      Fail(ErrorCode::kFailedPrecondition, "recorded egress: {}", e.what());
    }
  }
  if (auto ports = j.find("exposed"); ports != j.end()) {
    auto port_number = [](const json& p, const char* key) {
      const auto value = p.at(key).get<std::int64_t>();
      if (value < 1 || value > 65535) {
        Fail(ErrorCode::kFailedPrecondition, "recorded exposed port has {} {}", key, value);
      }
      return static_cast<std::uint16_t>(value);
    };
    for (const json& p : ports->get_ref<const json::array_t&>()) {
      ExposedPort port{port_number(p, "guest_port"), port_number(p, "host_port")};
      const bool twice = std::any_of(n.exposed.begin(), n.exposed.end(), [&](const ExposedPort& e) {
        return e.guest_port == port.guest_port;
      });
      if (twice || port.guest_port == n.guest_port) {
        Fail(ErrorCode::kFailedPrecondition, "recorded exposed port {} is there twice",
             port.guest_port);
      }
      n.exposed.push_back(port);
    }
  }
  if (n.mode == LinkMode::kVeth && n.peer.empty()) {
    Fail(ErrorCode::kFailedPrecondition, "recorded veth network names no peer");
  }
  if (n.mode == LinkMode::kShared) return n;
  Ipv4Cidr subnet = Ipv4Cidr::Parse(j.at("subnet").get<std::string>());
  auto index = pool.IndexOf(subnet.base);
  if (subnet.prefix != 30 || !index || *index != j.at("subnet_index").get<std::uint32_t>()) {
    Fail(ErrorCode::kFailedPrecondition, "recorded subnet {} is not in the configured pool",
         j.at("subnet").get<std::string>());
  }
  n.subnet = Subnet30{*index, subnet.base};
  return n;
}

}  // namespace

std::string NetworkRecordJson(const SandboxNetwork& network) {
  return ToJson(network).dump(2) + "\n";
}

SandboxNetwork ParseNetworkRecord(const std::string& text, const AddressPool& pool) {
  return FromJson(json::parse(text), pool);
}

std::string NetworkManager::MacFor(const SandboxId& id) {
  // Locally administered unicast (52:54:00 is QEMU's) + 3 bytes of the id.
  const std::string& s = id.str();
  return fmt::format("52:54:00:{}:{}:{}", s.substr(0, 2), s.substr(2, 2), s.substr(4, 2));
}

NetworkManager::NetworkManager(fs::path state_dir, NetworkConfig config,
                               std::function<bool(Ipv4)> admit_client)
    : net_dir_(state_dir / "net"), config_(std::move(config)), pool_(config_.pool) {
  if (!HasNetAdmin()) {
    Fail(ErrorCode::kPermissionDenied,
         "sandbox networking needs CAP_NET_ADMIN (run ephemerad as root or grant the capability)");
  }
  if (!FindProgram(config_.dnsmasq_binary)) {
    Fail(ErrorCode::kUnavailable,
         "config key 'network.dnsmasq_binary': '{}' not found (install the Debian package "
         "dnsmasq-base)",
         config_.dnsmasq_binary);
  }
  // Domain allow-lists need dnsmasq's --nftset (2.87 on, built with it).
  ProcessResult version =
      RunProcess({config_.dnsmasq_binary, "--version"}, std::chrono::seconds(10));
  dnsmasq_nftset_ = version.ok() && version.out.find(" nftset") != std::string::npos;
  if (!dnsmasq_nftset_) {
    spdlog::warn(
        "network: {} has no nftset support: egress allow-lists take addresses and CIDRs "
        "only, no domain names",
        config_.dnsmasq_binary);
  }
  if (config_.outbound_nat) {
    std::string previous = SetSysctl("net.ipv4.ip_forward", "1");
    spdlog::info(
        "network: outbound NAT on: net.ipv4.ip_forward=1 (was {}); guests reach public "
        "addresses only: private, link-local (cloud metadata), CGNAT ranges and this host's "
        "subnets stay closed unless network.nat_allow names them",
        previous);
  } else {
    spdlog::info("network: outbound NAT off: sandboxes reach only their gateway's DHCP");
  }
  ForwarderOptions forward;
  forward.listen_address = config_.forward_address;
  forward.ports = {config_.forward_port_first, config_.forward_port_last};
  forward.max_connections_per_source = config_.forward_connections_per_source;
  forward.admit = std::move(admit_client);
  forwarder_ = std::make_unique<PortForwarder>(std::move(forward));
  MakeDirs(net_dir_, 0700);
}

NetworkManager::~NetworkManager() = default;

void NetworkManager::Record(const SandboxNetwork& network) const {
  WriteFileAtomic(DirOf(network.id) / kRecord, NetworkRecordJson(network), 0600);
}

void NetworkManager::ApplyFirewallLocked() {
  std::vector<FirewallEntry> entries;
  // A shared bridge is the driver's to isolate (libvirt's nwfilter).
  for (const auto& [id, n] : networks_) {
    if (n.mode != LinkMode::kShared) {
      // Only a TAP's dnsmasq serves DNS (an allow-list's, BuildHostSide).
      entries.push_back(
          {n.tap, n.subnet, n.mode == LinkMode::kTap && n.egress.mode == EgressMode::kAllow});
    }
  }
  FirewallPolicy policy{config_.pool, config_.outbound_nat, {}, config_.nat_allow};
  if (config_.outbound_nat) policy.host_subnets = HostConnectedSubnets();
  // The egress table first: a new sandbox's restrictions exist before the
  // main table lets its traffic through.
  std::vector<EgressEntry> egress;
  for (const auto& [id, n] : networks_) {
    if (n.mode != LinkMode::kShared) egress.push_back({n.tap, n.egress});
  }
  egress_firewall_.Apply(egress);
  firewall_.Apply(policy, entries);
}

void CheckEgressForLink(LinkMode mode, const EgressPolicy& egress) {
  if (mode == LinkMode::kShared && egress.mode != EgressMode::kAll) {
    Fail(ErrorCode::kFailedPrecondition,
         "egress '{}' cannot be enforced on a shared bridge (network mode 'shared'): its owner's "
         "rules apply",
         EgressModeName(egress.mode));
  }
  if (mode != LinkMode::kTap && !egress.domains.empty()) {
    Fail(ErrorCode::kFailedPrecondition,
         "egress allow-lists with domain names need the daemon's own DNS, which only VM "
         "sandboxes on a TAP have; list addresses or CIDRs instead");
  }
}

// TAP, its sysctls and dnsmasq, each made only if missing (so Reconcile can
// call it on a half-present network, passing `report`). A veth pair is the
// container driver's to make (CreateContainerLink, once the container's
// namespace exists), never this: when Reconcile finds its host end absent,
// either the driver has not made it yet or the container that held the
// peer is gone; a pair made here would serve nobody.
void NetworkManager::BuildHostSide(const SandboxNetwork& n, NetworkReconcileReport* report) {
  if (n.mode != LinkMode::kTap && n.mode != LinkMode::kVeth) return;  // the VM driver's bridge
  if (n.mode == LinkMode::kVeth) {
    if (!report) return;
    if (!IsVethDevice(n.tap)) {
      spdlog::warn("network {}: veth {} is absent (container not started, or gone): not made",
                   n.id.str(), n.tap);
      report->lost.push_back(n.id);
      return;
    }
  } else if (!IsTunTapDevice(n.tap)) {
    CreateTap(n.tap, n.subnet.gateway());
    if (report) report->restored.push_back("TAP " + n.tap);
  }
  // Strict reverse-path filtering: a guest can only send from its own /30
  // (CreateContainerLink sets the same on a veth's host end).
  SetSysctl(fmt::format("net.ipv4.conf.{}.rp_filter", n.tap), "1");
  SetSysctl(fmt::format("net.ipv6.conf.{}.disable_ipv6", n.tap), "1");
  if (n.mode == LinkMode::kVeth) return;  // the container driver addresses the peer: no DHCP
  if (!DhcpServerRunning(DirOf(n.id))) {
    DhcpServerSpec dhcp{config_.dnsmasq_binary, n.tap,       n.subnet,
                        config_.dns_servers,    DirOf(n.id), std::nullopt};
    if (n.egress.mode == EgressMode::kAllow) {
      dhcp.dns = DnsService{config_.dns_servers, n.egress.domains, EgressNftsetTarget(n.tap)};
    }
    StartDhcpServer(dhcp);
    if (report) report->restored.push_back("dnsmasq for " + n.tap);
  }
}

SandboxNetwork NetworkManager::Setup(const SandboxId& id,
                                     const std::optional<DerivedSubnet>& derive, LinkMode mode,
                                     const EgressPolicy& egress) {
  CheckEgressForLink(mode, egress);
  if (!egress.domains.empty() && !dnsmasq_nftset_) {
    Fail(ErrorCode::kFailedPrecondition,
         "egress allow-lists with domain names need dnsmasq with nftset support (2.87 or later), "
         "which this host lacks ({}); list addresses or CIDRs instead",
         config_.dnsmasq_binary);
  }
  std::lock_guard lock(mutex_);
  if (networks_.count(id) || fs::exists(DirOf(id))) {
    Fail(ErrorCode::kAlreadyExists, "sandbox {} already has a network", id.str());
  }
  SandboxNetwork network{
      id,   derive ? TapNameForRun(derive->run_id, derive->machine) : TapNameFor(id),
      {},   MacFor(id),
      0,    22,
      mode, {}};
  if (mode == LinkMode::kVeth) network.peer = VethPeerNameFor(network.tap);
  network.egress = egress;
  bool checked = false;  // past the checks: from here on, whatever is there is ours
  try {
    if (mode != LinkMode::kShared) {
      network.subnet =
          derive ? pool_.AllocateDerived(id, derive->run_id, derive->machine) : pool_.Allocate(id);
      // A veth's host end is made later (CreateContainerLink): a clash
      // found now fails the sandbox before anything starts.
      if (InterfaceExists(network.tap)) {
        Fail(ErrorCode::kAlreadyExists,
             "interface name clash: an interface named {} already exists", network.tap);
      }
    }
    checked = true;
    MakeDirs(DirOf(id), 0700);
    Record(network);  // before the host is touched: a crash from here on is reconciled
    if (egress.mode == EgressMode::kAllow) egress_firewall_.ForgetLearnt(network.tap);
    BuildHostSide(network, nullptr);
    networks_.insert_or_assign(id, network);
    if (mode != LinkMode::kShared) {
      ApplyFirewallLocked();
      network.host_port = forwarder_->Open(id, network.guest(), network.guest_port);
      networks_.insert_or_assign(id, network);
      Record(network);
    }
  } catch (...) {
    // Nothing made yet: a full teardown would delete the interface that
    // clashed, which is someone else's.
    if (!checked) {
      pool_.Release(id);
      throw;
    }
    try {
      TeardownLocked(id);
    } catch (const Error& e) {
      spdlog::error("network {}: cleanup after failed setup: {}", id.str(), e.what());
    }
    throw;
  }
  return network;
}

std::uint16_t NetworkManager::SetGuestAddress(const SandboxId& id, Ipv4 guest) {
  std::lock_guard lock(mutex_);
  auto it = networks_.find(id);
  if (it == networks_.end()) Fail(ErrorCode::kNotFound, "sandbox {} has no network", id.str());
  SandboxNetwork& n = it->second;
  if (n.mode != LinkMode::kShared) {
    Fail(ErrorCode::kInternal, "sandbox {}: only a shared bridge learns its address", id.str());
  }
  if (n.host_port != 0) forwarder_->Close(id, n.guest_port);
  n.shared_guest = guest;
  n.host_port = forwarder_->Open(id, guest, n.guest_port);
  Record(n);
  return n.host_port;
}

std::uint16_t NetworkManager::ExposePort(const SandboxId& id, std::uint16_t guest_port,
                                         std::size_t limit) {
  std::lock_guard lock(mutex_);
  auto it = networks_.find(id);
  if (it == networks_.end()) Fail(ErrorCode::kNotFound, "sandbox {} has no network", id.str());
  SandboxNetwork& n = it->second;
  if (n.host_port == 0) {
    Fail(ErrorCode::kFailedPrecondition, "sandbox {}: its address is not known yet", id.str());
  }
  for (const ExposedPort& p : n.exposed) {
    if (p.guest_port == guest_port) {
      Fail(ErrorCode::kAlreadyExists, "sandbox {}: port {} is exposed already, on host port {}",
           id.str(), guest_port, p.host_port);
    }
  }
  if (n.exposed.size() >= limit) {
    Fail(ErrorCode::kFailedPrecondition,
         "sandbox {}: its limit of {} exposed ports (limits.max_exposed_ports) is reached",
         id.str(), limit);
  }
  const std::uint16_t host_port = forwarder_->Open(id, n.guest(), guest_port);
  SandboxNetwork updated = n;
  updated.exposed.push_back({guest_port, host_port});
  std::sort(updated.exposed.begin(), updated.exposed.end(),
            [](const ExposedPort& a, const ExposedPort& b) { return a.guest_port < b.guest_port; });
  try {
    Record(updated);  // a restart reopens it
  } catch (...) {
    forwarder_->Close(id, guest_port);
    throw;
  }
  n = std::move(updated);
  return host_port;
}

void NetworkManager::UnexposePort(const SandboxId& id, std::uint16_t guest_port) {
  std::lock_guard lock(mutex_);
  auto it = networks_.find(id);
  if (it == networks_.end()) Fail(ErrorCode::kNotFound, "sandbox {} has no network", id.str());
  SandboxNetwork& n = it->second;
  auto port = std::find_if(n.exposed.begin(), n.exposed.end(),
                           [&](const ExposedPort& p) { return p.guest_port == guest_port; });
  if (port == n.exposed.end()) {
    Fail(ErrorCode::kNotFound, "sandbox {}: port {} is not exposed", id.str(), guest_port);
  }
  SandboxNetwork updated = n;
  updated.exposed.erase(updated.exposed.begin() + (port - n.exposed.begin()));
  // Recorded first: a record that cannot be written leaves the port open
  // as recorded, rather than closed now and reopened by the next restart.
  Record(updated);
  forwarder_->Close(id, guest_port);
  n = std::move(updated);
}

void NetworkManager::Teardown(const SandboxId& id) {
  std::lock_guard lock(mutex_);
  TeardownLocked(id);
}

void NetworkManager::TeardownLocked(const SandboxId& id) {
  forwarder_->Close(id);
  StopDhcpServer(DirOf(id));
  // The TAP's name: as kept, else as recorded (a pipeline machine's is not
  // the id's), else the id's.
  std::string tap = TapNameFor(id);
  if (auto it = networks_.find(id); it != networks_.end()) {
    tap = it->second.tap;
  } else {
    try {
      tap = ParseNetworkRecord(ReadFile(DirOf(id) / kRecord), pool_).tap;
    } catch (const std::exception&) {
      // unreadable or absent: the id's name is all there is to go by
    }
  }
  if (networks_.erase(id)) {
    // The rest of the teardown goes on regardless: its pieces are ours to
    // remove, and the next change or restart applies the rules again.
    try {
      ApplyFirewallLocked();
    } catch (const Error& e) {
      spdlog::error("network {}: firewall not updated on teardown: {}", id.str(), e.what());
    }
  }
  // A TAP or veth is ours to delete; a bridge of that name is the VM
  // driver's (libvirt removes its network's own). Deleting a veth's host
  // end deletes its peer too, inside the container's namespace; absent is
  // the usual case, the kernel having removed the pair with that namespace
  // (asynchronously: it may still be here for a moment, and deleting it
  // then is fine).
  if (IsTunTapDevice(tap)) {
    DeleteTap(tap);
  } else if (IsVethDevice(tap)) {
    DeleteVeth(tap);
  }
  pool_.Release(id);
  RemoveAll(DirOf(id));
}

std::optional<SandboxNetwork> NetworkManager::Find(const SandboxId& id) const {
  std::lock_guard lock(mutex_);
  auto it = networks_.find(id);
  if (it == networks_.end()) return std::nullopt;
  return it->second;
}

NetworkActivity NetworkManager::Activity(const SandboxId& id) const {
  std::optional<SandboxNetwork> network = Find(id);
  if (!network) return {};
  NetworkActivity activity;
  activity.connections = forwarder_->ConnectionCount(id);
  // The device's own counters; a shared bridge's (kShared) are everyone's.
  if (network->mode != LinkMode::kShared && !network->tap.empty()) {
    auto counter = [&](const char* name) {
      std::ifstream in("/sys/class/net/" + network->tap + "/statistics/" + name);
      std::uint64_t bytes = 0;
      in >> bytes;
      return bytes;
    };
    // The host side's transmit is what the guest receives.
    activity.received_bytes = counter("tx_bytes");
    activity.sent_bytes = counter("rx_bytes");
    activity.traffic_bytes = activity.received_bytes + activity.sent_bytes;
  }
  return activity;
}

std::vector<SandboxNetwork> NetworkManager::List() const {
  std::lock_guard lock(mutex_);
  std::vector<SandboxNetwork> list;
  for (const auto& [id, n] : networks_) list.push_back(n);
  return list;
}

NetworkReconcileReport NetworkManager::Reconcile() {
  std::lock_guard lock(mutex_);
  NetworkReconcileReport report;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(net_dir_, ec)) {
    std::string name = entry.path().filename().string();
    if (!SandboxId::IsValid(name)) continue;
    SandboxId id = SandboxId::Parse(name);
    if (networks_.count(id)) continue;
    try {
      SandboxNetwork n = ParseNetworkRecord(ReadFile(entry.path() / kRecord), pool_);
      if (n.id != id) Fail(ErrorCode::kFailedPrecondition, "record names sandbox {}", n.id.str());
      if (n.mode != LinkMode::kShared) n.subnet = pool_.Reserve(id, n.subnet.index);
      BuildHostSide(n, &report);
      networks_.insert_or_assign(id, n);
      if (n.host_port != 0) {
        std::optional<std::string> ssh_moved;
        try {
          forwarder_->Open(id, n.guest(), n.guest_port, n.host_port);
        } catch (const Error& e) {
          ssh_moved = e.what();  // a new port, once the recorded ones are back
        }
        // Exposed ports come back on their host ports, or are dropped
        // (logged) when someone took one meanwhile: the caller asks anew.
        std::vector<ExposedPort> reopened;
        for (const ExposedPort& p : n.exposed) {
          try {
            forwarder_->Open(id, n.guest(), p.guest_port, p.host_port);
            reopened.push_back(p);
          } catch (const Error& e) {
            report.removed.push_back(fmt::format("exposed port {} of {} (host port {}: {})",
                                                 p.guest_port, id.str(), p.host_port, e.what()));
          }
        }
        n.exposed = std::move(reopened);
        if (ssh_moved) {
          // Someone took the port while we were down: take a new one.
          n.host_port = forwarder_->Open(id, n.guest(), n.guest_port);
          report.restored.push_back(fmt::format("forward for {} moved to port {} ({})", id.str(),
                                                n.host_port, *ssh_moved));
        }
        networks_.insert_or_assign(id, n);
        Record(n);
      }
    } catch (const std::exception& e) {
      // Unreadable or half-written: nothing can use it, so remove it.
      report.removed.push_back(fmt::format("network {} ({})", id.str(), e.what()));
      TeardownLocked(id);
    }
  }
  std::set<std::string> known;
  for (const auto& [id, n] : networks_) known.insert(n.tap);
  for (const auto& tap : ListEphemeraTaps()) {
    if (!known.count(tap)) {
      DeleteTap(tap);
      report.removed.push_back("TAP " + tap);
    }
  }
  for (const auto& veth : ListEphemeraVeths()) {
    // A stray pair with both ends named as ours: the first deletion takes both.
    if (known.count(veth) || !IsVethDevice(veth)) continue;
    DeleteVeth(veth);
    report.removed.push_back("veth " + veth);
  }
  ApplyFirewallLocked();
  return report;
}

void NetworkManager::TeardownAll() {
  std::lock_guard lock(mutex_);
  std::vector<SandboxId> ids;
  for (const auto& [id, n] : networks_) ids.push_back(id);
  for (const auto& id : ids) TeardownLocked(id);
  // Both tables, even when the first cannot go.
  std::optional<Error> failed;
  try {
    firewall_.Remove();
  } catch (const Error& e) {
    failed = e;
  }
  egress_firewall_.Remove();
  if (failed) throw *failed;
}

}  // namespace ephemera
