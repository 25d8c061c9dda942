// Everything a sandbox's network is made of, set up and torn down as one:
// a /30 from the pool, a TAP and its dnsmasq (a container's: a veth pair
// the container driver makes, addressed statically), its entries in the nftables table, and the
// host-port forward to the guest's sshd. Each network is recorded in
// state_dir/net/<id>/network.json before the host is touched, so a crash
// at any point is repaired by Reconcile() at the next start.
#pragma once

#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "config/config.h"
#include "core/egress.h"
#include "core/ipv4.h"
#include "core/sandbox.h"
#include "core/sandbox_id.h"
#include "net/address_pool.h"
#include "net/egress_firewall.h"
#include "net/firewall.h"
#include "net/port_forwarder.h"

namespace ephemera {

// A guest port forwarded on a host port besides SSH's (POST .../ports).
struct ExposedPort {
  std::uint16_t guest_port = 0;
  std::uint16_t host_port = 0;
  bool operator==(const ExposedPort&) const = default;
};

struct SandboxNetwork {
  SandboxId id;
  std::string tap;              // kTap: the TAP; kBridge: the VM driver's bridge; kVeth: host end
  Subnet30 subnet;              // unused in kShared
  std::string mac;              // the guest NIC's
  std::uint16_t host_port = 0;  // forwarded to guest_port (kShared: once the address is known)
  std::uint16_t guest_port = 22;
  LinkMode mode = LinkMode::kTap;
  std::optional<Ipv4> shared_guest;  // kShared: the address the shared bridge's DHCP gave
  // kVeth: the name recorded for the container's end (VethPeerNameFor);
  // the driver makes that end inside the container's namespace under a
  // name of its own (CreateContainerLink in net/veth.h).
  std::string peer;
  std::vector<ExposedPort> exposed;  // by guest port, ascending
  EgressPolicy egress = {};          // kShared: always kAll (the bridge's owner rules it)
  Ipv4 guest() const { return shared_guest ? *shared_guest : subnet.guest(); }
};

// For pipelines that want the same addresses every run.
struct DerivedSubnet {
  std::string run_id;
  std::string machine;
};

struct NetworkReconcileReport {
  std::vector<std::string> restored;  // one line per repaired piece
  std::vector<std::string> removed;   // one line per stale piece
  // Recorded veth networks whose host end is absent: the container driver
  // has not made the link yet (CreateContainerLink), or the container is
  // gone and its pair with it. Kept (rules and forward) for the engine to
  // resolve; never made here.
  std::vector<SandboxId> lost;
};

// kFailedPrecondition when a link of `mode` cannot enforce `egress`: a
// shared bridge takes only kAll (its owner's rules apply), and domain names
// need the daemon's DNS, which only a TAP has.
void CheckEgressForLink(LinkMode mode, const EgressPolicy& egress);

// network.json, the record of one network (pure: exposed for tests).
std::string NetworkRecordJson(const SandboxNetwork& network);
// kFailedPrecondition for an unknown mode, a subnet outside `pool`'s range,
// or a veth record without its peer's name; a JSON error for anything unparsable.
SandboxNetwork ParseNetworkRecord(const std::string& text, const AddressPool& pool);

// What the engine needs of sandbox networking (NetworkManager below; fakes
// in the engine's unit tests).
// What a sandbox's network has seen, for its idle timeout.
struct NetworkActivity {
  std::size_t connections = 0;      // forwarded connections open now (SSH's, exposed ports')
  std::uint64_t traffic_bytes = 0;  // through its host-side device since it was made
  // The same, by direction as the guest sees it.
  std::uint64_t received_bytes = 0;
  std::uint64_t sent_bytes = 0;
};

class SandboxNetworks {
 public:
  virtual ~SandboxNetworks() = default;
  virtual NetworkActivity Activity(const SandboxId& id) const {
    (void)id;
    return {};
  }
  virtual SandboxNetwork Setup(const SandboxId& id, const std::optional<DerivedSubnet>& derive = {},
                               LinkMode mode = LinkMode::kTap, const EgressPolicy& egress = {}) = 0;
  // kShared: the guest's address, learnt after it booted; opens the forward
  // and returns the host port.
  virtual std::uint16_t SetGuestAddress(const SandboxId& id, Ipv4 guest) = 0;
  virtual void Teardown(const SandboxId& id) = 0;
  // Forwards a free host port of the range to `guest_port` and records it;
  // returns the host port. kAlreadyExists when that guest port is forwarded
  // already, kFailedPrecondition at `limit` forwards besides SSH's or
  // before the guest's address is known, kResourceExhausted when the
  // range is full, kNotFound for a sandbox without a network.
  virtual std::uint16_t ExposePort(const SandboxId& id, std::uint16_t guest_port,
                                   std::size_t limit) = 0;
  // Ends the forward to `guest_port` and its connections; kNotFound when
  // there is none (SSH's is not one of these).
  virtual void UnexposePort(const SandboxId& id, std::uint16_t guest_port) = 0;
  virtual std::optional<SandboxNetwork> Find(const SandboxId& id) const = 0;
  virtual std::vector<SandboxNetwork> List() const = 0;
  virtual NetworkReconcileReport Reconcile() = 0;
};

class NetworkManager : public SandboxNetworks {
 public:
  // Checks the host (CAP_NET_ADMIN, dnsmasq present) and sets the sysctls
  // the configuration needs, logging each; throws naming what is missing.
  // `admit_client` filters who may connect to forwarded ports (unset: any).
  NetworkManager(std::filesystem::path state_dir, NetworkConfig config,
                 std::function<bool(Ipv4)> admit_client = {});
  ~NetworkManager();

