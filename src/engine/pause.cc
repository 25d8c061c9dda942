// Pause and resume: a sandbox's whole state saved to disk and its VM ended
// (its host memory free), then restored where it stopped.
#include <spdlog/spdlog.h>

#include "core/error.h"
#include "core/event_types.h"
#include "engine/engine.h"
#include "engine/moving_guard.h"

namespace ephemera {

using Clock = std::chrono::steady_clock;
using std::chrono::duration_cast;
using std::chrono::milliseconds;

Sandbox Engine::AsPaused(const Sandbox& sandbox) const {
  Sandbox paused = sandbox;
  const UnixSeconds now = NowUnix();
  paused.paused_at = now;
  paused.ttl_left_seconds =
      sandbox.expires_at ? std::max<std::int64_t>(*sandbox.expires_at - now, 1) : 0;
  paused.expires_at = now + options_.max_paused.count();
  return paused;
}

// The sandbox a pause or resume acts on, checked against the token: read
// again once `moving` holds it, so that nothing else moves it meanwhile.
std::optional<Sandbox> Engine::SandboxToMove(const SandboxId& id,
                                             const std::optional<std::string>& token,
                                             std::optional<MovingGuard>& moving) {
  if (Hidden(id)) Fail(ErrorCode::kNotFound, "no sandbox {}", id.str());
  auto sandbox = store_.Get(id);
  if (!sandbox) Fail(ErrorCode::kNotFound, "no sandbox {}", id.str());
  if (token) CheckClientToken(*sandbox, *token);
  moving.emplace(*this, id);
  sandbox = store_.Get(id);
  if (!sandbox) Fail(ErrorCode::kNotFound, "no sandbox {}", id.str());
  return sandbox;
}

Sandbox Engine::Pause(const SandboxId& id, const std::optional<std::string>& token) {
  std::optional<MovingGuard> moving;
  auto sandbox = SandboxToMove(id, token, moving);
  if (sandbox->state != SandboxState::kReady) {
    Fail(ErrorCode::kFailedPrecondition, "sandbox {} is {}: only a ready one can be paused",
         id.str(), StateName(sandbox->state));
  }
  VmDriver& driver = DriverOf(*sandbox);
  if (!driver.supports_pause()) {
    Fail(ErrorCode::kFailedPrecondition, "sandboxes of driver {} cannot be paused",
         sandbox->driver);
  }
  // Checked before the work too (Move checks again, atomically), so that a
  // caller at the limit does not wait for a pause that would be undone.
  std::size_t paused = 0;
  for (const auto& s : store_.List()) {
    if (s.owner == sandbox->owner && s.state == SandboxState::kPaused) ++paused;
  }
  if (paused >= options_.max_paused_per_owner) {
    Fail(ErrorCode::kResourceExhausted, "this caller's limit of {} paused sandboxes is reached",
         options_.max_paused_per_owner);
  }
  // The saved state is about the size of the guest's memory; the floor
  // for creates stays free on top of it.
  if (!options_.disk_watch.empty()) {
    std::error_code ec;
    auto space = std::filesystem::space(options_.disk_watch, ec);
    const std::uint64_t needed = sandbox->spec.memory_mib + options_.min_free_disk_mib;
    if (!ec && (space.available >> 20) < needed) {
      Fail(ErrorCode::kNoSpace,
           "pausing sandbox {} needs {} MiB free where sandboxes live ({} MiB of state and the "
           "{} MiB floor); {} MiB are",
           id.str(), needed, sandbox->spec.memory_mib, options_.min_free_disk_mib,
           space.available >> 20);
    }
  }
  SlotGuard slot(create_slots_);
  const auto t0 = Clock::now();
  // Its processes started through the agent end; the channel is the
  // resume's to use (QEMU serves one connection at a time).
  DropAgentLink(id);
  driver.Pause(id);
  Sandbox record = AsPaused(*sandbox);
  try {
    record = store_.Move(record, SandboxState::kPaused, {options_.max_paused_per_owner, {}, 0});
  } catch (const Error& e) {
    // Saved but not recorded as paused: bring it back as the caller had it.
    spdlog::warn("sandbox {}: pause not recorded ({}); resuming it", id.str(), e.what());
    try {
      driver.Resume(id);
    } catch (const Error& again) {
      spdlog::error("sandbox {}: cannot resume it after the failed pause: {}", id.str(),
                    again.what());
    }
    throw;
  }
  const auto ms = duration_cast<milliseconds>(Clock::now() - t0).count();
  NoteEvent(event_type::kPaused, id, fmt::format("{} ms", ms));
  spdlog::info("sandbox {}: paused in {} ms ({} s of its time to live left)", id.str(), ms,
               record.ttl_left_seconds);
  return record;
}

Sandbox Engine::Resume(const SandboxId& id, const std::optional<std::string>& token) {
  std::optional<MovingGuard> moving;
  auto sandbox = SandboxToMove(id, token, moving);
  if (sandbox->state != SandboxState::kPaused) {
    Fail(ErrorCode::kFailedPrecondition, "sandbox {} is {}, not paused", id.str(),
         StateName(sandbox->state));
  }
  VmDriver& driver = DriverOf(*sandbox);
  SlotGuard slot(create_slots_);
  const auto t0 = Clock::now();
  Sandbox record = *sandbox;
  record.expires_at = NowUnix() + std::max<std::int64_t>(record.ttl_left_seconds, 1);
  record.paused_at.reset();
  record.ttl_left_seconds = 0;
  // Ready again before the VM runs: the memory budget is taken atomically.
  record = store_.Move(record, SandboxState::kReady,
                       {std::nullopt, options_.host_memory_mib, options_.sandbox_overhead_mib});
  try {
    driver.Resume(id);
  } catch (const Error& e) {
    spdlog::warn("sandbox {}: resume failed: {}", id.str(), e.what());
    try {
      store_.Move(*sandbox, SandboxState::kPaused, {});
    } catch (const Error& again) {
      spdlog::error("sandbox {}: cannot record it as paused again: {}", id.str(), again.what());
    }
    throw;
  }
  SyncGuestClock(record, driver);
  const auto ms = duration_cast<milliseconds>(Clock::now() - t0).count();
  NoteEvent(event_type::kResumed, id, fmt::format("{} ms", ms));
  spdlog::info("sandbox {}: resumed in {} ms", id.str(), ms);
  record.running = true;
  return record;
}

void Engine::SyncGuestClock(const Sandbox& sandbox, VmDriver& driver) {
  if (options_.agent_key.empty()) return;  // its token cannot be made again
  try {
    VmInfo vm = driver.Inspect(sandbox.id);
    if (vm.agent_socket.empty()) return;  // provisioned over SSH: no agent to ask
    provisioner_.SyncClock(vm.agent_socket, AgentTokenFor(sandbox.id));
  } catch (const Error& e) {
    spdlog::warn("sandbox {}: its clock lags by the time it was paused: {}", sandbox.id.str(),
                 e.what());
  }
}

}  // namespace ephemera
