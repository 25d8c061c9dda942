// The types of the daemon's events: the store's event log, /v1/events and
// the hooks (hooks.on) all name them so.
#pragma once

#include <array>
#include <string_view>

namespace ephemera::event_type {

// A sandbox's life. `failed`: a create rolled back (its cause says why);
// `destroyed`: by a request or the daemon; `reaped`: its guest shut down,
// went idle or vanished; `expired`: its time to live (or time paused) ran out.
inline constexpr std::string_view kCreated = "created";
inline constexpr std::string_view kReady = "ready";
inline constexpr std::string_view kFailed = "failed";
inline constexpr std::string_view kDestroyed = "destroyed";
inline constexpr std::string_view kReaped = "reaped";
inline constexpr std::string_view kExpired = "expired";
inline constexpr std::string_view kPaused = "paused";
inline constexpr std::string_view kResumed = "resumed";
inline constexpr std::string_view kTtlChanged = "ttl_changed";
inline constexpr std::string_view kPortExposed = "port_exposed";
inline constexpr std::string_view kPortClosed = "port_closed";
inline constexpr std::string_view kOutOfMemory = "out_of_memory";
// The daemon's own.
inline constexpr std::string_view kImageImported = "image_imported";
inline constexpr std::string_view kImageEvicted = "image_evicted";
inline constexpr std::string_view kTokenAdded = "token_added";
inline constexpr std::string_view kTokenEnabled = "token_enabled";
inline constexpr std::string_view kTokenDisabled = "token_disabled";
inline constexpr std::string_view kTokenDeleted = "token_deleted";
inline constexpr std::string_view kDaemonStarted = "daemon_started";
inline constexpr std::string_view kDaemonStopped = "daemon_stopped";

inline constexpr std::array kAll = {
    kCreated,      kReady,         kFailed,        kDestroyed,     kReaped,
    kExpired,      kPaused,        kResumed,       kTtlChanged,    kPortExposed,
    kPortClosed,   kOutOfMemory,   kImageImported, kImageEvicted,  kTokenAdded,
    kTokenEnabled, kTokenDisabled, kTokenDeleted,  kDaemonStarted, kDaemonStopped,
};

inline bool IsKnown(std::string_view type) {
  for (auto t : kAll)
    if (t == type) return true;
  return false;
}

}  // namespace ephemera::event_type
