#include "vm/libvirt/libvirt_driver.h"

#include <libvirt/virterror.h>
#include <sys/stat.h>
#include <unistd.h>
#include <algorithm>

#include <spdlog/spdlog.h>
#include <nlohmann/json.hpp>
#include <regex>
#include <thread>

#include "core/error.h"
#include "core/fs.h"
#include "core/subprocess.h"
#include "vm/libvirt/domain_xml.h"
#include "vm/qemu/host.h"

namespace ephemera {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace {

// RAII for the handles libvirt hands out.
struct DomainFree {
  void operator()(virDomainPtr d) const { virDomainFree(d); }
};
struct NetworkFree {
  void operator()(virNetworkPtr n) const { virNetworkFree(n); }
};
struct FilterFree {
  void operator()(virNWFilterPtr f) const { virNWFilterFree(f); }
};
using Domain = std::unique_ptr<virDomain, DomainFree>;
using Network = std::unique_ptr<virNetwork, NetworkFree>;
using Filter = std::unique_ptr<virNWFilter, FilterFree>;

struct FreeString {
  void operator()(char* s) const { std::free(s); }
};
using LibvirtString = std::unique_ptr<char, FreeString>;

fs::path Require(const std::string& name, const std::string& package) {
  auto path = FindProgram(name);
  if (!path) {
    Fail(ErrorCode::kUnavailable, "'{}' not found (install the Debian package {})", name, package);
  }
  return fs::absolute(*path);
}

// libvirt's QEMU runs as its own user (libvirt-qemu): everything it opens by
// path must be reachable for others.
void RequireReachable(const fs::path& file, const std::string& what) {
  struct stat st {};
  for (fs::path dir = fs::absolute(file).parent_path(); !dir.empty(); dir = dir.parent_path()) {
    if (::stat(dir.c_str(), &st) != 0 || (st.st_mode & S_IXOTH) == 0) {
      Fail(ErrorCode::kFailedPrecondition,
           "{} {} is not reachable by libvirt's QEMU user: folder {} needs o+x", what,
           file.string(), dir.string());
    }
    if (dir == dir.parent_path()) break;
  }
}

VmState StateOf(int state) {
  switch (state) {
    case VIR_DOMAIN_RUNNING:
    case VIR_DOMAIN_BLOCKED:
      return VmState::kRunning;
    case VIR_DOMAIN_PAUSED:
    case VIR_DOMAIN_PMSUSPENDED:
      return VmState::kPaused;
    default:
      return VmState::kShutoff;
  }
}

// The first <ip address=... netmask|prefix=...> of a network's XML.
std::optional<std::pair<Ipv4, int>> FirstIp(const std::string& xml) {
  std::smatch m;
  static const std::regex with_netmask(
      R"(<ip[^>]*address=['"]([0-9.]+)['"][^>]*netmask=['"]([0-9.]+)['"])");
  static const std::regex with_prefix(
      R"(<ip[^>]*address=['"]([0-9.]+)['"][^>]*prefix=['"]([0-9]+)['"])");
  if (std::regex_search(xml, m, with_netmask)) {
    return std::pair{Ipv4::Parse(m[1].str()), std::popcount(Ipv4::Parse(m[2].str()).value)};
  }
  if (std::regex_search(xml, m, with_prefix)) {
    return std::pair{Ipv4::Parse(m[1].str()), std::stoi(m[2].str())};
  }
  return std::nullopt;
}

}  // namespace

std::string LibvirtDriver::NetworkNameFor(const SandboxId& id) { return "eph-" + id.ShortName(); }
std::string LibvirtDriver::FilterNameFor(const SandboxId& id) { return "ephemera-" + id.str(); }

