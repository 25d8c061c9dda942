#include "vm/vm.h"

#include <spdlog/spdlog.h>

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
