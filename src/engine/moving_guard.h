// Engine::MovingGuard: marks a sandbox as being paused, resumed or having
// its lifetime changed, so that nothing else moves it meanwhile and the
// reaper leaves it alone. Private to the engine's sources.
#pragma once

#include "core/error.h"
#include "engine/engine.h"

namespace ephemera {

class Engine::MovingGuard {
 public:
  MovingGuard(Engine& engine, const SandboxId& id) : engine_(engine), id_(id) {
    std::lock_guard lock(engine_.bookkeeping_mutex_);
    if (engine_.destroying_.count(id_) || !engine_.moving_.insert(id_).second) {
      Fail(ErrorCode::kFailedPrecondition,
           "sandbox {} is busy: being paused, resumed or destroyed, or its time to live or ports "
           "changed",
           id_.str());
    }
  }
  MovingGuard(const MovingGuard&) = delete;
  MovingGuard& operator=(const MovingGuard&) = delete;
  ~MovingGuard() {
    {
      std::lock_guard lock(engine_.bookkeeping_mutex_);
      engine_.moving_.erase(id_);
    }
    engine_.moving_done_.notify_all();
  }

 private:
  Engine& engine_;
  SandboxId id_;
};

}  // namespace ephemera
