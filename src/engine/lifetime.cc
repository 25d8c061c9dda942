// A sandbox's lifetime changed while it lives: its time to live set anew.
#include <spdlog/spdlog.h>

#include "core/error.h"
#include "engine/engine.h"
#include "engine/moving_guard.h"

namespace ephemera {

std::int64_t Engine::CheckedTtl(std::optional<std::int64_t> ttl_seconds) const {
  const std::int64_t ttl = ttl_seconds.value_or(options_.default_ttl.count());
  if (ttl <= 0 || ttl > options_.max_ttl.count()) {
    Fail(ErrorCode::kInvalidArgument, "ttl_seconds {} is out of range [1, {}]", ttl,
         options_.max_ttl.count());
  }
  return ttl;
}

Sandbox Engine::SetTimeToLive(const SandboxId& id, std::optional<std::int64_t> ttl_seconds,
                              const std::optional<std::string>& token) {
  const std::int64_t ttl = CheckedTtl(ttl_seconds);
  std::optional<MovingGuard> moving;
  std::optional<Sandbox> sandbox = SandboxToMove(id, token, moving);
  Sandbox record = *sandbox;
  if (record.state == SandboxState::kReady) {
    record.expires_at = NowUnix() + ttl;
  } else if (record.state == SandboxState::kPaused) {
    // Its clock stands still while paused: the time applies from its resume.
    record.ttl_left_seconds = ttl;
  } else {
    Fail(ErrorCode::kFailedPrecondition,
         "sandbox {} is {}: only a ready or paused one has a time to live to change", id.str(),
         StateName(record.state));
  }
  store_.Update(record);
  store_.AddEvent("ttl", id.str(), fmt::format("{} s left", ttl));
  spdlog::info("sandbox {}: time to live set to {} s{}", id.str(), ttl,
               record.state == SandboxState::kPaused ? " (from its resume)" : "");
  return record;
}

}  // namespace ephemera
