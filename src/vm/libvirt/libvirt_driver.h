// The libvirt driver: each sandbox is one transient libvirt domain named by
// its id (nothing stays defined after destroy), so operators see and manage
// sandboxes with virsh. Networking, by configuration:
//  - isolated: a transient libvirt network per sandbox on its /30 of
//    ephemera's pool, DHCP for exactly its MAC (ephemera's nftables rules
//    and port forward apply to its bridge as to a TAP);
//  - shared: every sandbox on one libvirt network (Anweddol's virbr0
//    layout), its address read from the DHCP leases, and a network filter
//    per sandbox so that guests on the bridge cannot reach each other.
// Lifecycle events from libvirt reach the engine at once.
#pragma once

#include <filesystem>
#include <memory>
#include <mutex>
#include <set>

#include "config/config.h"
#include "vm/driver.h"
#include "vm/libvirt/connection.h"
#include "vm/libvirt/deferred_teardown.h"
#include "vm/qemu/accel.h"

namespace ephemera {

struct LibvirtDriverOptions {
  std::filesystem::path state_dir;  // overlays in state_dir/libvirt/<id>/
  VmConfig vm;                      // libvirt_uri, libvirt_network, qemu_binary, ...
  AccelChoice accel;                // kvm -> domain type kvm, else qemu (TCG)
  std::string shared_network;       // shared mode: a libvirt network, or its bridge (virbr0)
};

class LibvirtDriver : public VmDriver {
 public:
  // Connects (kInvalidArgument for an unknown URI scheme, kUnavailable for
  // an unreachable libvirtd) and, in shared mode, checks the network.
  explicit LibvirtDriver(LibvirtDriverOptions options);
  ~LibvirtDriver() override;

  std::string_view name() const override { return "libvirt"; }
  LinkMode link_mode() const override;
  VmInfo Start(const VmSpec& spec) override;
  std::string DescribeXml(const SandboxId& id) override;
  VmInfo Inspect(const SandboxId& id) override;
  std::optional<ResourceUsage> Usage(const SandboxId& id) override;
  bool Shutdown(const SandboxId& id, std::chrono::milliseconds timeout) override;
  void Destroy(const SandboxId& id) override;
  std::vector<SandboxId> List() override;
  void OnStopped(std::function<void(const SandboxId&)> listener) override;
  std::string Health() const override;
  Ipv4 WaitForAddress(const SandboxId& id, std::chrono::milliseconds timeout) override;
  // Secret files by path, read by QEMU at its start and removed then.
  bool passes_secret_files() const override { return true; }
  bool supports_agent() const override { return true; }

  // Destroy returns once the domain is gone; its network, filter and files
  // go right after, on a thread of the driver's. True once all have.
  bool TeardownsIdle(std::chrono::milliseconds timeout);

  static std::string NetworkNameFor(const SandboxId& id);  // isolated mode
  static std::string FilterNameFor(const SandboxId& id);   // shared mode

 private:
  std::filesystem::path DirOf(const SandboxId& id) const;
  void Validate(const VmSpec& spec) const;
  void CreateNetwork(const VmSpec& spec);
  void CreateFilter(const VmSpec& spec);
  void TearDownRest(const SandboxId& id);  // network, filter, files
  std::string SharedNetworkName() const;

  LibvirtDriverOptions options_;
  std::filesystem::path qemu_img_;
  std::filesystem::path emulator_;
  std::optional<std::uint64_t> tsc_khz_;
  std::unique_ptr<LibvirtConnection> connection_;
  std::unique_ptr<DeferredTeardown> teardown_;  // declared after connection_: stops first
  // shared mode: the network and its subnet, read at start
  std::string shared_network_;
  std::optional<Ipv4Cidr> shared_subnet_;
  std::optional<Ipv4> shared_gateway_;
  std::string shared_bridge_;
};

}  // namespace ephemera