LibvirtDriver::LibvirtDriver(LibvirtDriverOptions options) : options_(std::move(options)) {
  qemu_img_ = Require(options_.vm.qemu_img_binary, "qemu-utils");
  emulator_ = Require(options_.vm.qemu_binary, "qemu-system-x86");
  if (options_.accel.accel == Accel::kTcg) tsc_khz_ = HostTscKhz();
  // Overlays live where libvirt's QEMU can reach them: the state folder
  // becomes searchable (not listable) by others, its files stay 0600.
  MakeDirs(options_.state_dir / "libvirt", 0711);
  ::chmod(options_.state_dir.c_str(), 0711);
  ::chmod((options_.state_dir / "libvirt").c_str(), 0711);
  RequireReachable(options_.state_dir / "libvirt" / "x", "the overlay folder");
  connection_ = std::make_unique<LibvirtConnection>(options_.vm.libvirt_uri);
  teardown_ = std::make_unique<DeferredTeardown>();
  if (options_.vm.libvirt_network_mode == LibvirtNetworkMode::kShared) {
    shared_network_ = SharedNetworkName();
  }
}

LibvirtDriver::~LibvirtDriver() = default;

std::string LibvirtDriver::SharedNetworkName() const {
  // network.bridge names a libvirt network, or the bridge of one (virbr0).
  const std::string& wanted = options_.shared_network;
  auto conn = connection_->Get();
  Network net(virNetworkLookupByName(conn.get(), wanted.c_str()));
  if (!net) {
    virResetLastError();
    virNetworkPtr* all = nullptr;
    int n = virConnectListAllNetworks(conn.get(), &all, 0);
    for (int i = 0; i < n; ++i) {
      Network candidate(all[i]);
      LibvirtString bridge(virNetworkGetBridgeName(candidate.get()));
      if (!net && bridge && wanted == bridge.get()) net = std::move(candidate);
    }
    std::free(all);
    virResetLastError();
  }
  if (!net) {
    Fail(ErrorCode::kNotFound,
         "config key 'network.bridge': libvirt has no network or bridge named '{}' (virsh "
         "net-list --all)",
         wanted);
  }
  if (virNetworkIsActive(net.get()) != 1) {
    Fail(ErrorCode::kFailedPrecondition, "libvirt network '{}' is not active (virsh net-start {})",
         virNetworkGetName(net.get()), virNetworkGetName(net.get()));
  }
  LibvirtString xml(virNetworkGetXMLDesc(net.get(), 0));
  auto ip = xml ? FirstIp(xml.get()) : std::nullopt;
  if (!ip) {
    Fail(ErrorCode::kFailedPrecondition, "libvirt network '{}' has no IPv4 address and DHCP",
         virNetworkGetName(net.get()));
  }
  auto* self = const_cast<LibvirtDriver*>(this);
  const std::uint32_t mask = ip->second == 0 ? 0 : ~0u << (32 - ip->second);
  self->shared_subnet_ = Ipv4Cidr{Ipv4{ip->first.value & mask}, ip->second};
  self->shared_gateway_ = ip->first;
  LibvirtString bridge(virNetworkGetBridgeName(net.get()));
  self->shared_bridge_ = bridge ? bridge.get() : "";
  spdlog::info("libvirt: sandboxes share network {} (bridge {}, {})", virNetworkGetName(net.get()),
               shared_bridge_, shared_subnet_->str());
  return virNetworkGetName(net.get());
}

LinkMode LibvirtDriver::link_mode() const {
  return options_.vm.libvirt_network_mode == LibvirtNetworkMode::kShared ? LinkMode::kShared
                                                                         : LinkMode::kBridge;
}

fs::path LibvirtDriver::DirOf(const SandboxId& id) const {
  return options_.state_dir / "libvirt" / id.str();
}

