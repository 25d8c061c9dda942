#include "integration/netns.h"

#include <net/if.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace ephemera::test {

namespace {

[[noreturn]] void Die(const char* what) {
  std::fprintf(stderr, "cannot set up a private network namespace: %s: %s\n", what,
               std::strerror(errno));
  std::exit(2);
}

}  // namespace

void EnterPrivateNetworkNamespace() {
  if (::unshare(CLONE_NEWNET | CLONE_NEWNS) != 0) Die("unshare (needs root)");
  // Keep our mounts from propagating back to the host.
  if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) Die("make / private");
  if (::mount("sysfs", "/sys", "sysfs", 0, nullptr) != 0) Die("mount /sys");
  int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  ifreq ifr{};
  std::strncpy(ifr.ifr_name, "lo", IFNAMSIZ - 1);
  if (fd < 0 || ::ioctl(fd, SIOCGIFFLAGS, &ifr) != 0) Die("read lo flags");
  ifr.ifr_flags |= IFF_UP;
  if (::ioctl(fd, SIOCSIFFLAGS, &ifr) != 0) Die("bring lo up");
  ::close(fd);
}

}  // namespace ephemera::test
