// What changes about a sandbox while it lives: its time to live, set anew,
// and the guest ports it exposes on host ports.
#include <spdlog/spdlog.h>

#include "core/error.h"
#include "core/event_types.h"
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
  NoteEvent(event_type::kTtlChanged, id, fmt::format("{} s left", ttl));
  spdlog::info("sandbox {}: time to live set to {} s{}", id.str(), ttl,
               record.state == SandboxState::kPaused ? " (from its resume)" : "");
  return record;
}

ExposedPort Engine::ExposePort(const SandboxId& id, std::uint16_t guest_port,
                               const std::optional<std::string>& token) {
  if (guest_port == 0) Fail(ErrorCode::kInvalidArgument, "'guest_port' must be 1 to 65535");
  std::optional<MovingGuard> moving;
  std::optional<Sandbox> sandbox = SandboxToMove(id, token, moving);
  if (sandbox->state != SandboxState::kReady && sandbox->state != SandboxState::kPaused) {
    Fail(ErrorCode::kFailedPrecondition,
         "sandbox {} is {}: only a ready or paused one exposes ports", id.str(),
         StateName(sandbox->state));
  }
  auto network = networks_.Find(id);
  if (!network) Fail(ErrorCode::kFailedPrecondition, "sandbox {} has no network of ours", id.str());
  if (guest_port == network->guest_port) {
    Fail(ErrorCode::kAlreadyExists, "sandbox {}: port {} is its SSH port, on host port {}",
         id.str(), guest_port, network->host_port);
  }
  const std::uint16_t host_port = networks_.ExposePort(id, guest_port, options_.max_exposed_ports);
  NoteEvent(event_type::kPortExposed, id,
            fmt::format("guest port {} on host port {}", guest_port, host_port));
  spdlog::info("sandbox {}: guest port {} exposed on host port {}", id.str(), guest_port,
               host_port);
  return {guest_port, host_port};
}

void Engine::UnexposePort(const SandboxId& id, std::uint16_t guest_port,
                          const std::optional<std::string>& token) {
  std::optional<MovingGuard> moving;
  SandboxToMove(id, token, moving);
  if (auto network = networks_.Find(id); network && network->guest_port == guest_port) {
    Fail(ErrorCode::kFailedPrecondition, "sandbox {}: port {} is its SSH port, which stays",
         id.str(), guest_port);
  }
  networks_.UnexposePort(id, guest_port);
  NoteEvent(event_type::kPortClosed, id, fmt::format("guest port {}", guest_port));
  spdlog::info("sandbox {}: guest port {} no longer exposed", id.str(), guest_port);
}

std::vector<ExposedPort> Engine::ExposedPorts(const SandboxId& id,
                                              const std::optional<std::string>& token) {
  if (Hidden(id)) Fail(ErrorCode::kNotFound, "no sandbox {}", id.str());
  auto sandbox = store_.Get(id);
  if (!sandbox) Fail(ErrorCode::kNotFound, "no sandbox {}", id.str());
  if (token) CheckClientToken(*sandbox, *token);
  std::vector<ExposedPort> ports;
  auto network = networks_.Find(id);
  if (!network) return ports;
  if (network->host_port != 0) ports.push_back({network->guest_port, network->host_port});
  ports.insert(ports.end(), network->exposed.begin(), network->exposed.end());
  return ports;
}

}  // namespace ephemera