void LibvirtDriver::Validate(const VmSpec& spec) const {
  if (spec.memory_mib < 128 || spec.memory_mib > HostMemoryMib()) {
    Fail(ErrorCode::kInvalidArgument, "memory_mib {} is out of range [128, {}]", spec.memory_mib,
         HostMemoryMib());
  }
  if (spec.vcpus < 1 || spec.vcpus > HostCpuCount()) {
    Fail(ErrorCode::kInvalidArgument, "vcpus {} is out of range [1, {}]", spec.vcpus,
         HostCpuCount());
  }
  const Image& image = spec.image;
  for (const ImageFile* file : image.BootFiles()) {
    struct stat st {};
    if (::stat(file->path.c_str(), &st) != 0 || (st.st_mode & S_IROTH) == 0) {
      Fail(ErrorCode::kFailedPrecondition,
           "image '{}' file {} is not readable by libvirt's QEMU user (it needs o+r)", image.name,
           file->path.string());
    }
    RequireReachable(file->path, "image file");
  }
  if (!spec.nic) Fail(ErrorCode::kInvalidArgument, "a libvirt sandbox needs a NIC");
  if (link_mode() == LinkMode::kBridge && !spec.nic->subnet) {
    Fail(ErrorCode::kInvalidArgument, "an isolated libvirt network needs the sandbox's /30");
  }
}

void LibvirtDriver::CreateNetwork(const VmSpec& spec) {
  LibvirtNetwork n{NetworkNameFor(spec.id), spec.nic->tap,         *spec.nic->subnet,
                   spec.nic->mac,           spec.nic->dns_servers, spec.nic->outbound_nat};
  auto conn = connection_->Get();
  Network net(virNetworkCreateXML(conn.get(), BuildNetworkXml(n).c_str()));
  if (!net) FailLibvirt(fmt::format("cannot create libvirt network {}", n.name));
}

void LibvirtDriver::CreateFilter(const VmSpec& spec) {
  auto conn = connection_->Get();
  Filter filter(virNWFilterDefineXML(
      conn.get(),
      BuildIsolationFilterXml(FilterNameFor(spec.id), *shared_subnet_, *shared_gateway_).c_str()));
  if (!filter) FailLibvirt(fmt::format("cannot define network filter {}", FilterNameFor(spec.id)));
}

VmInfo LibvirtDriver::Start(const VmSpec& spec) {
  Validate(spec);
  const fs::path dir = DirOf(spec.id);
  if (::mkdir(dir.c_str(), 0711) != 0) {
    if (errno == EEXIST)
      Fail(ErrorCode::kAlreadyExists, "a VM with id {} already exists", spec.id.str());
    FailErrno(fmt::format("cannot create {}", dir.string()), errno);
  }
  try {
    LibvirtDomain domain;
    domain.spec = &spec;
    domain.kvm = options_.accel.accel == Accel::kKvm;
    domain.emulator = emulator_.string();
    domain.overlay = dir / "disk.qcow2";
    domain.serial_log = dir / "serial.log";
    domain.tsc_khz = tsc_khz_;
    // The image's need raises the configured cache, as under the qemu driver.
    domain.tcg_tb_size_mib = std::max(options_.vm.tcg_tb_size_mib, spec.image.tcg_tb_size_mib);
    if (spec.image.format == ImageFormat::kKernel) {
      RunChecked({qemu_img_.string(), "create", "-q", "-f", "qcow2", "-F",
                  std::string(DiskFormatName(spec.image.rootfs_format)), "-b",
                  spec.image.rootfs->path.string(), domain.overlay.string()});
    }
    if (link_mode() == LinkMode::kBridge) {
      // A /30 is reused as soon as its sandbox is destroyed: its old
      // network must be gone first.
      if (!teardown_->WaitIdle(std::chrono::seconds(10))) {
        Fail(ErrorCode::kUnavailable,
             "libvirt has not yet removed the networks of destroyed sandboxes");
      }
      CreateNetwork(spec);
      domain.network = NetworkNameFor(spec.id);
    } else {
      CreateFilter(spec);
      domain.network = shared_network_;
      domain.filter = FilterNameFor(spec.id);
    }
    // Secret files wait for QEMU, which reads them as it starts (libvirt
    // hands each to its user), and go as soon as it has.
    // Gone on every way out, whatever throws before QEMU has read them.
    struct SecretFiles {
      const std::vector<std::pair<std::string, fs::path>>& files;
      ~SecretFiles() {
        for (const auto& secret : files) ::unlink(secret.second.c_str());
      }
    } secret_files{domain.secret_files};
    for (const GuestFile& file : spec.guest_files) {
      if (!file.secret) continue;
      fs::path path = dir / fmt::format("fw_cfg-{}", domain.secret_files.size());
      WriteFileAtomic(path, file.content, 0600);
      domain.secret_files.emplace_back(file.name, path);
    }
    WriteFileAtomic(dir / "domain.xml", BuildDomainXml(domain), 0600);
    auto conn = connection_->Get();
    Domain dom(virDomainCreateXML(conn.get(), ReadFile(dir / "domain.xml").c_str(), 0));
    if (!dom) FailLibvirt(fmt::format("libvirt refused to start domain {}", spec.id.str()));
    WriteFileAtomic(dir / "mac", spec.nic->mac, 0600);
    spdlog::info("vm {}: started as libvirt domain ({} MiB, {} vCPU, {}, network {})",
                 spec.id.str(), spec.memory_mib, spec.vcpus, domain.kvm ? "kvm" : "qemu",
                 domain.network);
    VmInfo info = Inspect(spec.id);
    info.network = domain.network;
    return info;
  } catch (...) {
    DestroyAfterFailedStart(spec.id);
    throw;
  }
}

