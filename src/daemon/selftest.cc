#include "daemon/selftest.h"

#include <spdlog/spdlog.h>

#include <sstream>

#include "core/error.h"
#include "core/fs.h"
#include "image/catalog.h"
#include "vm/console.h"
#include "vm/qemu/accel.h"
#include "vm/qemu/qemu_driver.h"

namespace ephemera {

using Clock = std::chrono::steady_clock;
using std::chrono::duration_cast;
using std::chrono::milliseconds;

namespace {

std::uint64_t ProcessRssKib(pid_t pid) {
  try {
    std::istringstream status(ReadFile(fmt::format("/proc/{}/status", pid)));
    std::string line;
    while (std::getline(status, line)) {
      if (line.rfind("VmRSS:", 0) == 0) return std::stoull(line.substr(6));
    }
  } catch (const std::exception&) {
  }
  return 0;
}

}  // namespace

SelfTestReport RunSelfTest(const Config& config, const SelfTestOptions& options) {
  AccelChoice accel = ChooseAccel(config.vm.accel, ProbeKvm());
  spdlog::info("accelerator: {} ({})", AccelName(accel.accel), accel.reason);
  ImageCatalog catalog(config.image_dir);
  auto cgroups =
      std::make_shared<Cgroups>(Cgroups::Discover(Cgroups::SubtreeFor(config.state_dir)));
  QemuDriver driver({config.state_dir, config.vm, accel, cgroups});

  VmSpec spec(SandboxId::Generate());
  spec.image = catalog.Get(options.image);
  spec.memory_mib = options.memory_mib;
  SelfTestReport report;
  auto t0 = Clock::now();
  VmInfo info = driver.Start(spec);
  report.start = duration_cast<milliseconds>(Clock::now() - t0);
  // Whatever happens next, the VM goes.
  struct Cleanup {
    QemuDriver& driver;
    SandboxId id;
    ~Cleanup() {
      try {
        driver.Destroy(id);
      } catch (const Error& e) {
        spdlog::error("vm {}: destroy failed: {}", id.str(), e.what());
      }
    }
  } cleanup{driver, spec.id};

  auto running = [&] { return driver.Inspect(spec.id).state != VmState::kShutoff; };
  auto remaining = [&] {
    return duration_cast<milliseconds>(options.boot_timeout - (Clock::now() - t0));
  };
  WaitForConsoleMarker(info.serial_log, "EPHEMERA_GUEST_INIT", remaining(), running);
  report.init = duration_cast<milliseconds>(Clock::now() - t0);
  WaitForConsoleMarker(info.serial_log, "EPHEMERA_SSHD_READY", remaining(), running);
  report.sshd = duration_cast<milliseconds>(Clock::now() - t0);
  report.qemu_rss_kib = ProcessRssKib(info.pid);

  auto t1 = Clock::now();
  report.graceful = driver.Shutdown(spec.id, milliseconds(config.vm.powerdown_timeout_ms));
  report.powerdown = duration_cast<milliseconds>(Clock::now() - t1);
  return report;
}

}  // namespace ephemera
