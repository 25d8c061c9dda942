// A container's link: a veth pair made through rtnetlink once the container's
// network namespace exists, its peer created directly inside that namespace
// (moving a device between namespaces costs the kernel an RCU barrier: tens
// of milliseconds, where creating it there costs well under one). The host
// end is named as a VM's TAP would be, so the nftables rules, which match on
// interface names, apply unchanged, and carries the gateway.
#pragma once

#include <sys/types.h>

#include <string>
#include <string_view>
#include <vector>

#include "core/ipv4.h"
#include "core/unique_fd.h"

namespace ephemera {

// The name recorded for the peer of host end "eph...": "epc...", as unique
// as the host end's name, and as short (TapNameFor, TapNameForRun).
inline constexpr std::string_view kVethPeerPrefix = "epc";
// kInvalidArgument unless `host` is named as TapNameFor/TapNameForRun name.
std::string VethPeerNameFor(const std::string& host);

// Deletes veth end `name` in this namespace, and with it its peer wherever
// that is. Absent is fine; kFailedPrecondition if `name` is not a veth.
void DeleteVeth(const std::string& name);

// True when interface `name` exists in this namespace and is a veth.
bool IsVethDevice(const std::string& name);

// This namespace's veths named as a host end of ours (for reconcile).
std::vector<std::string> ListEphemeraVeths();

// The network namespace of process `pid` (/proc/PID/ns/net), for
// CreateContainerLink; kNotFound when the process is gone.
UniqueFd OpenNetworkNamespace(pid_t pid);

// Creates the container's link: veth `host` in this namespace with
// `gateway`/30, rp_filter strict and IPv6 off, up (as a TAP would be), and
// its peer made directly inside `netns_fd` as `inside_name` with MAC `mac`
// ("52:54:00:..."), `address`/30, up, lo up, the default route via
// `gateway`, and net.ipv4.ping_group_range "0 2147483647" there (ping
// without privileges, as on a Debian host). Returns once both ends run (the
// kernel drops what a link is given before that; it waits at most 1 s).
// Call it before the container's init runs.
// kAlreadyExists if `host` exists here or `inside_name` in the namespace;
// kInvalidArgument for a bad name or MAC, or a `netns_fd` that is no
// network namespace; kPermissionDenied without CAP_NET_ADMIN. Throws naming
// the step that failed, and leaves nothing (the pair is deleted).
// The calling thread enters the namespace for the steps inside and comes
// back before returning or throwing (a thread's network namespace is its
// own: the process's other threads never leave theirs); were coming back to
// fail, the process aborts rather than go on in the container's.
void CreateContainerLink(const std::string& host, int netns_fd, const std::string& inside_name,
                         const std::string& mac, Ipv4 address, Ipv4 gateway);

}  // namespace ephemera
