// What the engine asks of a hypervisor driver, and what it gets back.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "core/ipv4.h"
#include "core/sandbox_id.h"
#include "image/image.h"

namespace ephemera {

struct NicSpec {
  // LinkMode::kTap: an existing TAP device; kBridge: the bridge the driver
  // makes (a libvirt network), by this name; kShared: unused.
  std::string tap;
  std::string mac;  // aa:bb:cc:dd:ee:ff
  // kBridge: the /30 the bridge's DHCP serves (gateway on the bridge, the
  // guest's address for this MAC), the DNS servers it offers, and NAT.
  std::optional<Subnet30> subnet;
  std::vector<Ipv4> dns_servers;
  bool outbound_nat = false;
};

// A small file handed to the guest before boot (QEMU fw_cfg), such as the
// endpoint's authorized key. Stored 0400 in the VM's directory.
struct GuestFile {
  std::string name;  // fw_cfg name, e.g. "opt/ephemera/endpoint_authorized_keys"
  std::string content;
  // Secret (the guest's private host key): only for a driver whose
  // passes_secret_files() (never on a command line or in a domain XML).
  bool secret = false;
};

struct VmSpec {
  explicit VmSpec(SandboxId sandbox_id) : id(std::move(sandbox_id)) {}

  SandboxId id;
  Image image;
  unsigned memory_mib = 256;
  unsigned vcpus = 1;
  std::string extra_cmdline;  // appended to the image's kernel command line
  std::optional<NicSpec> nic;
  std::vector<GuestFile> guest_files;
  // A virtio-serial port for the guest agent (docs/guest-agent.md), whose
  // host end is VmInfo::agent_socket. Only where supports_agent().
  bool agent_channel = false;
  // Who and what, kept with the VM where the hypervisor can hold it (the
  // libvirt domain's metadata), so that reconcile can tell ours apart.
  std::string owner;
  std::int64_t created_at = 0;
};

// kSaved: no process, its whole state in a file (VmDriver::Pause).
enum class VmState { kRunning, kPaused, kShutoff, kSaved };
std::string_view VmStateName(VmState state);

struct VmInfo {
  SandboxId id;
  VmState state = VmState::kShutoff;
  pid_t pid = 0;
  std::filesystem::path dir;           // everything this VM owns on the host
  std::filesystem::path serial_log;    // the guest's console output
  std::filesystem::path agent_socket;  // the agent channel's host end, if it has one
  std::string network;                 // the network its NIC is on, if the driver names one
  std::optional<Ipv4> guest_ip;        // when the driver learnt it (LinkMode::kShared)
};

// What a running sandbox's processes use (its QEMU, or its container).
struct ResourceUsage {
  double cpu_seconds = 0;  // since it started
  std::uint64_t memory_bytes = 0;
};

// A process's CPU time and resident memory from /proc; nullopt once it is gone.
std::optional<ResourceUsage> UsageOfProcess(pid_t pid);

}  // namespace ephemera
