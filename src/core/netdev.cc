#include "core/netdev.h"

#include <fcntl.h>
#include <linux/ethtool.h>
#include <linux/if_tun.h>
#include <linux/sockios.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include <cstring>

#include "core/error.h"
#include "core/unique_fd.h"

namespace ephemera {

bool IsTunTapDevice(const std::string& name) {
  if (name.empty() || name.size() >= IFNAMSIZ) return false;
  UniqueFd sock(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!sock) return false;
  ethtool_drvinfo info{};
  info.cmd = ETHTOOL_GDRVINFO;
  ifreq ifr{};
  std::strncpy(ifr.ifr_name, name.c_str(), IFNAMSIZ - 1);
  ifr.ifr_data = reinterpret_cast<char*>(&info);
  if (::ioctl(sock.get(), SIOCETHTOOL, &ifr) != 0) return false;
  return std::strcmp(info.driver, "tun") == 0;
}

UniqueFd OpenTap(const std::string& name) {
  if (!IsTunTapDevice(name)) Fail(ErrorCode::kNotFound, "TAP device '{}' does not exist", name);
  UniqueFd tun(::open("/dev/net/tun", O_RDWR | O_CLOEXEC));
  if (!tun) FailErrno("cannot open /dev/net/tun", errno, ErrorCode::kUnavailable);
  ifreq ifr{};
  ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
  std::strncpy(ifr.ifr_name, name.c_str(), IFNAMSIZ - 1);
  if (::ioctl(tun.get(), TUNSETIFF, &ifr) != 0) {
    FailErrno(fmt::format("cannot attach to TAP {}", name), errno);
  }
  return tun;
}

UniqueFd OpenScratchTap(std::string* name) {
  UniqueFd tun(::open("/dev/net/tun", O_RDWR | O_CLOEXEC));
  if (!tun) FailErrno("cannot open /dev/net/tun", errno, ErrorCode::kUnavailable);
  ifreq ifr{};
  ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
  std::strncpy(ifr.ifr_name, "ephsnap%d", IFNAMSIZ - 1);
  if (::ioctl(tun.get(), TUNSETIFF, &ifr) != 0) FailErrno("cannot make a scratch TAP", errno);
  *name = ifr.ifr_name;
  return tun;
}

}  // namespace ephemera
