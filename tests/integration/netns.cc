#include "integration/netns.h"

#include <net/if.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <unistd.h>

#include <signal.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>

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
  // A sysfs of this namespace's own hides the host's cgroup mounts under
  // /sys/fs/cgroup, which the daemon needs: carry them over.
  char keep[] = "/tmp/ephemera-netns-cgroup-XXXXXX";
  if (!::mkdtemp(keep)) Die("mkdtemp");
  if (::mount("/sys/fs/cgroup", keep, nullptr, MS_BIND | MS_REC, nullptr) != 0) {
    Die("keep /sys/fs/cgroup");
  }
  if (::mount("sysfs", "/sys", "sysfs", 0, nullptr) != 0) Die("mount /sys");
  if (::mount(keep, "/sys/fs/cgroup", nullptr, MS_MOVE, nullptr) != 0) Die("move cgroups back");
  ::rmdir(keep);
  int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  ifreq ifr{};
  std::strncpy(ifr.ifr_name, "lo", IFNAMSIZ - 1);
  if (fd < 0 || ::ioctl(fd, SIOCGIFFLAGS, &ifr) != 0) Die("read lo flags");
  ifr.ifr_flags |= IFF_UP;
  if (::ioctl(fd, SIOCSIFFLAGS, &ifr) != 0) Die("bring lo up");
  ::close(fd);
}

void EndNamespaceOrphans() {
  std::error_code ec;
  const auto own = std::filesystem::read_symlink("/proc/self/ns/net", ec);
  if (ec) return;
  for (const auto& entry : std::filesystem::directory_iterator("/proc", ec)) {
    const std::string pid = entry.path().filename();
    if (pid.find_first_not_of("0123456789") != std::string::npos) continue;
    if (std::filesystem::read_symlink(entry.path() / "ns/net", ec) != own || ec) continue;
    std::ifstream stat(entry.path() / "stat");
    std::string line;
    std::getline(stat, line);
    // "pid (comm) state ppid ...": comm may hold spaces, so after the last ')'.
    const auto close = line.rfind(')');
    if (close == std::string::npos) continue;
    char state = 0;
    int ppid = 0;
    if (std::sscanf(line.c_str() + close + 1, " %c %d", &state, &ppid) == 2 && ppid == 1) {
      ::kill(std::stoi(pid), SIGKILL);
    }
  }
}

}  // namespace ephemera::test
