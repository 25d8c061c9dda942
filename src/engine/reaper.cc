// The reaper: a sandbox whose VM stopped by itself, or whose time is up, is
// destroyed; a failed one whose rollback was incomplete is retried.
#include <spdlog/spdlog.h>

#include "core/error.h"
#include "core/event_types.h"
#include "engine/engine.h"

namespace ephemera {

void Engine::ReapOnce() {
  RetryRecordRemovals();
  const UnixSeconds now = NowUnix();
  std::set<SandboxId> creating;
  std::set<SandboxId> destroying;
  std::set<SandboxId> moving;
  {
    std::lock_guard lock(bookkeeping_mutex_);
    creating = creating_;
    destroying.insert(destroying_.begin(), destroying_.end());
    moving = moving_;
  }
  for (const auto& s : ListRecorded()) {
    if (destroying.count(s.id)) continue;  // its destroy is under way
    if (moving.count(s.id)) continue;      // a pause, resume or change is: looked at next time
    std::string reason;
    Removal removal{event_type::kReaped, ""};
    if (s.state == SandboxState::kCreating || s.state == SandboxState::kProvisioning) {
      // Only a create that no longer runs leaves a row like this (its
      // rollback could not write): it would count against the limits forever.
      if (!creating.count(s.id)) {
        reason = "its creation did not finish";
        removal.cause = "unfinished_create";
      }
    } else if (s.state == SandboxState::kReady || s.state == SandboxState::kPaused) {
      const bool paused = s.state == SandboxState::kPaused;
      if (s.expires_at && *s.expires_at <= now) {
        reason =
            paused ? "paused for longer than limits.max_paused_seconds" : "time to live expired";
        removal = {event_type::kExpired, paused ? "paused_too_long" : "ttl"};
      } else {
        try {
          if (IdleTooLong(s)) {
            reason = fmt::format("idle for {} s (its idle timeout)", s.spec.idle_timeout_seconds);
            removal.cause = "idle";
          } else if (DriverOf(s).Inspect(s.id).state == VmState::kShutoff) {
            reason = paused ? "its saved state is gone" : "the guest shut down";
            removal.cause = paused ? "saved_state_gone" : "guest_shutdown";
          }
        } catch (const Error& e) {
          // Only "not there" counts: a check that failed (no descriptor
          // left, an I/O error) says nothing about the VM, so skip it.
          if (e.code() == ErrorCode::kNotFound) {
            reason = "its VM is gone";
            removal.cause = "vm_gone";
          } else {
            spdlog::warn("reaper: sandbox {}: cannot check its VM, skipped: {}", s.id.str(),
                         e.what());
          }
        }
      }
    } else if (s.state == SandboxState::kFailed || s.state == SandboxState::kDestroying) {
      reason = s.reason.empty() ? "unfinished teardown" : s.reason;
      removal.cause = "unfinished_teardown";
    }
    if (reason.empty()) continue;
    try {
      // Judged on the row read above: still so once no pause, resume or
      // lifetime change runs (an extend may have raced this look).
      const bool expiry = (s.state == SandboxState::kReady || s.state == SandboxState::kPaused) &&
                          s.expires_at && *s.expires_at <= now;
      const SandboxState seen = s.state;
      const bool idle = reason.starts_with("idle for");
      Destroy(
          s.id, std::nullopt, reason, false,
          [this, expiry, idle, seen](const Sandbox& current) {
            if (current.state != seen) return current.state == SandboxState::kDestroying;
            // Used since the look above (an exec started, a login): kept.
            if (idle) return IdleTooLong(current);
            return !expiry || (current.expires_at && *current.expires_at <= NowUnix());
          },
          removal);
    } catch (const Error& e) {
      if (e.code() != ErrorCode::kNotFound)
        spdlog::error("reaper: sandbox {}: {}", s.id.str(), e.what());
    }
  }
}

void Engine::StartReaper() {
  reaper_ = std::thread([this] {
    std::unique_lock lock(reaper_mutex_);
    for (;;) {
      reaper_wake_.wait_for(lock, options_.reaper_interval,
                            [this] { return stopping_ || reap_now_; });
      if (stopping_) break;
      reap_now_ = false;
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
