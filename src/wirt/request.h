// What a user writes in a wirt tree, validated: VM names, action files and
// their one-line parameters, and the VM's `config`. Pure functions, shared
// by the daemon (which must trust nothing) and the `wirt` command (which
// refuses early what the daemon would reject).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/sandbox.h"

namespace ephemera::wirt {

// ^[a-z0-9][a-z0-9_.-]{0,62}$ with no "..".
bool IsValidVmName(std::string_view name);
// Throws kInvalidArgument naming what is wrong.
void CheckVmName(std::string_view name);

enum class Action { kStart, kShutdown, kDestroy, kAutostart };
std::string_view ActionName(Action action);
// The file names users touch: start, stop (= shutdown), shutdown, destroy,
// autostart. None for any other name.
std::optional<Action> ParseActionFile(std::string_view file_name);

struct ActionParams {
  bool disable = false;  // autostart --disable
  bool graceful = true;  // shutdown: an ACPI power-off (the only mode)
};

// A request file holds at most one line of parameters (a trailing newline
// is fine; empty or the word EMPTY means none), each from the action's own
// list: autostart `--disable`; shutdown `--graceful`, `--mode acpi` or
// `--mode=acpi`; start and destroy none. kInvalidArgument names the
// offending word or byte.
ActionParams ParseActionParams(Action action, std::string_view content);
// The parameters each action takes, for messages and `wirt --help`.
std::string_view AllowedParams(Action action);

// A VM's `config` (JSON object); every key optional, unknown keys refused
// by name.
struct VmConfig {
  std::optional<SandboxKind> kind;  // "vm" (default) or "container"
  std::optional<std::string> image;
  std::optional<unsigned> memory_mib;
  std::optional<unsigned> vcpus;
  std::optional<std::int64_t> ttl_seconds;
  std::vector<std::string> ssh_keys;  // authorised besides the password (CheckAuthorizedKey)
  // The older tool's only documented key: true asks for autostart when
  // the VM is started.
  std::optional<bool> autostart;
};
VmConfig ParseVmConfig(std::string_view json_text);
std::string VmConfigToJson(const VmConfig& config);  // pretty, for `wirt create`

// Bytes a request or config file may hold.
constexpr std::size_t kMaxRequestBytes = 256;
constexpr std::size_t kMaxConfigBytes = 16 * 1024;

// True when every byte is printable ASCII, tab or newline (JSON and
// parameter files are text; anything else is refused as binary).
bool IsPlainText(std::string_view content);

}  // namespace ephemera::wirt
