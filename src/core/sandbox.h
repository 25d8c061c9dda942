// The sandbox as every part sees it: what was asked for (SandboxSpec) and
// where it is in its life (SandboxState).
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

namespace ephemera {

enum class SandboxState { kCreating, kProvisioning, kReady, kDestroying, kFailed };

std::string_view StateName(SandboxState state);
SandboxState ParseState(std::string_view name);  // throws kInvalidArgument

// The life of a sandbox only moves forward: creating -> provisioning ->
// ready -> destroying; any state but destroying may fail, and a failed one
// may only be destroyed.
bool IsAllowedTransition(SandboxState from, SandboxState to);

struct SandboxSpec {
  std::string image = "default";
  unsigned memory_mib = 256;
  unsigned vcpus = 1;
  std::optional<std::chrono::seconds> ttl;  // none: the configured default
};

}  // namespace ephemera
