// The few rtnetlink steps (libnl-route) that TAPs and veth pairs share. A
// netlink socket belongs to the network namespace of the thread that
// opened it, for its whole life: that is what lets one thread configure
// two namespaces (net/veth.cc).
#pragma once

#include <netlink/netlink.h>
#include <netlink/route/link.h>

#include <memory>
#include <string>

#include "core/error.h"
#include "core/ipv4.h"

namespace ephemera::rtnl {

using Sock = std::unique_ptr<nl_sock, decltype(&nl_socket_free)>;
using Link = std::unique_ptr<rtnl_link, decltype(&rtnl_link_put)>;

// A socket connected to rtnetlink in the calling thread's network namespace.
Sock Connect();

// kPermissionDenied for -NLE_PERM, kInternal otherwise.
ErrorCode CodeFor(int nl_err);

// The link named `name`, or null when there is none.
Link Get(nl_sock* sock, const std::string& name);
Link Get(nl_sock* sock, int ifindex);

// True when `link` is a veth (rtnl link kind "veth").
bool IsVeth(rtnl_link* link);

// Adds `address`/`prefix` to interface `ifindex` (`name` only for messages).
void AddAddress(nl_sock* sock, int ifindex, const std::string& name, Ipv4 address, int prefix);

// Sets IFF_UP on `link` (as read from the kernel).
void SetUp(nl_sock* sock, rtnl_link* link);

// Deletes interface `ifindex`; gone already is fine.
void Delete(nl_sock* sock, int ifindex, const std::string& name);

}  // namespace ephemera::rtnl