  // Builds the sandbox's network; on failure removes whatever it made.
  // kTap: everything; kBridge: the /30, rules and forward (the VM driver
  // makes the bridge and its DHCP); kShared: the forward, once the address
  // is known (SetGuestAddress); kVeth: the /30, rules and forward, no
  // device and no DHCP (the container driver makes the veth pair and
  // addresses it, CreateContainerLink in net/veth.h; the rules match the
  // host end's name, so they apply once it appears). `egress` is enforced
  // for every mode but kShared (which takes only kAll); an allow-list's
  // domains need the daemon's DNS, so kTap alone (kFailedPrecondition
  // otherwise).
  SandboxNetwork Setup(const SandboxId& id, const std::optional<DerivedSubnet>& derive = {},
                       LinkMode mode = LinkMode::kTap, const EgressPolicy& egress = {}) override;
  // Open forwards and the host-side device's rx + tx byte counters.
  NetworkActivity Activity(const SandboxId& id) const override;
  std::uint16_t SetGuestAddress(const SandboxId& id, Ipv4 guest) override;
  // Removes every piece of it; unknown or half-made networks are fine.
  void Teardown(const SandboxId& id) override;
  std::uint16_t ExposePort(const SandboxId& id, std::uint16_t guest_port,
                           std::size_t limit) override;
  void UnexposePort(const SandboxId& id, std::uint16_t guest_port) override;
  std::optional<SandboxNetwork> Find(const SandboxId& id) const override;
  std::vector<SandboxNetwork> List() const override;

  // Restores every recorded network (TAP, dnsmasq, forward, rules) and
  // removes ephemera TAPs, veths and dnsmasq instances nothing records. A
  // veth network whose host end is absent is kept as it is
  // (NetworkReconcileReport::lost).
  NetworkReconcileReport Reconcile() override;
  // Tears down every network and deletes the nftables tables.
  void TeardownAll();

  static std::string MacFor(const SandboxId& id);

 private:
  std::filesystem::path DirOf(const SandboxId& id) const { return net_dir_ / id.str(); }
  void Record(const SandboxNetwork& network) const;
  void BuildHostSide(const SandboxNetwork& network, NetworkReconcileReport* report);
  void ApplyFirewallLocked();
  void TeardownLocked(const SandboxId& id);

  std::filesystem::path net_dir_;
  NetworkConfig config_;
  AddressPool pool_;
  Firewall firewall_;
  EgressFirewall egress_firewall_;
  bool dnsmasq_nftset_ = false;  // its --nftset works (domain allow-lists)
  std::unique_ptr<PortForwarder> forwarder_;
  mutable std::mutex mutex_;
  std::map<SandboxId, SandboxNetwork> networks_;
};

}  // namespace ephemera