VmInfo LibvirtDriver::Inspect(const SandboxId& id) {
  const fs::path dir = DirOf(id);
  VmInfo info{id, VmState::kShutoff, 0, dir, dir / "serial.log", {}, {}};
  auto conn = connection_->Get();
  Domain dom(virDomainLookupByUUIDString(conn.get(), id.str().c_str()));
  if (!dom) {
    if (!LastLibvirtErrorIsNotFound()) {
      connection_->Broken();
      FailLibvirt(fmt::format("cannot look up domain {}", id.str()));
    }
    // A transient domain that stopped is gone from libvirt: shut off if we
    // still hold its files, unknown otherwise.
    std::error_code ec;
    if (!fs::is_directory(dir, ec)) Fail(ErrorCode::kNotFound, "no VM with id {}", id.str());
    return info;
  }
  int state = 0, reason = 0;
  if (virDomainGetState(dom.get(), &state, &reason, 0) < 0) {
    FailLibvirt(fmt::format("cannot read the state of domain {}", id.str()));
  }
  info.state = StateOf(state);
  if (info.state != VmState::kShutoff) {
    LibvirtString xml(virDomainGetXMLDesc(dom.get(), 0));
    if (xml) info.agent_socket = AgentSocketInDomainXml(xml.get());
    // Local libvirt keeps QEMU's pid here (for figures only; 0 elsewhere).
    try {
      info.pid = std::stoi(ReadFile("/run/libvirt/qemu/" + id.str() + ".pid"));
    } catch (const std::exception&) {
    }
  }
  return info;
}

std::optional<ResourceUsage> LibvirtDriver::Usage(const SandboxId& id) {
  auto conn = connection_->Get();
  Domain dom(virDomainLookupByUUIDString(conn.get(), id.str().c_str()));
  if (!dom) return std::nullopt;
  virDomainInfo info{};
  if (virDomainGetInfo(dom.get(), &info) < 0 || info.state != VIR_DOMAIN_RUNNING) {
    return std::nullopt;
  }
  ResourceUsage usage;
  usage.cpu_seconds = static_cast<double>(info.cpuTime) / 1e9;
  // QEMU's resident memory; the guest's size where the driver does not say.
  usage.memory_bytes = std::uint64_t{info.memory} * 1024;
  virDomainMemoryStatStruct stats[VIR_DOMAIN_MEMORY_STAT_NR];
  const int n = virDomainMemoryStats(dom.get(), stats, VIR_DOMAIN_MEMORY_STAT_NR, 0);
  for (int i = 0; i < n; ++i) {
    if (stats[i].tag == VIR_DOMAIN_MEMORY_STAT_RSS) usage.memory_bytes = stats[i].val * 1024;
  }
  return usage;
}

