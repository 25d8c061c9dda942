// Snapshot templates, the engine's side: which creates start from one,
// asking the driver to build one in the background when none exists, and
// booting cold (logged) when a restore fails. The driver keeps the
// templates (see vm/qemu/snapshots.cc).
#include <spdlog/spdlog.h>

#include "core/error.h"
#include "core/sha256.h"
#include "engine/engine.h"
#include "guest/agent_client.h"

namespace ephemera {

using Clock = std::chrono::steady_clock;

namespace {

// Restores that fail this many times in a row end the family's snapshots.
constexpr unsigned kMaxFailures = 3;
// A template's MAC: each clone's agent sets the sandbox's own.
constexpr std::string_view kTemplateMac = "02:00:00:00:00:01";

}  // namespace

std::string Engine::SnapshotFamily(const Validated& v) {
  return fmt::format("{}\n{}\n{}\n{}", v.spec.image, v.image.PrimarySha256(), v.spec.memory_mib,
                     v.spec.vcpus);
}

std::string Engine::TemplateAgentToken(const Validated& v) const {
  return HmacSha256Hex(options_.agent_key, "agent-template-token:" + SnapshotFamily(v));
}

std::optional<VmInfo> Engine::StartFromSnapshot(VmDriver& driver, const VmSpec& spec,
                                                const Validated& v) {
  // Protocol 2 agents take a token of their own with the identity.
  if (!options_.snapshots || !driver.supports_snapshots() || v.image.agent_protocol < 2 ||
      options_.agent_key.empty()) {
    return std::nullopt;
  }
  const std::string family = SnapshotFamily(v);
  {
    std::lock_guard lock(pool_mutex_);
    auto [it, added] = snapshot_families_.try_emplace(family);
    SnapshotFamilyState& state = it->second;
    if (added) {
      state.status = {v.spec.image, v.spec.memory_mib, v.spec.vcpus, "building", 0, 0};
      state.template_of = v;
      QueueSnapshotLocked(family);
      return std::nullopt;
    }
    if (state.status.state == "failed" && state.failures < kMaxFailures) {
      state.status.state = "building";  // try again: the last build may have met a busy host
      QueueSnapshotLocked(family);
    }
    if (state.status.state != "ready") return std::nullopt;
  }
  std::optional<VmInfo> restored;
  std::string failure;
  try {
    restored = driver.StartFromSnapshot(spec);
  } catch (const Error& e) {
    failure = e.what();
  }
  std::lock_guard lock(pool_mutex_);
  SnapshotFamilyState& state = snapshot_families_[family];
  if (restored) {
    ++state.status.restores;
    state.failures = 0;
    return restored;
  }
  if (!failure.empty()) {
    ++state.status.fallbacks;
    ++state.failures;
    spdlog::warn("sandbox {}: booting cold: its snapshot did not restore: {}", spec.id.str(),
                 failure);
  }
  // Gone from the driver (it failed, or QEMU changed): build it again, up to a point.
  if (state.failures >= kMaxFailures) {
    if (state.status.state != "failed") {
      spdlog::error("snapshots of image {} ({} MiB, {} vCPU) are off: {} restores in a row failed",
                    v.spec.image, v.spec.memory_mib, v.spec.vcpus, state.failures);
    }
    state.status.state = "failed";
  } else if (state.status.state == "ready") {
    state.status.state = "building";
    QueueSnapshotLocked(family);
  }
  return std::nullopt;
}

void Engine::QueueSnapshotLocked(const std::string& family) {
  snapshot_queue_.push_back(family);
  background_wake_ = true;
  pool_wake_.notify_all();
}

void Engine::BuildSnapshotsOnce() {
  for (;;) {
    std::string family;
    Validated v;
    {
      std::lock_guard lock(pool_mutex_);
      if (pool_stopping_ || snapshot_queue_.empty()) return;
      family = snapshot_queue_.front();
      v = snapshot_families_.at(family).template_of;
    }
    // Only a free slot: an explicit create never waits for a template.
    if (!create_slots_.try_acquire()) return;
    struct Release {
      decltype(create_slots_)& slots;
      ~Release() { slots.release(); }
    } release{create_slots_};
    {
      std::lock_guard lock(pool_mutex_);
      snapshot_queue_.pop_front();
    }
    std::string driver_name;
    VmDriver& driver = DriverFor(v.spec.kind, &driver_name);
    VmSpec spec(SandboxId::Generate());
    spec.image = v.image;
    spec.memory_mib = v.spec.memory_mib;
    spec.vcpus = v.spec.vcpus;
    spec.nic = NicSpec{"", std::string(kTemplateMac), {}, {}, false};
    spec.agent_channel = true;
    const std::string token = TemplateAgentToken(v);
    spec.guest_files = {{"opt/ephemera/agent_token", token, true}};
    spec.owner = std::string(kPoolOwner);
    spec.created_at = NowUnix();
    std::string outcome = "ready";
    try {
      driver.BuildSnapshot(spec, [&](const VmInfo& vm) {
        // Booted as far as a template goes: its agent waits for an identity.
        const auto deadline = Clock::now() + options_.sshd_timeout;
        AgentClient agent = AgentClient::Connect(vm.agent_socket, deadline);
        agent.Hello(token, deadline);
        agent.Call({{"op", "ping"}}, deadline);
      });
    } catch (const std::exception& e) {
      spdlog::warn("snapshot of image {} ({} MiB, {} vCPU) not made; creates boot: {}",
                   v.spec.image, v.spec.memory_mib, v.spec.vcpus, e.what());
      outcome = "failed";
    }
    std::lock_guard lock(pool_mutex_);
    SnapshotFamilyState& state = snapshot_families_.at(family);
    state.status.state = outcome;
    if (outcome == "failed") ++state.failures;
  }
}

}  // namespace ephemera
