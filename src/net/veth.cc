#include "net/veth.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <netlink/route/link/veth.h>
#include <netlink/route/route.h>
#include <sched.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <thread>

#include <spdlog/spdlog.h>

#include "core/error.h"
#include "net/rtnl.h"
#include "net/sysctl.h"
#include "net/tap.h"

namespace ephemera {

namespace {

bool IsHex(std::string_view s) {
  return s.find_first_not_of("0123456789abcdef") == std::string_view::npos;
}

// `prefix` + 8 hex digits (an id's) or + "r" + 10 (a pipeline machine's).
bool NamedAsOurs(std::string_view name, std::string_view prefix) {
  if (name.substr(0, prefix.size()) != prefix) return false;
  std::string_view rest = name.substr(prefix.size());
  if (rest.size() == 8) return IsHex(rest);
  return rest.size() == 11 && rest[0] == 'r' && IsHex(rest.substr(1));
}

void CheckName(const std::string& name) {
  if (name.empty() || name.size() >= IFNAMSIZ ||
      name.find_first_of("/: \t\n") != std::string::npos || name == "." || name == "..") {
    Fail(ErrorCode::kInvalidArgument, "'{}' is not a valid interface name", name);
  }
}

using Addr = std::unique_ptr<nl_addr, decltype(&nl_addr_put)>;

Addr Ipv4Addr(Ipv4 address, int prefix) {
  std::uint32_t be = htonl(address.value);
  Addr addr(nl_addr_build(AF_INET, &be, sizeof be), nl_addr_put);
  if (!addr) Fail(ErrorCode::kInternal, "out of memory building an address");
  nl_addr_set_prefixlen(addr.get(), prefix);
  return addr;
}

void AddDefaultRoute(nl_sock* sock, int ifindex, Ipv4 gateway) {
  std::unique_ptr<rtnl_route, decltype(&rtnl_route_put)> route(rtnl_route_alloc(), rtnl_route_put);
  rtnl_nexthop* hop = rtnl_route_nh_alloc();
  if (!route || !hop) {
    if (hop) rtnl_route_nh_free(hop);
    Fail(ErrorCode::kInternal, "out of memory building a route");
  }
  rtnl_route_set_family(route.get(), AF_INET);
  rtnl_route_set_table(route.get(), RT_TABLE_MAIN);
  rtnl_route_set_protocol(route.get(), RTPROT_BOOT);
  rtnl_route_set_scope(route.get(), RT_SCOPE_UNIVERSE);
  rtnl_route_set_type(route.get(), RTN_UNICAST);
  Addr any = Ipv4Addr(Ipv4{0}, 0);
  Addr via = Ipv4Addr(gateway, 32);
  rtnl_route_set_dst(route.get(), any.get());
  rtnl_route_nh_set_ifindex(hop, ifindex);
  rtnl_route_nh_set_gateway(hop, via.get());
  rtnl_route_add_nexthop(route.get(), hop);  // the route owns it now
  int err = rtnl_route_add(sock, route.get(), NLM_F_EXCL);
  if (err < 0) {
    Fail(rtnl::CodeFor(err), "cannot add the default route via {}: {}", gateway.str(),
         nl_geterror(err));
  }
}

Addr Mac(const std::string& text) {
  nl_addr* raw = nullptr;
  if (nl_addr_parse(text.c_str(), AF_LLC, &raw) < 0) {
    Fail(ErrorCode::kInvalidArgument, "'{}' is not a MAC address", text);
  }
  Addr mac(raw, nl_addr_put);
  if (nl_addr_get_len(mac.get()) != 6) {
    Fail(ErrorCode::kInvalidArgument, "'{}' is not a MAC address", text);
  }
  return mac;
}

struct LinkRequest {
  const std::string& host;
  int netns_fd;
  const std::string& inside_name;
  nl_addr* mac;
  Ipv4 address;
  Ipv4 gateway;
  std::chrono::steady_clock::time_point deadline;  // for WaitOperUp
};

// Makes the pair through `host` (a socket in this namespace), the peer
// directly inside r.netns_fd: one request.
void CreatePair(nl_sock* host, const LinkRequest& r) {
  rtnl::Link pair(rtnl_link_veth_alloc(), rtnl_link_put);
  if (!pair) Fail(ErrorCode::kInternal, "out of memory building a veth pair");
  rtnl_link* peer = rtnl_link_veth_get_peer(pair.get());  // a reference of its own
  rtnl::Link peer_ref(peer, rtnl_link_put);
  rtnl_link_set_name(pair.get(), r.host.c_str());
  rtnl_link_set_name(peer, r.inside_name.c_str());
  rtnl_link_set_addr(peer, r.mac);
  rtnl_link_set_ns_fd(peer, r.netns_fd);
  int err = rtnl_link_add(host, pair.get(), NLM_F_CREATE | NLM_F_EXCL);
  if (err == -NLE_EXIST) {
    // The one request cannot say which name is taken; this side can.
    if (rtnl::Get(host, r.host)) {
      Fail(ErrorCode::kAlreadyExists, "an interface named {} already exists", r.host);
    }
    Fail(ErrorCode::kAlreadyExists, "the container's namespace already has an interface {}",
         r.inside_name);
  }
  if (err == -NLE_INVAL || err == -NLE_BAD_SOCK) {
    Fail(ErrorCode::kInvalidArgument,
         "cannot create veth pair {}/{} (is fd {} a network namespace?): {}", r.host, r.inside_name,
         r.netns_fd, nl_geterror(err));
  }
  if (err < 0) {
    Fail(rtnl::CodeFor(err), "cannot create veth pair {}/{} (needs CAP_NET_ADMIN): {}", r.host,
         r.inside_name, nl_geterror(err));
  }
}

// The host end, as CreateTap leaves a TAP and NetworkManager sets its
// sysctls: this thread is still in the caller's namespace.
void ConfigureHostEnd(nl_sock* host, const LinkRequest& r) {
  rtnl::Link link = rtnl::Get(host, r.host);
  if (!link) Fail(ErrorCode::kInternal, "veth {} vanished", r.host);
  // Strict reverse-path filtering: a guest can only send from its own /30.
  SetSysctl(fmt::format("net.ipv4.conf.{}.rp_filter", r.host), "1");
  SetSysctl(fmt::format("net.ipv6.conf.{}.disable_ipv6", r.host), "1");
  rtnl::AddAddress(host, rtnl_link_get_ifindex(link.get()), r.host, r.gateway, 30);
  rtnl::SetUp(host, link.get());
}

// Waits, briefly, until the kernel's link watcher has seen `name`'s
// carrier: until then the device has no queue and drops what it is given
// (the container's first packets). Veth carrier events are urgent, so this
// is a matter of a workqueue run; past `deadline` it stops waiting.
constexpr std::uint8_t kOperUp =
    6;  // IF_OPER_UP (RFC 2863), of <linux/if.h>, which <net/if.h> hides

void WaitOperUp(nl_sock* sock, const std::string& name,
                std::chrono::steady_clock::time_point deadline) {
  for (;;) {
    rtnl::Link link = rtnl::Get(sock, name);
    if (!link || rtnl_link_get_operstate(link.get()) == kOperUp) return;
    if (std::chrono::steady_clock::now() >= deadline) {
      spdlog::warn("veth {} is not running yet: its first packets may be dropped", name);
      return;
    }
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
}

// The steps inside the container's namespace, this thread in it.
void ConfigureInside(const LinkRequest& r) {
  rtnl::Sock inside = rtnl::Connect();
  rtnl::Link lo = rtnl::Get(inside.get(), "lo");
  if (!lo) Fail(ErrorCode::kInternal, "the namespace has no lo");
  rtnl::SetUp(inside.get(), lo.get());
  rtnl::Link link = rtnl::Get(inside.get(), r.inside_name);
  if (!link) Fail(ErrorCode::kInternal, "{} is not in the container's namespace", r.inside_name);
  const int ifindex = rtnl_link_get_ifindex(link.get());
  // Up first: the kernel adds the /30's route, which the gateway needs,
  // only for an interface that is up.
  rtnl::SetUp(inside.get(), link.get());
  rtnl::AddAddress(inside.get(), ifindex, r.inside_name, r.address, 30);
  AddDefaultRoute(inside.get(), ifindex, r.gateway);
  // /proc/sys/net shows the network namespace of the thread that opens it.
  SetSysctl("net.ipv4.ping_group_range", "0 2147483647");
  WaitOperUp(inside.get(), r.inside_name, r.deadline);
}

// The calling thread inside network namespace `netns_fd` for the visit's
// life (a thread's network namespace is its own: the process's other
// threads stay where they are). Coming back cannot fail short of the
// kernel refusing to re-enter a namespace this thread was just in; should
// it, the thread would go on in the container's namespace, so the process
// stops instead.
class NamespaceVisit {
 public:
  explicit NamespaceVisit(int netns_fd)
      : home_(::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC)) {
    if (!home_) FailErrno("cannot open this thread's network namespace", errno);
    if (::setns(netns_fd, CLONE_NEWNET) != 0) {
      int err = errno;
      FailErrno("cannot enter the container's network namespace", err,
                err == EPERM ? ErrorCode::kPermissionDenied : ErrorCode::kInternal);
    }
  }
  ~NamespaceVisit() {
    if (::setns(home_.get(), CLONE_NEWNET) != 0) {
      spdlog::critical("cannot return to the daemon's network namespace: {}", std::strerror(errno));
      std::abort();
    }
  }
  NamespaceVisit(const NamespaceVisit&) = delete;
  NamespaceVisit& operator=(const NamespaceVisit&) = delete;

 private:
  UniqueFd home_;
};

}  // namespace

std::string VethPeerNameFor(const std::string& host) {
  if (!NamedAsOurs(host, kTapPrefix)) {
    Fail(ErrorCode::kInvalidArgument, "'{}' is not named as a sandbox's host end", host);
  }
  return std::string(kVethPeerPrefix) + host.substr(kTapPrefix.size());
}

void DeleteVeth(const std::string& name) {
  rtnl::Sock sock = rtnl::Connect();
  rtnl::Link link = rtnl::Get(sock.get(), name);
  if (!link) return;
  if (!rtnl::IsVeth(link.get())) {
    Fail(ErrorCode::kFailedPrecondition, "{} is not a veth: not deleting it", name);
  }
  rtnl::Delete(sock.get(), rtnl_link_get_ifindex(link.get()), "veth " + name);
}

bool IsVethDevice(const std::string& name) {
  rtnl::Sock sock = rtnl::Connect();
  rtnl::Link link = rtnl::Get(sock.get(), name);
  return link && rtnl::IsVeth(link.get());
}

std::vector<std::string> ListEphemeraVeths() {
  rtnl::Sock sock = rtnl::Connect();
  nl_cache* raw = nullptr;
  int err = rtnl_link_alloc_cache(sock.get(), AF_UNSPEC, &raw);
  if (err < 0) Fail(rtnl::CodeFor(err), "cannot list links: {}", nl_geterror(err));
  std::unique_ptr<nl_cache, decltype(&nl_cache_free)> cache(raw, nl_cache_free);
  std::vector<std::string> veths;
  for (nl_object* it = nl_cache_get_first(cache.get()); it; it = nl_cache_get_next(it)) {
    auto* link = reinterpret_cast<rtnl_link*>(it);
    const char* name = rtnl_link_get_name(link);
    if (!name || !rtnl::IsVeth(link)) continue;
    if (NamedAsOurs(name, kTapPrefix)) veths.push_back(name);
  }
  return veths;
}

UniqueFd OpenNetworkNamespace(pid_t pid) {
  const std::string path = fmt::format("/proc/{}/ns/net", pid);
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) {
    int err = errno;
    FailErrno(fmt::format("cannot open {}", path), err,
              err == ENOENT || err == ESRCH ? ErrorCode::kNotFound : ErrorCode::kInternal);
  }
  return fd;
}