std::string LibvirtDriver::DescribeXml(const SandboxId& id) {
  auto conn = connection_->Get();
  Domain dom(virDomainLookupByUUIDString(conn.get(), id.str().c_str()));
  if (!dom) return {};
  char* xml = virDomainGetXMLDesc(dom.get(), 0);  // no secure flag: no secrets in it
  if (!xml) return {};
  std::string text(xml);
  free(xml);
  return text;
}

bool LibvirtDriver::Shutdown(const SandboxId& id, std::chrono::milliseconds timeout) {
  auto conn = connection_->Get();
  Domain dom(virDomainLookupByUUIDString(conn.get(), id.str().c_str()));
  if (!dom) {
    if (LastLibvirtErrorIsNotFound()) return true;
    FailLibvirt(fmt::format("cannot look up domain {}", id.str()));
  }
  if (virDomainShutdown(dom.get()) < 0) {
    virResetLastError();
    return false;
  }
  for (auto deadline = std::chrono::steady_clock::now() + timeout;
       std::chrono::steady_clock::now() < deadline; std::this_thread::sleep_for(100ms)) {
    int state = 0, reason = 0;
    if (virDomainGetState(dom.get(), &state, &reason, 0) < 0) {
      virResetLastError();
      return true;  // transient and gone
    }
    if (StateOf(state) == VmState::kShutoff) return true;
  }
  return false;
}

void LibvirtDriver::Destroy(const SandboxId& id) {
  // Throws while libvirt is unreachable: nothing of the sandbox is removed
  // then, so no running domain loses its files.
  auto conn = connection_->Get();
  const auto t0 = std::chrono::steady_clock::now();
  if (Domain dom{virDomainLookupByUUIDString(conn.get(), id.str().c_str())}) {
    // libvirt sends SIGTERM, then looks again every 200 ms (its
    // virProcessKillPainfully): a destroy takes at least that.
    if (virDomainDestroy(dom.get()) < 0 && !LastLibvirtErrorIsGone()) {
      FailLibvirt(fmt::format("cannot destroy domain {}", id.str()));
    }
  } else if (!LastLibvirtErrorIsNotFound()) {
    FailLibvirt(fmt::format("cannot look up domain {}", id.str()));
  }
  // The guest is gone; its network, filter and files follow off this thread.
  teardown_->Add(id, [this, id] { TearDownRest(id); });
  spdlog::debug(
      "vm {}: libvirt domain destroyed in {} ms", id.str(),
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0)
          .count());
}

void LibvirtDriver::TearDownRest(const SandboxId& id) {
  auto conn = connection_->Get();
  if (Network net{virNetworkLookupByName(conn.get(), NetworkNameFor(id).c_str())}) {
    if (virNetworkDestroy(net.get()) < 0 && !LastLibvirtErrorIsGone()) {
      FailLibvirt(fmt::format("cannot remove libvirt network {}", NetworkNameFor(id)));
    }
  } else if (!LastLibvirtErrorIsNotFound()) {
    FailLibvirt(fmt::format("cannot look up libvirt network {}", NetworkNameFor(id)));
  }
  if (Filter filter{virNWFilterLookupByName(conn.get(), FilterNameFor(id).c_str())}) {
    if (virNWFilterUndefine(filter.get()) < 0 && !LastLibvirtErrorIsNotFound()) {
      FailLibvirt(fmt::format("cannot remove network filter {}", FilterNameFor(id)));
    }
  } else {
    virResetLastError();
  }
  // Last: while the folder is there, List (and so reconcile) knows the id.
  RemoveAll(DirOf(id));
}

