#include "net/tap.h"

#include "core/sha256.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <netlink/netlink.h>
#include <netlink/route/addr.h>
#include <netlink/route/link.h>
#include <sys/ioctl.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <memory>

#include "core/error.h"
#include "core/netdev.h"
#include "core/unique_fd.h"

namespace ephemera {

namespace {

using NlSock = std::unique_ptr<nl_sock, decltype(&nl_socket_free)>;
using Link = std::unique_ptr<rtnl_link, decltype(&rtnl_link_put)>;

NlSock ConnectRoute() {
  NlSock sock(nl_socket_alloc(), nl_socket_free);
  if (!sock) Fail(ErrorCode::kInternal, "cannot allocate a netlink socket");
  int err = nl_connect(sock.get(), NETLINK_ROUTE);
  if (err < 0) Fail(ErrorCode::kInternal, "cannot connect to rtnetlink: {}", nl_geterror(err));
  return sock;
}

ErrorCode CodeFor(int nl_err) {
  return nl_err == -NLE_PERM ? ErrorCode::kPermissionDenied : ErrorCode::kInternal;
}

void AddAddressAndUp(const std::string& name, Ipv4 gateway) {
  NlSock sock = ConnectRoute();
  int ifindex = static_cast<int>(::if_nametoindex(name.c_str()));
  if (ifindex == 0) FailErrno(fmt::format("TAP {} vanished", name), errno);

  std::unique_ptr<rtnl_addr, decltype(&rtnl_addr_put)> addr(rtnl_addr_alloc(), rtnl_addr_put);
  std::uint32_t be = htonl(gateway.value);
  std::unique_ptr<nl_addr, decltype(&nl_addr_put)> local(nl_addr_build(AF_INET, &be, sizeof be),
                                                         nl_addr_put);
  nl_addr_set_prefixlen(local.get(), 30);
  rtnl_addr_set_ifindex(addr.get(), ifindex);
  rtnl_addr_set_local(addr.get(), local.get());
  int err = rtnl_addr_add(sock.get(), addr.get(), 0);
  if (err < 0) {
    Fail(CodeFor(err), "cannot add {}/30 to {}: {}", gateway.str(), name, nl_geterror(err));
  }

  Link change(rtnl_link_alloc(), rtnl_link_put);
  Link current(nullptr, rtnl_link_put);
  rtnl_link* raw = nullptr;
  err = rtnl_link_get_kernel(sock.get(), ifindex, nullptr, &raw);
  if (err < 0) Fail(CodeFor(err), "cannot read link {}: {}", name, nl_geterror(err));
  current.reset(raw);
  rtnl_link_set_flags(change.get(), IFF_UP);
  err = rtnl_link_change(sock.get(), current.get(), change.get(), 0);
  if (err < 0) Fail(CodeFor(err), "cannot bring {} up: {}", name, nl_geterror(err));
}

}  // namespace

std::string TapNameFor(const SandboxId& id) { return std::string(kTapPrefix) + id.ShortName(); }

std::string TapNameForRun(std::string_view run_id, std::string_view machine) {
  std::string key = std::string(run_id) + '\0' + std::string(machine);
  return std::string(kTapPrefix) + "r" + Sha256Hex(key).substr(0, 10);
}

bool InterfaceExists(const std::string& name) { return ::if_nametoindex(name.c_str()) != 0; }

void CreateTap(const std::string& name, Ipv4 gateway) {
  if (name.empty() || name.size() >= IFNAMSIZ) {
    Fail(ErrorCode::kInvalidArgument, "'{}' is not a valid interface name", name);
  }
  if (InterfaceExists(name)) {
    Fail(ErrorCode::kAlreadyExists, "an interface named {} already exists", name);
  }
  UniqueFd tun(::open("/dev/net/tun", O_RDWR | O_CLOEXEC));
  if (!tun) {
    FailErrno(
        "cannot open /dev/net/tun", errno,
        errno == EACCES || errno == EPERM ? ErrorCode::kPermissionDenied : ErrorCode::kUnavailable);
  }
  ifreq ifr{};
  ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
  std::strncpy(ifr.ifr_name, name.c_str(), IFNAMSIZ - 1);
  if (::ioctl(tun.get(), TUNSETIFF, &ifr) != 0) {
    int err = errno;
    FailErrno(fmt::format("cannot create TAP {} (needs CAP_NET_ADMIN)", name), err,
              err == EPERM ? ErrorCode::kPermissionDenied : ErrorCode::kInternal);
  }
  // Persistent: it outlives this fd, so QEMU can attach by name.
  if (::ioctl(tun.get(), TUNSETPERSIST, 1) != 0) {
    FailErrno(fmt::format("cannot make TAP {} persistent", name), errno);
  }
  tun.reset();
  try {
    AddAddressAndUp(name, gateway);
  } catch (...) {
    DeleteTap(name);
    throw;
  }
}

void DeleteTap(const std::string& name) {
  int ifindex = static_cast<int>(::if_nametoindex(name.c_str()));
  if (ifindex == 0) return;
  NlSock sock = ConnectRoute();
  Link link(rtnl_link_alloc(), rtnl_link_put);
  rtnl_link_set_ifindex(link.get(), ifindex);
  int err = rtnl_link_delete(sock.get(), link.get());
  if (err < 0 && err != -NLE_NODEV && err != -NLE_OBJ_NOTFOUND) {
    Fail(CodeFor(err), "cannot delete TAP {}: {}", name, nl_geterror(err));
  }
}

std::vector<std::string> ListEphemeraTaps() {
  std::vector<std::string> taps;
  struct if_nameindex* list = ::if_nameindex();
  if (!list) return taps;
  for (struct if_nameindex* it = list; it->if_index != 0; ++it) {
    std::string name = it->if_name;
    const bool ours = name.rfind(kTapPrefix, 0) == 0 &&
                      (name.size() == kTapPrefix.size() + 8 ||
                       (name.size() == kTapPrefix.size() + 11 && name[kTapPrefix.size()] == 'r'));
    if (ours && IsTunTapDevice(name)) {
      taps.push_back(name);
    }
  }
  ::if_freenameindex(list);
  return taps;
}

}  // namespace ephemera
