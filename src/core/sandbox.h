// The sandbox as every part sees it: what was asked for (SandboxSpec) and
// where it is in its life (SandboxState).
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "core/egress.h"
#include "core/sandbox_id.h"

namespace ephemera {

// kPaused: ready, but its whole state saved to disk and its process gone.
enum class SandboxState { kCreating, kProvisioning, kReady, kDestroying, kFailed, kPaused };

// What a sandbox is: a virtual machine, or a container sharing the host's kernel.
enum class SandboxKind { kVm, kContainer };
std::string_view KindName(SandboxKind kind);
SandboxKind ParseKind(std::string_view name);  // throws kInvalidArgument

// How a sandbox's NIC comes to be, which differs by driver: a TAP (and its
// dnsmasq) made by ephemera; a bridge that the driver makes on a /30 of
// ephemera's pool (a libvirt network); or a shared bridge whose DHCP hands
// out the address (the guest's address is learnt after start).
enum class LinkMode { kTap, kBridge, kShared, kVeth };  // kVeth: a container's veth pair, no DHCP

std::string_view StateName(SandboxState state);
SandboxState ParseState(std::string_view name);  // throws kInvalidArgument

// The life of a sandbox only moves forward: creating -> provisioning ->
// ready -> destroying, with ready <-> paused on the way; any state but
// destroying may fail, and a failed one may only be destroyed.
bool IsAllowedTransition(SandboxState from, SandboxState to);

// A sandbox's name (a wirt VM's): ^[a-z0-9][a-z0-9_.-]{0,62}$ without
// "..", so it is safe as a file name and in logs.
bool IsValidSandboxName(std::string_view name);
void CheckSandboxName(std::string_view name);  // kInvalidArgument naming the rule

// The owner string of a local user's sandboxes ("uid:N"), and back.
std::string UserOwner(std::uint32_t uid);
std::optional<std::uint32_t> OwnerUid(std::string_view owner);

struct SandboxSpec {
  SandboxKind kind = SandboxKind::kVm;
  std::string image = "default";
  unsigned memory_mib = 256;
  unsigned vcpus = 1;
  std::optional<std::chrono::seconds> ttl;  // none: the configured default
  // Destroyed after this long without activity (an exec or a transfer, a
  // forwarded connection open, network traffic); 0: never.
  std::int64_t idle_timeout_seconds = 0;
  // Where it may connect to (core/egress.h).
  EgressPolicy egress = {};
  // For pipelines: a machine of a run. Its /30 and TAP name derive from the
  // pair, so reruns get the same addresses; one machine per name in a run.
  std::string run_id, machine;  // both or neither
};

// Seconds since the Unix epoch (what the store and the API carry).
using UnixSeconds = std::int64_t;
UnixSeconds NowUnix();

// A sandbox as recorded: never the client's password or token, only the
// token's SHA-256.
struct Sandbox {
  explicit Sandbox(SandboxId sandbox_id) : id(std::move(sandbox_id)) {}

  SandboxId id;
  SandboxState state = SandboxState::kCreating;
  std::string reason;  // why it failed or is being destroyed
  SandboxSpec spec;
  std::string image_sha256;
  std::string owner = "local";  // who created it: local (root), uid:N, token:ID or address:IP
  std::string name;             // unique per owner when set (a wirt VM's instance)
  std::string driver = "qemu";  // the driver that runs it
  std::string token_sha256;
  // Filled in as creation proceeds:
  std::string tap;       // the host's end of its NIC (a TAP or a bridge)
  std::string mac;       // the guest NIC's
  std::string network;   // the network it is on (a libvirt network or bridge; its TAP otherwise)
  std::string iso_path;  // the ISO it booted from (ISO images); image_sha256 is then the ISO's
  std::string subnet;    // a.b.c.d/30
  std::string guest_ip;
  std::uint16_t host_port = 0;
  std::string username;
  std::string host_key_fingerprint;  // SHA256:... as ssh-keygen prints it
  std::string host_key;              // "ssh-ed25519 AAAA..." (public: for pinning)
  // Host memory it takes beyond its guest's (QEMU, the TCG translation
  // cache), for the host's memory budget; 0: the configured overhead.
  unsigned overhead_mib = 0;
  UnixSeconds created_at = 0;
  // Ready: when its time to live ends. Paused: when its time paused ends.
  std::optional<UnixSeconds> expires_at;
  // Paused: when it was paused, and the time to live it had left then
  // (paused time does not count against the TTL).
  std::optional<UnixSeconds> paused_at;
  std::int64_t ttl_left_seconds = 0;
  // Not stored: whether its VM runs now, as its driver says (Get and List fill it in).
  std::optional<bool> running;
};

}  // namespace ephemera
