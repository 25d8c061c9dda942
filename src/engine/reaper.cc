// The reaper: a sandbox whose VM stopped by itself, or whose time is up, is
// destroyed; a failed one whose rollback was incomplete is retried.
#include <spdlog/spdlog.h>

#include "core/error.h"
#include "engine/engine.h"

namespace ephemera {

void Engine::ReapOnce() {
  const UnixSeconds now = NowUnix();
  for (const auto& s : store_.List()) {
    std::string reason;
    if (s.state == SandboxState::kReady) {
      if (s.expires_at && *s.expires_at <= now) {
        reason = "time to live expired";
      } else {
        try {
          if (vms_.Inspect(s.id).state == VmState::kShutoff) reason = "the guest shut down";
        } catch (const Error& e) {
          if (e.code() == ErrorCode::kNotFound) reason = "its VM is gone";
        }
      }
    } else if (s.state == SandboxState::kFailed || s.state == SandboxState::kDestroying) {
      reason = s.reason.empty() ? "unfinished teardown" : s.reason;
    }
    if (reason.empty()) continue;
    try {
      Destroy(s.id, std::nullopt, reason);
    } catch (const Error& e) {
      if (e.code() != ErrorCode::kNotFound)
        spdlog::error("reaper: sandbox {}: {}", s.id.str(), e.what());
    }
  }
}

void Engine::StartReaper() {
  reaper_ = std::thread([this] {
    std::unique_lock lock(reaper_mutex_);
    while (!reaper_wake_.wait_for(lock, options_.reaper_interval, [this] { return stopping_; })) {
      lock.unlock();
      try {
        ReapOnce();
      } catch (const std::exception& e) {
        spdlog::error("reaper: {}", e.what());
      }
      lock.lock();
    }
  });
}

}  // namespace ephemera
