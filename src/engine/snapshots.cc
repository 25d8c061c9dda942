// Snapshot templates, the engine's side: which creates start from one,
// asking the driver to build one in the background when none exists, and
// booting cold (logged) when a restore fails. The driver keeps the
// templates (see vm/qemu/snapshots.cc).
#include <spdlog/spdlog.h>

#include "core/error.h"
#include "core/sha256.h"
#include "engine/engine.h"
#include "guest/agent_client.h"
#include "guest/credentials.h"

namespace ephemera {

using Clock = std::chrono::steady_clock;

namespace {

// Restores that fail this many times in a row end the family's snapshots.
constexpr unsigned kMaxFailures = 3;
// Templates kept at once (each holds its guest's memory): the least
// recently used goes for a new one.
constexpr std::size_t kMaxSnapshotFamilies = 8;
// A template's MAC: each clone's agent sets the sandbox's own.
constexpr std::string_view kTemplateMac = "02:00:00:00:00:01";
// Where a template's sshd listens: where the daemon's sandboxes' sshd does.
constexpr int kTemplateSshPort = 22;

}  // namespace

std::string Engine::SnapshotFamily(const Validated& v) {
  return fmt::format("{}\n{}\n{}\n{}", v.spec.image, v.image.PrimarySha256(), v.spec.memory_mib,
                     v.spec.vcpus);
}

VmSpec Engine::TemplateSpec(const Validated& v) {
  VmSpec spec(SandboxId::Generate());
  spec.image = v.image;
  spec.memory_mib = v.spec.memory_mib;
  spec.vcpus = v.spec.vcpus;
  return spec;
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
  std::optional<VmSpec> evicted;
  bool ready = false;
  {
    std::lock_guard lock(pool_mutex_);
    auto found = snapshot_families_.find(family);
    if (found == snapshot_families_.end()) {
      // The first create of its kind asks for its template.
      evicted = EvictSnapshotLocked();
      SnapshotFamilyState& state = snapshot_families_[family];
      state.status = {v.spec.image, v.spec.memory_mib, v.spec.vcpus, "building", 0, 0};
      state.template_of = v;
      state.last_used = Clock::now();
      QueueSnapshotLocked(family);
    } else {
      SnapshotFamilyState& state = found->second;
      state.last_used = Clock::now();
      if (state.status.state == "failed" && state.failures < kMaxFailures) {
        state.status.state = "building";  // try again: the last build may have met a busy host
        QueueSnapshotLocked(family);
      }
      ready = state.status.state == "ready";
    }
  }
  if (evicted) driver.DropSnapshot(*evicted, "evicted for a template used more recently");
  if (!ready) return std::nullopt;
  std::optional<VmInfo> restored;
  try {
    restored = driver.StartFromSnapshot(spec);
  } catch (const Error& e) {
    // The host is short of something: booting would not help either.
    if (e.code() == ErrorCode::kResourceExhausted || e.code() == ErrorCode::kNoSpace) throw;
    SnapshotFailed(driver, spec, v, e.what());
    return std::nullopt;
  }
  std::lock_guard lock(pool_mutex_);
  auto found = snapshot_families_.find(family);
  if (found == snapshot_families_.end()) return restored;  // evicted meanwhile
  SnapshotFamilyState& state = found->second;
  if (restored) {
    ++state.status.restores;
    state.failures = 0;
  } else if (state.status.state == "ready") {
    // Gone from the driver (a QEMU upgrade): made again.
    state.status.state = "building";
    QueueSnapshotLocked(family);
  }
  return restored;
}

void Engine::SnapshotFailed(VmDriver& driver, const VmSpec& spec, const Validated& v,
                            const std::string& why) {
  spdlog::warn("sandbox {}: booting cold: its snapshot did not restore: {}", spec.id.str(), why);
  driver.DropSnapshot(spec, why);
  std::lock_guard lock(pool_mutex_);
  auto found = snapshot_families_.find(SnapshotFamily(v));
  if (found == snapshot_families_.end()) return;  // evicted meanwhile
  SnapshotFamilyState& state = found->second;
  ++state.status.fallbacks;
  ++state.failures;
  if (state.failures >= kMaxFailures) {
    if (state.status.state != "failed") {
      spdlog::error("snapshots of image {} ({} MiB, {} vCPU) are off: {} restores in a row failed",
                    v.spec.image, v.spec.memory_mib, v.spec.vcpus, state.failures);
    }
    state.status.state = "failed";
  } else if (state.status.state == "ready") {
    state.status.state = "building";
    QueueSnapshotLocked(SnapshotFamily(v));
  }
}

std::optional<VmSpec> Engine::EvictSnapshotLocked() {
  if (snapshot_families_.size() < kMaxSnapshotFamilies) return std::nullopt;
  // The least recently used that is not being made (a build under way finishes first).
  auto oldest = snapshot_families_.end();
  for (auto it = snapshot_families_.begin(); it != snapshot_families_.end(); ++it) {
    if (it->second.status.state == "building") continue;
    if (oldest == snapshot_families_.end() || it->second.last_used < oldest->second.last_used) {
      oldest = it;
    }
  }
  if (oldest == snapshot_families_.end()) return std::nullopt;
  VmSpec spec = TemplateSpec(oldest->second.template_of);
  snapshot_families_.erase(oldest);
  return spec;
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
    std::string outcome = "ready";
    try {
      BuildSnapshot(v);
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

void Engine::BuildSnapshot(const Validated& v) {
  std::string driver_name;
  VmDriver& driver = DriverFor(v.spec.kind, &driver_name);
  VmSpec spec = TemplateSpec(v);
  spec.nic = NicSpec{"", std::string(kTemplateMac), {}, {}, false};
  spec.agent_channel = true;
  const std::string token = TemplateAgentToken(v);
  spec.guest_files = {{"opt/ephemera/agent_token", token, true}};
  spec.owner = std::string(kPoolOwner);
  spec.created_at = NowUnix();
  driver.BuildSnapshot(spec, [&](const VmInfo& vm) {
    // Booted as far as a template goes: its agent waits for an identity.
    const auto deadline = Clock::now() + options_.sshd_timeout;
    AgentClient agent = AgentClient::Connect(vm.agent_socket, deadline);
    agent.Hello(token, deadline);
    // sshd started ahead, admitting only the users creates make, with a
    // host key nobody keeps: each clone's identity replaces it.
    const SshKeyPair throwaway = SshKeyPair::Generate();
    agent.Call({{"op", "prepare"},
                {"ssh_host_key", throwaway.PrivateKeyOpenSsh()},
                {"ssh_host_key_public", throwaway.PublicKeyLine()},
                {"ssh_port", kTemplateSshPort},
                {"allow_users", kClientUserPattern}},
               deadline);
  });
}

}  // namespace ephemera
