#include "core/sandbox.h"

#include "core/error.h"

namespace ephemera {

std::string_view StateName(SandboxState state) {
  switch (state) {
    case SandboxState::kCreating:
      return "creating";
    case SandboxState::kProvisioning:
      return "provisioning";
    case SandboxState::kReady:
      return "ready";
    case SandboxState::kDestroying:
      return "destroying";
    case SandboxState::kFailed:
      return "failed";
  }
  return "unknown";
}

SandboxState ParseState(std::string_view name) {
  for (auto s : {SandboxState::kCreating, SandboxState::kProvisioning, SandboxState::kReady,
                 SandboxState::kDestroying, SandboxState::kFailed}) {
    if (StateName(s) == name) return s;
  }
  Fail(ErrorCode::kInvalidArgument, "unknown sandbox state '{}'", name);
}

UnixSeconds NowUnix() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

bool IsAllowedTransition(SandboxState from, SandboxState to) {
  using S = SandboxState;
  switch (from) {
    case S::kCreating:
      return to == S::kProvisioning || to == S::kFailed || to == S::kDestroying;
    case S::kProvisioning:
      return to == S::kReady || to == S::kFailed || to == S::kDestroying;
    case S::kReady:
      return to == S::kDestroying || to == S::kFailed;
    case S::kFailed:
      return to == S::kDestroying;
    case S::kDestroying:
      return false;
  }
  return false;
}

std::string_view KindName(SandboxKind kind) {
  return kind == SandboxKind::kContainer ? "container" : "vm";
}

SandboxKind ParseKind(std::string_view name) {
  if (name == "vm") return SandboxKind::kVm;
  if (name == "container") return SandboxKind::kContainer;
  Fail(ErrorCode::kInvalidArgument, "'{}' is not a sandbox kind (vm or container)",
       name.substr(0, 32));
}

}  // namespace ephemera
