// `ephemerad check`: boots one VM from an image with the configured driver,
// waits for the guest's init and sshd markers on its console, powers it off
// and removes it. Proves a host can run sandboxes.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

#include "config/config.h"

namespace ephemera {

struct SelfTestOptions {
  std::string image = "default";
  unsigned memory_mib = 256;
  std::chrono::seconds boot_timeout{60};
};

struct SelfTestReport {
  std::chrono::milliseconds start{0};      // QEMU launched (clone + process)
  std::chrono::milliseconds init{0};       // guest init marker after launch
  std::chrono::milliseconds sshd{0};       // sshd marker after launch
  std::chrono::milliseconds powerdown{0};  // graceful power-off
  bool graceful = false;
  std::uint64_t qemu_rss_kib = 0;  // QEMU's resident memory once sshd is up
};

// Throws with the console's last lines when the guest does not come up.
SelfTestReport RunSelfTest(const Config& config, const SelfTestOptions& options);

}  // namespace ephemera