void CreateContainerLink(const std::string& host, int netns_fd, const std::string& inside_name,
                         const std::string& mac, Ipv4 address, Ipv4 gateway) {
  try {
    CheckName(host);
    CheckName(inside_name);
    Addr mac_addr = Mac(mac);
    const LinkRequest r{host,
                        netns_fd,
                        inside_name,
                        mac_addr.get(),
                        address,
                        gateway,
                        std::chrono::steady_clock::now() + std::chrono::seconds(1)};
    rtnl::Sock sock = rtnl::Connect();  // stays in this namespace during the visit
    if (rtnl::Get(sock.get(), host)) {
      Fail(ErrorCode::kAlreadyExists, "an interface named {} already exists", host);
    }
    CreatePair(sock.get(), r);
    try {
      ConfigureHostEnd(sock.get(), r);
      {
        NamespaceVisit visit(netns_fd);
        ConfigureInside(r);
      }
      WaitOperUp(sock.get(), host, r.deadline);
    } catch (const Error& e) {
      // Back in this namespace: deleting the host end deletes the peer.
      try {
        rtnl::Link made = rtnl::Get(sock.get(), host);
        if (made) rtnl::Delete(sock.get(), rtnl_link_get_ifindex(made.get()), "veth " + host);
      } catch (const Error& again) {
        throw Error(e.code(),
                    fmt::format("{} (and veth {} is left: {})", e.what(), host, again.what()));
      }
      throw;
    } catch (...) {
      try {
        DeleteVeth(host);
      } catch (const Error&) {
        // best effort: the first failure is the one to report
      }
      throw;
    }
  } catch (const Error& e) {
    throw e.WithContext(fmt::format("container link {} (inside: {})", host, inside_name));
  }
}

}  // namespace ephemera
