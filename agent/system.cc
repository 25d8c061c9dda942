#include "agent/system.h"

#include <fcntl.h>
#include <linux/random.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstring>
#include <stdexcept>
#include <utility>
#include <vector>

#include "agent/error.h"
#include "agent/netlink.h"

namespace ephemera::agent {

void LinuxSystem::AddEntropy(const std::string& bytes) {
  int fd = ::open("/dev/urandom", O_WRONLY | O_CLOEXEC);
  if (fd < 0) throw std::runtime_error(ErrnoText("open", "/dev/urandom", errno));
  // struct rand_pool_info: two ints, then the bytes (in u32 words).
  std::vector<uint32_t> storage(2 + (bytes.size() + 3) / 4);
  auto* info = reinterpret_cast<rand_pool_info*>(storage.data());
  info->entropy_count = static_cast<int>(8 * bytes.size());
  info->buf_size = static_cast<int>(bytes.size());
  std::memcpy(reinterpret_cast<char*>(storage.data()) + offsetof(rand_pool_info, buf), bytes.data(),
              bytes.size());
  // Credited and then used at once: the guest's CRNG is as good as the
  // host's randomness before sshd makes its first key exchange.
  int failed = ::ioctl(fd, RNDADDENTROPY, info) != 0 ? errno : 0;
  if (failed == 0 && ::ioctl(fd, RNDRESEEDCRNG) != 0) failed = errno;
  ::close(fd);
  if (failed != 0) throw std::runtime_error(ErrnoText("feed", "/dev/urandom", failed));
}

void LinuxSystem::SetClock(int64_t unix_ns) {
  timespec now{static_cast<time_t>(unix_ns / 1000000000), static_cast<long>(unix_ns % 1000000000)};
  if (::clock_settime(CLOCK_REALTIME, &now) != 0) {
    throw std::runtime_error(ErrnoText("set", "the clock", errno));
  }
}

void LinuxSystem::SetHostname(const std::string& name) {
  if (::sethostname(name.data(), name.size()) != 0) {
    throw std::runtime_error(ErrnoText("set", "the hostname", errno));
  }
}

void LinuxSystem::ConfigureNetwork(const Network& network) {
  std::string name = FirstInterface();
  if (name.empty()) throw std::runtime_error("no network interface");
  ConfigureInterface(name, network);
}

void LinuxSystem::StartDhcp() {
  std::string name = FirstInterface();
  if (name.empty()) return;  // nothing to configure
  // As rcS without agent: udhcpc returns with a lease or after its tries,
  // and keeps renewing in the background.
  const char* const argv[] = {
      "/sbin/udhcpc", "-i", name.c_str(),         "-b",   "-t", "4", "-T", "1", "-A", "10",
      "-S",           "-s", "/etc/udhcpc.script", nullptr};
  dhcp_ = Spawn(argv);
}

void LinuxSystem::AwaitDhcp() {
  if (dhcp_ == 0) return;
  std::string failure = WaitFor(std::exchange(dhcp_, 0));
  if (!failure.empty()) throw std::runtime_error("udhcpc exited with " + failure);
}

void LinuxSystem::StartSshd(uint16_t port) { agent::StartSshd(port); }

bool LinuxSystem::AwaitSshd(uint16_t port) { return agent::AwaitSshd(port); }

}  // namespace ephemera::agent
