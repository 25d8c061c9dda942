// The daemon's configuration: YAML on disk, every key optional with the
// default given here, unknown keys rejected, errors naming the key.
#pragma once

#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/ipv4.h"
#include "core/sandbox.h"

namespace ephemera {

enum class Accel { kAuto, kKvm, kTcg };
// The libvirt driver's networking: a network per sandbox, or one for all.
enum class LibvirtNetworkMode { kIsolated, kShared };
enum class MachineType { kMicrovm, kQ35 };

std::string_view AccelName(Accel accel);
std::string_view MachineTypeName(MachineType machine);

struct LogConfig {
  std::string level = "info";  // trace|debug|info|warn|error
  // text (the journal, with structured fields, when stderr is the
  // journal's) | json (one object a line) | journal
  std::string format = "text";
  bool operator==(const LogConfig&) const = default;
};

struct VmConfig {
  std::string driver = "qemu";  // qemu | libvirt
  // The libvirt driver: any libvirt URI (qemu:///system, qemu+ssh://host/system...).
  std::string libvirt_uri = "qemu:///system";
  LibvirtNetworkMode libvirt_network_mode = LibvirtNetworkMode::kIsolated;
  std::string qemu_binary = "qemu-system-x86_64";
  std::string qemu_img_binary = "qemu-img";
  MachineType machine = MachineType::kMicrovm;
  Accel accel = Accel::kAuto;
  // Bounds QEMU's TCG translation cache (1 GiB by default); see docs/benchmarks.md.
  unsigned tcg_tb_size_mib = 32;
  unsigned powerdown_timeout_ms = 5000;
  // QEMU runs as an unprivileged uid of its own per VM (uid_base + a slot;
  // no account needed), sees only the descriptors it is handed, and (with
  // seccomp_sandbox) runs under QEMU's seccomp filter. Off only to debug.
  bool unprivileged = true;
  unsigned uid_base = 3000000;
  bool seccomp_sandbox = true;
  // Each VM's cgroup allows its guest memory, the TCG cache and this much.
  unsigned memory_overhead_mib = 192;
  unsigned max_pids = 512;  // threads and processes per VM
  // The serial console log (and its one rotated predecessor) per VM.
  unsigned console_log_kib = 1024;
  // Creates of images with the guest agent start from a snapshot template
  // (booted once per image and size, in the background), not a boot.
  bool snapshots = false;
  // Kernel samepage merging of guest memory: QEMU marks it mergeable and
  // the daemon starts the kernel's ksmd. Off: QEMU marks nothing, so VMs
  // share no page through KSM even where ksmd runs for others.
  bool ksm = false;
  bool operator==(const VmConfig&) const = default;
};

// core/ipv4.h gives Ipv4Cidr no operator== of its own; config equality needs one.
inline bool operator==(const Ipv4Cidr& a, const Ipv4Cidr& b) {
  return a.base == b.base && a.prefix == b.prefix;
}

struct NetworkConfig {
  // /30 subnets for sandboxes are carved from here.
  Ipv4Cidr pool = Ipv4Cidr{Ipv4{0xac100000}, 16};  // 172.16.0.0/16
  // Offered by DHCP; for an egress allow-list, what its own resolver asks.
  std::vector<Ipv4> dns_servers = {Ipv4{0x01010101}};  // 1.1.1.1
  // Outbound NAT lets guests reach what the host routes to, except private,
  // link-local (cloud metadata at 169.254.169.254), CGNAT, loopback and
  // multicast ranges and the host's own connected subnets, unless nat_allow
  // names them.
  bool outbound_nat = false;
  std::vector<Ipv4Cidr> nat_allow;
  std::string dnsmasq_binary = "dnsmasq";
  // Clients reach a sandbox's sshd on forward_address:<port from forward_ports>.
  std::string forward_address = "0.0.0.0";
  std::uint16_t forward_port_first = 10000;
  std::uint16_t forward_port_last = 15000;
  unsigned forward_connections_per_source = 32;  // per client address, over all sandboxes
  // The libvirt driver's shared mode: the libvirt network (or its bridge)
  // every sandbox joins.
  std::string bridge = "virbr0";
  bool operator==(const NetworkConfig&) const = default;
};

struct DefaultsConfig {
  std::string image = "default";
  unsigned memory_mib = 256;
  unsigned vcpus = 1;
  bool operator==(const DefaultsConfig&) const = default;
};

struct LimitsConfig {
  unsigned max_sandboxes = 16;
  unsigned max_parallel_creates = 4;
  unsigned default_ttl_seconds = 3600;
  unsigned max_ttl_seconds = 86400;
  unsigned default_idle_timeout_seconds = 0;  // 0: sandboxes are kept however idle
  unsigned max_memory_mib = 4096;
  unsigned max_vcpus = 4;
  unsigned sshd_timeout_seconds = 120;
  // Memory all sandboxes together may commit (each its memory_mib plus
  // vm.memory_overhead_mib); 0: 90% of the host's memory.
  unsigned host_memory_mib = 0;
  // Creates are refused while the state folder has less free space.
  unsigned min_free_disk_mib = 1024;
  // A paused sandbox (its state on disk, its memory free) is destroyed
  // after this long paused; each caller may hold this many paused at once.
  unsigned max_paused_seconds = 86400;
  unsigned max_paused_per_owner = 4;
  unsigned max_exposed_ports = 16;  // per sandbox, besides SSH's
  bool operator==(const LimitsConfig&) const = default;
};

// "ADDR:PORT" or "[IPv6]:PORT" for a TCP listener; the address is numeric.
struct ListenAddress {
  std::string address;  // without brackets
  std::uint16_t port = 0;
  std::string str() const;
  // kInvalidArgument naming the text.
  static ListenAddress Parse(std::string_view text);
  bool operator==(const ListenAddress&) const = default;
};

// The /v1 API for other machines (HTTPS), and who may use the remote doors.
struct RemoteConfig {
  std::optional<ListenAddress> listen;    // none: off
  std::filesystem::path tls_certificate;  // none with no key: self-signed in state_dir/tls
  std::filesystem::path tls_key;
  bool insecure_http = false;      // plain HTTP on `listen`, for a trusted network only
  bool access_tokens = true;       // every remote request needs an access token
  std::vector<std::string> allow;  // CIDRs, addresses or "any"; empty: any
  std::vector<std::string> deny;
  unsigned rate_limit_per_minute = 600;  // per token (per address without tokens)
  unsigned rate_limit_burst = 60;
  unsigned max_connections = 256;  // per front door
  unsigned max_connections_per_address = 32;
  bool operator==(const RemoteConfig&) const = default;
};

// Front doors for unmodified Anweddol clients.
struct AnweddolConfig {
  std::optional<ListenAddress> listen;      // classic protocol (Anweddol's default port 6150)
  std::optional<ListenAddress> web_listen;  // web protocol (default port 8080)
  bool web_tls = false;                     // HTTPS for the web protocol, same identity as /v1
  bool one_time_keys = false;               // a fresh server RSA key per connection
  unsigned rsa_bits = 4096;
  SandboxKind kind = SandboxKind::kVm;  // what the Anweddol doors hand out
  bool operator==(const AnweddolConfig&) const = default;
};

// A registry docker:// references may name (one `registries:` entry).
struct RegistryEntry {
  std::string host;                        // HOST[:PORT]
  bool insecure = false;                   // plain HTTP
  std::filesystem::path ca_file;           // empty: the system's CA store
  std::filesystem::path credentials_file;  // an auth.json (docker/podman login's format)
  bool operator==(const RegistryEntry&) const = default;
};

// An image by its two OCI references (one `images:` entry): imported on
// `ephemera image pull NAME` or on the first create that names it.
struct ImageSource {
  std::string kernel, rootfs;  // references, checked when parsed; no kernel: the rootfs's own
  unsigned headroom_mib = 1024;
  bool operator==(const ImageSource&) const = default;
};

struct PullConfig {
  unsigned connect_timeout_seconds = 15;
  unsigned stall_timeout_seconds = 30;  // a registry silent this long fails the pull
  // What the image directory may take on disk (0: no limit). Images that a
  // create could import again (images: entries, --kernel/--rootfs pairs)
  // are evicted least recently used first when it is over.
  unsigned cache_max_mib = 0;
  bool operator==(const PullConfig&) const = default;
};

// The file front door for local users (wirt) and their use of the local
// socket.
struct WirtConfig {
  bool enabled = false;
  std::string group = "vmguests";  // its members (primary or supplementary) may use it
  unsigned max_sandboxes_per_user = 4;
  unsigned max_memory_mib_per_user = 4096;
  std::uint64_t log_max_bytes = 1 << 20;  // a VM's log is rotated to NAME.log.1.tgz past this
  unsigned log_keep = 5;                  // rotated logs kept
  unsigned history_keep = 1000;           // processed requests kept in history/ per user
  bool mail = false;                      // errors also mailed to the user and root
  std::string sendmail = "/usr/sbin/sendmail";
  unsigned workers = 8;  // requests of different VMs in progress at once
  bool operator==(const WirtConfig&) const = default;
};

// Container sandboxes: an OCI runtime (crun, or runc) runs each in its own
// namespaces, cgroup and uid range, on an overlay of its image's rootfs.
struct ContainerConfig {
  bool enabled = true;           // needs the runtime; without it containers are refused
  std::string runtime = "crun";  // crun | runc, or a path to one of them
  // Sandbox i's root is host uid uid_base + i * 65536 (65536 uids each),
  // for up to limits.max_sandboxes at once; the range must not overlap
  // vm.uid_base's nor /etc/subuid's, and must end below 2^31.
  unsigned uid_base = 1000000000;
  // A Docker/Podman-format (or OCI-format) seccomp profile; empty: the
  // built-in one (share/ephemera/seccomp.json: Podman's, with Docker's
  // restrictions of mount, unshare, setns and clone's namespace flags).
  std::filesystem::path seccomp_profile;
  unsigned max_pids = 1024;  // processes and threads per container
  unsigned disk_mib = 1024;  // what a container may write (its tmpfs upper layer)
  unsigned io_weight = 100;  // 1..10000, relative to other sandboxes
  // An image's read-only mount stays this long after its last container.
  unsigned image_idle_seconds = 300;
  bool operator==(const ContainerConfig&) const = default;
};

// A warm pool (`pool:`): sandboxes of one image and size kept booted and
// provisioned ahead of demand.
struct PoolEntry {
  std::string image = "default";
  unsigned memory_mib = 256;
  unsigned vcpus = 1;
  unsigned size = 1;
  bool operator==(const PoolEntry&) const = default;
};

// Prometheus metrics: GET /metrics on the local socket, and on a listener
// of its own when `listen` is set (plain HTTP: for a monitoring network).
struct MetricsConfig {
  std::optional<ListenAddress> listen;
  bool per_sandbox = true;  // CPU, memory and network series for each sandbox
  bool operator==(const MetricsConfig&) const = default;
};

// The event stream (GET /v1/events).
struct EventsConfig {
  // Streams open at once (each holds a thread of its own); more get 429.
  unsigned max_subscribers = 16;
  bool operator==(const EventsConfig&) const = default;
};

// Programs run on events (`hooks:`), each with the event as one JSON object
// on its stdin. They never delay or fail what the event tells of, except
// before_create, whose non-zero exit (or timeout) refuses the create.
struct HooksConfig {
  // Event type (core/event_types.h) or "*" -> absolute paths of executables.
  std::map<std::string, std::vector<std::filesystem::path>> on;
  unsigned timeout_seconds = 30;  // then the hook is killed (its process group)
  unsigned max_running = 4;       // hooks running at once
  unsigned max_queued = 256;  // waiting to run; past that, an event's hooks are dropped (logged)
  std::filesystem::path before_create;  // empty: none
  unsigned before_create_timeout_seconds = 5;
  bool operator==(const HooksConfig&) const = default;
};

struct Config {
  std::filesystem::path state_dir = "/var/lib/ephemera";
  std::filesystem::path image_dir = "/var/cache/ephemera/images";
  std::filesystem::path socket = "/run/ephemera/ephemera.sock";
  unsigned socket_mode = 0660;
  // Members of this group may use the socket, each as themselves (owner
  // "uid:N", within wirt's per-user limits); it must exist. Empty:
  // wirt.group while wirt is on, else "ephemera" (the group the Debian
  // package makes) if it exists, else root only.
  std::string socket_group;
  // The host name or address clients use to reach forwarded ports; empty:
  // network.forward_address, or this host's name when that is 0.0.0.0.
  std::string client_host;
  bool destroy_on_exit = false;
  // Only for images whose endpoint takes a fixed password (Anweddol ISOs).
  std::string endpoint_password;
  LimitsConfig limits;
  LogConfig log;
  VmConfig vm;
  NetworkConfig network;
  DefaultsConfig defaults;
  RemoteConfig remote;
  AnweddolConfig anweddol;
  std::vector<RegistryEntry> registries;
  std::vector<PoolEntry> pools;  // empty: no warm pool
  std::map<std::string, ImageSource> images;
  PullConfig pull;
  WirtConfig wirt;
  ContainerConfig container;
  MetricsConfig metrics;
  EventsConfig events;
  HooksConfig hooks;
  bool operator==(const Config&) const = default;
};

// Parses YAML text; throws kInvalidArgument naming the offending key.
Config ParseConfig(std::string_view yaml_text);
// Reads and parses a file; a missing file is kNotFound.
Config LoadConfigFile(const std::filesystem::path& path);

// Every key ParseConfig accepts, as a dotted path in the order it reads
// them ("state_dir", "limits.max_sandboxes"), a list's entries as
// "pool[].image", a map's as "images.<name>.rootfs" and "hooks.on.<event>".
// Recorded by the parser itself, so documentation checked against it
// cannot drift.
std::vector<std::string> ConfigKeys();

}  // namespace ephemera
