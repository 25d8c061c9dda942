#include "vm/vm.h"

namespace ephemera {

std::string_view VmStateName(VmState state) {
  switch (state) {
    case VmState::kRunning:
      return "running";
    case VmState::kPaused:
      return "paused";
    case VmState::kShutoff:
      return "shutoff";
  }
  return "unknown";
}

}  // namespace ephemera
