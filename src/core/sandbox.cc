#include "core/sandbox.h"

#include "core/error.h"
#include "core/text.h"

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
    case SandboxState::kPaused:
      return "paused";
  }
  return "unknown";
}

SandboxState ParseState(std::string_view name) {
  for (auto s : {SandboxState::kCreating, SandboxState::kProvisioning, SandboxState::kReady,
                 SandboxState::kDestroying, SandboxState::kFailed, SandboxState::kPaused}) {
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
      return to == S::kDestroying || to == S::kFailed || to == S::kPaused;
    case S::kPaused:
      return to == S::kReady || to == S::kDestroying || to == S::kFailed;
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

bool IsValidSandboxName(std::string_view name) {
  if (name.empty() || name.size() > 63) return false;
  for (std::size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool alnum = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
    if (!alnum && (i == 0 || (c != '_' && c != '.' && c != '-'))) return false;
  }
  return name.find("..") == std::string_view::npos;
}

void CheckSandboxName(std::string_view name) {
  if (!IsValidSandboxName(name)) {
    Fail(ErrorCode::kInvalidArgument,
         "name '{}' is not valid: 1 to 63 of [a-z0-9_.-], starting with a letter or digit, "
         "without '..'",
         EscapeForLog(name, 80));
  }
}

std::string UserOwner(std::uint32_t uid) { return "uid:" + std::to_string(uid); }

std::optional<std::uint32_t> OwnerUid(std::string_view owner) {
  if (owner.substr(0, 4) != "uid:" || owner.size() == 4 || owner.size() > 14) return std::nullopt;
  std::uint64_t uid = 0;
  for (char c : owner.substr(4)) {
    if (c < '0' || c > '9') return std::nullopt;
    uid = uid * 10 + static_cast<unsigned>(c - '0');
  }
  if (uid > 0xffffffffu) return std::nullopt;
  return static_cast<std::uint32_t>(uid);
}

}  // namespace ephemera
