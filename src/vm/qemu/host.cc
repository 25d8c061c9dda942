#include "vm/qemu/host.h"

#include <unistd.h>

#include <sstream>

#include "core/error.h"
#include "core/fs.h"

namespace ephemera {

std::uint64_t HostMemoryMib() {
  std::istringstream meminfo(ReadFile("/proc/meminfo"));
  std::string key;
  std::uint64_t kib = 0;
  std::string unit;
  while (meminfo >> key >> kib >> unit) {
    if (key == "MemTotal:") return kib / 1024;
  }
  Fail(ErrorCode::kInternal, "MemTotal not found in /proc/meminfo");
}

unsigned HostCpuCount() {
  long n = ::sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? static_cast<unsigned>(n) : 1;
}

bool IsValidMac(const std::string& mac) {
  if (mac.size() != 17) return false;
  for (std::size_t i = 0; i < mac.size(); ++i) {
    char c = mac[i];
    if (i % 3 == 2) {
      if (c != ':') return false;
    } else if (!std::isxdigit(static_cast<unsigned char>(c))) {
      return false;
    }
  }
  // The first octet must be unicast (bit 0 clear).
  return (std::stoi(mac.substr(0, 2), nullptr, 16) & 1) == 0;
}

}  // namespace ephemera
