#include "vm/qemu/host.h"

#include <time.h>
#include <unistd.h>
#include <x86intrin.h>

#include <algorithm>

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

std::optional<std::uint64_t> HostTscKhz() {
#if defined(__x86_64__)
  std::string cpuinfo = ReadFile("/proc/cpuinfo");
  if (cpuinfo.find(" constant_tsc") == std::string::npos) return std::nullopt;
  auto now_ns = [] {
    timespec ts{};
    ::clock_gettime(CLOCK_MONOTONIC_RAW, &ts);
    return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000u +
           static_cast<std::uint64_t>(ts.tv_nsec);
  };
  // Three 20 ms windows; the largest rate is the least disturbed by preemption.
  std::uint64_t best = 0;
  for (int i = 0; i < 3; ++i) {
    std::uint64_t t0 = now_ns(), c0 = __rdtsc();
    ::usleep(20000);
    std::uint64_t t1 = now_ns(), c1 = __rdtsc();
    if (t1 > t0) best = std::max(best, (c1 - c0) * 1'000'000u / (t1 - t0));
  }
  if (best == 0) return std::nullopt;
  return best;
#else
  return std::nullopt;
#endif
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