bool LibvirtDriver::TeardownsIdle(std::chrono::milliseconds timeout) {
  return teardown_->WaitIdle(timeout);
}

std::vector<SandboxId> LibvirtDriver::List() {
  std::set<SandboxId> ids;
  auto conn = connection_->Get();
  virDomainPtr* domains = nullptr;
  int n = virConnectListAllDomains(conn.get(), &domains, 0);
  if (n < 0) FailLibvirt("cannot list libvirt domains");
  const std::string uri(kLibvirtMetadataUri);
  for (int i = 0; i < n; ++i) {
    Domain dom(domains[i]);
    // Only domains carrying ephemera's metadata are ours.
    LibvirtString metadata(
        virDomainGetMetadata(dom.get(), VIR_DOMAIN_METADATA_ELEMENT, uri.c_str(), 0));
    if (!metadata) {
      virResetLastError();
      continue;
    }
    char uuid[VIR_UUID_STRING_BUFLEN] = {};
    if (virDomainGetUUIDString(dom.get(), uuid) == 0 && SandboxId::IsValid(uuid)) {
      ids.insert(SandboxId::Parse(uuid));
    }
  }
  std::free(domains);
  // Half-made ones: files (and perhaps a network) but no domain.
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(options_.state_dir / "libvirt", ec)) {
    std::string name = entry.path().filename().string();
    if (entry.is_directory() && SandboxId::IsValid(name)) ids.insert(SandboxId::Parse(name));
  }
  return {ids.begin(), ids.end()};
}

void LibvirtDriver::OnStopped(std::function<void(const SandboxId&)> listener) {
  if (!listener) return connection_->OnStopped({});
  connection_->OnStopped([listener = std::move(listener)](const std::string& uuid) {
    if (SandboxId::IsValid(uuid)) listener(SandboxId::Parse(uuid));
  });
}

std::string LibvirtDriver::Health() const { return connection_->Health(); }

Ipv4 LibvirtDriver::WaitForAddress(const SandboxId& id, std::chrono::milliseconds timeout) {
  const std::string mac = ReadFile(DirOf(id) / "mac");
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    auto conn = connection_->Get();
    Network net(virNetworkLookupByName(conn.get(), shared_network_.c_str()));
    if (!net) FailLibvirt(fmt::format("cannot look up libvirt network {}", shared_network_));
    virNetworkDHCPLeasePtr* leases = nullptr;
    int n = virNetworkGetDHCPLeases(net.get(), mac.c_str(), &leases, 0);
    std::optional<Ipv4> found;
    for (int i = 0; i < n; ++i) {
      if (!found && leases[i]->type == VIR_IP_ADDR_TYPE_IPV4 && leases[i]->ipaddr) {
        found = Ipv4::Parse(leases[i]->ipaddr);
      }
      virNetworkDHCPLeaseFree(leases[i]);
    }
    std::free(leases);
    if (n < 0) virResetLastError();
    if (!found && !shared_bridge_.empty()) {
      // As Anweddol reads them: dnsmasq's status file of the bridge.
      try {
        auto status = nlohmann::json::parse(
            ReadFile("/var/lib/libvirt/dnsmasq/" + shared_bridge_ + ".status"));
        for (const auto& lease : status) {
          if (lease.value("mac-address", "") == mac) {
            found = Ipv4::Parse(lease.value("ip-address", ""));
          }
        }
      } catch (const std::exception&) {
      }
    }
    if (found) return *found;
    if (std::chrono::steady_clock::now() > deadline) {
      Fail(ErrorCode::kTimeout, "sandbox {} got no address from libvirt network {} within {} ms",
           id.str(), shared_network_, timeout.count());
    }
    std::this_thread::sleep_for(100ms);
  }
}

}  // namespace ephemera
