#include "vm/vm.h"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <fstream>
#include <iterator>
#include <sstream>

#include "vm/driver.h"

namespace ephemera {

std::string_view VmStateName(VmState state) {
  switch (state) {
    case VmState::kRunning:
      return "running";
    case VmState::kPaused:
      return "paused";
    case VmState::kShutoff:
      return "shutoff";
    case VmState::kSaved:
      return "saved";
  }
  return "unknown";
}

void VmDriver::DestroyAfterFailedStart(const SandboxId& id) {
  try {
    Destroy(id);
  } catch (const Error& cleanup) {
    spdlog::error("vm {}: cleanup after failed start: {}", id.str(), cleanup.what());
  }
}

}  // namespace ephemera

namespace ephemera {

std::optional<ResourceUsage> UsageOfProcess(pid_t pid) {
  if (pid <= 0) return std::nullopt;
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(stat, line)) return std::nullopt;
  // Fields after the command (which may hold spaces) in its parentheses.
  const auto close = line.rfind(')');
  if (close == std::string::npos) return std::nullopt;
  std::istringstream rest(line.substr(close + 2));
  std::vector<std::string> fields{std::istream_iterator<std::string>(rest), {}};
  // utime and stime are fields 14 and 15 of stat(5), rss 24; here from the 3rd.
  if (fields.size() < 22) return std::nullopt;
  const double ticks = static_cast<double>(::sysconf(_SC_CLK_TCK));
  ResourceUsage usage;
  usage.cpu_seconds = (std::stod(fields[11]) + std::stod(fields[12])) / ticks;
  usage.memory_bytes =
      std::stoull(fields[21]) * static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
  return usage;
}

}  // namespace ephemera
