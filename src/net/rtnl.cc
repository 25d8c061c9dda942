#include "net/rtnl.h"

#include <arpa/inet.h>
#include <net/if.h>
#include <netlink/route/addr.h>

#include <cstring>

namespace ephemera::rtnl {

Sock Connect() {
  Sock sock(nl_socket_alloc(), nl_socket_free);
  if (!sock) Fail(ErrorCode::kInternal, "cannot allocate a netlink socket");
  int err = nl_connect(sock.get(), NETLINK_ROUTE);
  if (err < 0) Fail(ErrorCode::kInternal, "cannot connect to rtnetlink: {}", nl_geterror(err));
  return sock;
}

ErrorCode CodeFor(int nl_err) {
  return nl_err == -NLE_PERM ? ErrorCode::kPermissionDenied : ErrorCode::kInternal;
}

namespace {

Link GetKernel(nl_sock* sock, int ifindex, const char* name, const std::string& what) {
  rtnl_link* raw = nullptr;
  int err = rtnl_link_get_kernel(sock, ifindex, name, &raw);
  if (err == -NLE_NODEV || err == -NLE_OBJ_NOTFOUND) return Link(nullptr, rtnl_link_put);
  if (err < 0) Fail(CodeFor(err), "cannot read link {}: {}", what, nl_geterror(err));
  return Link(raw, rtnl_link_put);
}

}  // namespace

Link Get(nl_sock* sock, const std::string& name) {
  if (name.empty() || name.size() >= IFNAMSIZ) return Link(nullptr, rtnl_link_put);
  return GetKernel(sock, 0, name.c_str(), name);
}

Link Get(nl_sock* sock, int ifindex) {
  return GetKernel(sock, ifindex, nullptr, "#" + std::to_string(ifindex));
}

bool IsVeth(rtnl_link* link) {
  const char* kind = rtnl_link_get_type(link);
  return kind && std::strcmp(kind, "veth") == 0;
}

void AddAddress(nl_sock* sock, int ifindex, const std::string& name, Ipv4 address, int prefix) {
  std::unique_ptr<rtnl_addr, decltype(&rtnl_addr_put)> addr(rtnl_addr_alloc(), rtnl_addr_put);
  std::uint32_t be = htonl(address.value);
  std::unique_ptr<nl_addr, decltype(&nl_addr_put)> local(nl_addr_build(AF_INET, &be, sizeof be),
                                                         nl_addr_put);
  if (!addr || !local) Fail(ErrorCode::kInternal, "out of memory building an address");
  nl_addr_set_prefixlen(local.get(), prefix);
  rtnl_addr_set_ifindex(addr.get(), ifindex);
  rtnl_addr_set_local(addr.get(), local.get());
  int err = rtnl_addr_add(sock, addr.get(), 0);
  if (err < 0) {
    Fail(CodeFor(err), "cannot add {}/{} to {}: {}", address.str(), prefix, name, nl_geterror(err));
  }
}

void SetUp(nl_sock* sock, rtnl_link* link) {
  Link change(rtnl_link_alloc(), rtnl_link_put);
  if (!change) Fail(ErrorCode::kInternal, "out of memory building a link change");
  rtnl_link_set_flags(change.get(), IFF_UP);
  int err = rtnl_link_change(sock, link, change.get(), 0);
  if (err < 0) {
    Fail(CodeFor(err), "cannot bring {} up: {}", rtnl_link_get_name(link), nl_geterror(err));
  }
}

void Delete(nl_sock* sock, int ifindex, const std::string& name) {
  Link link(rtnl_link_alloc(), rtnl_link_put);
  if (!link) Fail(ErrorCode::kInternal, "out of memory building a link deletion");
  rtnl_link_set_ifindex(link.get(), ifindex);
  int err = rtnl_link_delete(sock, link.get());
  if (err < 0 && err != -NLE_NODEV && err != -NLE_OBJ_NOTFOUND) {
    Fail(CodeFor(err), "cannot delete {}: {}", name, nl_geterror(err));
  }
}

}  // namespace ephemera::rtnl
