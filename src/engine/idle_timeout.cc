// Idle timeouts: a sandbox nobody uses for its idle timeout is destroyed
// by the reaper, while one that works is kept whatever its idle time. What
// counts as use: an exec running or a transfer (through the agent), a
// forwarded connection open (an SSH session, an exposed port's client),
// and network traffic beyond a trickle (ARP and the like stay under it).
// Activity is kept in memory: after a daemon restart, every sandbox's
// idle time starts again.
#include "engine/engine.h"

namespace ephemera {

namespace {

// Traffic below this since the last activity is background noise.
constexpr std::uint64_t kTrafficTrickle = 4096;

}  // namespace

void Engine::NoteActivity(const SandboxId& id) {
  std::lock_guard lock(activity_mutex_);
  activity_[id].last = std::chrono::steady_clock::now();
}

void Engine::ForgetActivity(const SandboxId& id) {
  std::lock_guard lock(activity_mutex_);
  activity_.erase(id);
}

bool Engine::IdleTooLong(const Sandbox& sandbox) {
  const std::int64_t timeout = sandbox.spec.idle_timeout_seconds;
  if (timeout <= 0 || sandbox.state != SandboxState::kReady) return false;
  bool exec_running = false;  // or a transfer: any stream on its agent's channel
  {
    std::lock_guard lock(agent_links_mutex_);
    auto link = agent_links_.find(sandbox.id);
    exec_running = link != agent_links_.end() && link->second->OpenStreams() > 0;
  }
  const NetworkActivity network = networks_.Activity(sandbox.id);
  const auto now = std::chrono::steady_clock::now();
  std::lock_guard lock(activity_mutex_);
  auto [it, first_look] = activity_.try_emplace(sandbox.id, Activity{now, network.traffic_bytes});
  Activity& seen = it->second;
  // Counters that went down belong to a device made anew (a restart).
  const bool traffic = network.traffic_bytes < seen.traffic_bytes ||
                       network.traffic_bytes - seen.traffic_bytes >= kTrafficTrickle;
  if (first_look || exec_running || network.connections > 0 || traffic) {
    seen.last = now;
    seen.traffic_bytes = network.traffic_bytes;
    return false;
  }
  return now - seen.last >= std::chrono::seconds(timeout);
}

}  // namespace ephemera
