#include "net/tap.h"

#include "core/sha256.h"

#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <sys/ioctl.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "core/error.h"
#include "core/netdev.h"
#include "core/unique_fd.h"
#include "net/rtnl.h"

namespace ephemera {

namespace {

void AddAddressAndUp(const std::string& name, Ipv4 gateway) {
  rtnl::Sock sock = rtnl::Connect();
  rtnl::Link link = rtnl::Get(sock.get(), name);
  if (!link) Fail(ErrorCode::kInternal, "TAP {} vanished", name);
  rtnl::AddAddress(sock.get(), rtnl_link_get_ifindex(link.get()), name, gateway, 30);
  rtnl::SetUp(sock.get(), link.get());
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
  rtnl::Sock sock = rtnl::Connect();
  rtnl::Delete(sock.get(), ifindex, "TAP " + name);
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
