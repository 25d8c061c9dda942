// Warm pools: sandboxes booted and provisioned ahead of demand, handed out
// by a create that matches them. A member's credentials exist only in this
// process until it is handed out; its TTL starts then. Members are filled
// one at a time, only with a create slot nobody waits for, so explicit
// creates come first; they count against the host's memory budget, not
// against any caller's limits.
#include <spdlog/spdlog.h>

#include "core/error.h"
#include "core/event_types.h"
#include "core/sha256.h"
#include "engine/engine.h"

namespace ephemera {

using Clock = std::chrono::steady_clock;
using std::chrono::duration_cast;
using std::chrono::milliseconds;

std::optional<CreateResult> Engine::TakeFromPool(const CreateRequest& request, const Validated& v) {
  // What a member cannot carry: another kind, a pipeline's derived address,
  // the client's own keys (installed at provisioning), egress asked for by
  // name (a member's network has what a create naming none gets).
  if (v.spec.kind != SandboxKind::kVm || !v.spec.run_id.empty() ||
      !request.authorized_keys.empty() || request.owner == kPoolOwner || request.egress) {
    return std::nullopt;
  }
  Pool* pool = nullptr;
  for (Pool& p : pools_) {
    if (p.spec.image == v.spec.image && p.spec.memory_mib == v.spec.memory_mib &&
        p.spec.vcpus == v.spec.vcpus) {
      pool = &p;
    }
  }
  if (!pool) return std::nullopt;
  const auto t0 = Clock::now();
  for (;;) {
    std::optional<PoolMember> taken;
    {
      std::lock_guard lock(pool_mutex_);
      if (pool->ready.empty()) {
        ++pool->misses;
        pool_wake_.notify_all();
        return std::nullopt;
      }
      taken = std::move(pool->ready.front());
      pool->ready.pop_front();
    }
    PoolMember& member = *taken;
    pool_wake_.notify_all();  // refill
    const std::string token = NewClientToken();
    Store::Claim claim{request.owner,       Sha256Hex(token),
                       request.name,        NowUnix() + v.spec.ttl->count(),
                       request.owner_limit, request.owner_memory_mib};
    Sandbox sandbox(member.id);
    try {
      sandbox = store_.Hand(member.id, std::string(kPoolOwner), claim);
    } catch (const Error& e) {
      if (e.code() == ErrorCode::kNotFound) continue;  // gone meanwhile (the reaper): the next
      // The caller's limit or name: the member stays the pool's.
      std::lock_guard lock(pool_mutex_);
      pool->ready.push_front(std::move(member));
      throw;
    }
    {
      std::lock_guard lock(pool_mutex_);
      ++pool->hits;
    }
    CreateResult result{sandbox, std::move(member.password), token, std::move(member.host_key), {}};
    result.phases.total = duration_cast<milliseconds>(Clock::now() - t0);
    result.phases.start = "pool";
    try {
      store_.AddEvent(event_type::kCreated, sandbox.id.str(), v.spec.image + " (warm pool)");
      store_.AddEvent(event_type::kReady, sandbox.id.str(),
                      fmt::format("{} ms", result.phases.total.count()));
    } catch (const Error& e) {
      spdlog::warn("sandbox {}: events not recorded: {}", sandbox.id.str(), e.what());
    }
    spdlog::info("sandbox {}: handed out from the warm pool in {} ms", sandbox.id.str(),
                 result.phases.total.count());
    FillRunning(result.sandbox);
    return result;
  }
}

void Engine::FillPoolsOnce() {
  for (Pool& pool : pools_) {
    {
      std::lock_guard lock(pool_mutex_);
      if (pool_stopping_ || pool.ready.size() >= pool.spec.size) continue;
    }
    // Only a free slot: an explicit create never waits for the pool.
    if (!create_slots_.try_acquire()) return;
    struct Release {
      decltype(create_slots_)& slots;
      ~Release() { slots.release(); }
    } release{create_slots_};
    CreateRequest request;
    request.image = pool.spec.image;
    request.memory_mib = pool.spec.memory_mib;
    request.vcpus = pool.spec.vcpus;
    request.owner = std::string(kPoolOwner);
    CreateResult made = CreateNew(request, Validate(request), true);
    // No time to live until it is handed out.
    Sandbox member = made.sandbox;
    member.expires_at.reset();
    store_.Update(member);
    bool keep = true;
    {
      std::lock_guard lock(pool_mutex_);
      keep = !pool_stopping_;
      if (keep) {
        pool.ready.push_back({member.id, std::move(made.password), std::move(made.host_key)});
      }
    }
    if (!keep)
      Destroy(member.id, std::nullopt, "the warm pool stopped", false, {},
              {event_type::kDestroyed, "pool_stopped"});
  }
}

void Engine::StartPool() {
  for (const PoolSpec& spec : options_.pools) {
    if (spec.size == 0) continue;
    try {
      images_.Get(spec.image);
    } catch (const Error& e) {
      spdlog::error("warm pool of image '{}' is off (config key 'pool'): {}", spec.image, e.what());
      continue;
    }
    pools_.push_back(Pool{spec, {}, 0, 0});
  }
  if (!background_needed()) return;
  // Snapshot templates first: the pool's members start from them.
  pool_thread_ = std::thread([this] {
    auto pause = milliseconds(0);
    std::unique_lock lock(pool_mutex_);
    while (!pool_stopping_) {
      pool_wake_.wait_for(lock, pause, [this] { return pool_stopping_ || background_wake_; });
      background_wake_ = false;
      if (pool_stopping_) break;
      lock.unlock();
      try {
        BuildSnapshotsOnce();
        FillPoolsOnce();
        pause = milliseconds(1000);
      } catch (const std::exception& e) {
        // An image that does not boot must not spin the host.
        spdlog::warn("warm pool: a member could not be made, retrying in 30 s: {}", e.what());
        pause = milliseconds(30000);
      }
      lock.lock();
    }
  });
}

void Engine::StopPool() {
  {
    std::lock_guard lock(pool_mutex_);
    pool_stopping_ = true;
  }
  pool_wake_.notify_all();
  if (pool_thread_.joinable()) pool_thread_.join();
  std::vector<SandboxId> members;
  {
    std::lock_guard lock(pool_mutex_);
    for (Pool& pool : pools_) {
      for (const PoolMember& m : pool.ready) members.push_back(m.id);
      pool.ready.clear();
    }
  }
  // Their credentials end with this process: nobody could use them.
  for (const SandboxId& id : members) {
    try {
      Destroy(id, std::nullopt, "the warm pool stopped", false, {},
              {event_type::kDestroyed, "pool_stopped"});
    } catch (const Error& e) {
      spdlog::warn("warm pool: member {}: {}", id.str(), e.what());
    }
  }
}

}  // namespace ephemera
