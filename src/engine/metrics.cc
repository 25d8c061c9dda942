// The engine's metrics: creates by kind and how they started, failures by
// cause, each phase's duration, removals by event and cause (counted as
// they happen); sandboxes by state, pools and what each sandbox uses (read
// at every scrape).
#include <spdlog/spdlog.h>

#include "core/error.h"
#include "engine/engine.h"

namespace ephemera {

namespace {

// From a TAP's set-up (ms) to a cold boot under TCG (minutes).
const std::vector<double> kPhaseBounds = {0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,
                                          2.5,  5,     10,   20,  40,   80,  160};

constexpr SandboxState kStates[] = {SandboxState::kCreating,   SandboxState::kProvisioning,
                                    SandboxState::kReady,      SandboxState::kPaused,
                                    SandboxState::kDestroying, SandboxState::kFailed};
constexpr SandboxKind kKinds[] = {SandboxKind::kVm, SandboxKind::kContainer};

double Seconds(std::chrono::milliseconds ms) { return static_cast<double>(ms.count()) / 1000.0; }

}  // namespace

void Engine::RegisterMetrics() {
  creates_ = &metrics_.Counter("ephemera_creates_total",
                               "Sandboxes handed out, by kind and how they started "
                               "(boot, snapshot, pool).",
                               {"kind", "start"});
  create_failures_ = &metrics_.Counter(
      "ephemera_create_failures_total",
      "Creates that failed or were refused, by kind and cause (an error code, or vetoed).",
      {"kind", "cause"});
  create_phases_ = &metrics_.Histogram(
      "ephemera_create_phase_seconds",
      "How long each phase of a successful create took (network, vm_start, sshd_up, "
      "provision, total).",
      {"kind", "phase"}, kPhaseBounds);
  removals_ = &metrics_.Counter(
      "ephemera_removals_total",
      "Sandboxes removed, by event (destroyed, reaped, expired, failed) and cause.",
      {"event", "cause"});
  metrics_.AddCollector([this](MetricsWriter& out) { CollectMetrics(out); });
}

void Engine::CountCreate(const CreateResult& result) {
  const std::string kind(KindName(result.sandbox.spec.kind));
  creates_->Add({kind, result.phases.start});
  const CreatePhases& p = result.phases;
  if (p.start != "pool") {
    create_phases_->Observe({kind, "network"}, Seconds(p.network));
    create_phases_->Observe({kind, "vm_start"}, Seconds(p.vm_start));
    create_phases_->Observe({kind, "sshd_up"}, Seconds(p.sshd_up));
    create_phases_->Observe({kind, "provision"}, Seconds(p.provision));
  }
  create_phases_->Observe({kind, "total"}, Seconds(p.total));
}

std::vector<SandboxUsage> Engine::Usage(const std::optional<std::string>& owner) {
  std::vector<Sandbox> recorded = ListRecorded();
  if (owner) std::erase_if(recorded, [&](const Sandbox& s) { return s.owner != *owner; });
  return UsageOf(std::move(recorded));
}

std::vector<SandboxUsage> Engine::UsageOf(std::vector<Sandbox> sandboxes) {
  std::vector<SandboxUsage> out;
  for (Sandbox& s : sandboxes) {
    if (s.owner == kPoolOwner) continue;
    if (s.state != SandboxState::kReady && s.state != SandboxState::kPaused) continue;
    SandboxUsage usage{s, std::nullopt, 0, 0};
    if (s.state == SandboxState::kReady) {
      try {
        usage.resources = DriverOf(s).Usage(s.id);
      } catch (const Error& e) {
        spdlog::debug("sandbox {}: usage unknown: {}", s.id.str(), e.what());
      }
    }
    NetworkActivity net = networks_.Activity(s.id);
    usage.received_bytes = net.received_bytes;
    usage.sent_bytes = net.sent_bytes;
    out.push_back(std::move(usage));
  }
  return out;
}

void Engine::CollectMetrics(MetricsWriter& out) {
  std::vector<Sandbox> recorded = ListRecorded();  // one read of the store per scrape
  std::map<std::pair<SandboxState, SandboxKind>, std::size_t> counts;
  for (const Sandbox& s : recorded) ++counts[{s.state, s.spec.kind}];
  out.Family("ephemera_sandboxes", "gauge", "Sandboxes recorded, by state and kind.");
  for (SandboxKind kind : kKinds) {
    for (SandboxState state : kStates) {
      auto it = counts.find({state, kind});
      out.Sample({{"state", std::string(StateName(state))}, {"kind", std::string(KindName(kind))}},
                 static_cast<double>(it == counts.end() ? 0 : it->second));
    }
  }
  out.Family("ephemera_sandboxes_limit", "gauge", "Sandboxes the host may hold at once.");
  out.Sample(static_cast<double>(options_.max_sandboxes));
  out.Family("ephemera_uptime_seconds", "gauge", "Seconds since the engine started.");
  out.Sample(Seconds(std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::steady_clock::now() - started_)));
  out.Family("ephemera_driver_up", "gauge", "Whether each driver is healthy (1) or not (0).");
  for (const auto& [name, driver] : drivers_.by_name) {
    out.Sample({{"driver", name}}, driver->Health() == "ok" ? 1 : 0);
  }

  const std::vector<PoolStatus> pools = PoolStatuses();
  if (!pools.empty()) {
    auto labels = [](const PoolSpec& spec) {
      return std::vector<std::pair<std::string_view, std::string>>{
          {"image", spec.image},
          {"memory_mib", std::to_string(spec.memory_mib)},
          {"vcpus", std::to_string(spec.vcpus)}};
    };
    out.Family("ephemera_pool_ready", "gauge", "Warm pool members ready to be handed out.");
    for (const auto& p : pools) out.Sample(labels(p.spec), static_cast<double>(p.ready));
    out.Family("ephemera_pool_size", "gauge", "Members each warm pool keeps ready.");
    for (const auto& p : pools) out.Sample(labels(p.spec), static_cast<double>(p.spec.size));
    out.Family("ephemera_pool_hits_total", "counter", "Creates a warm pool served.");
    for (const auto& p : pools) out.Sample(labels(p.spec), static_cast<double>(p.hits));
    out.Family("ephemera_pool_misses_total", "counter",
               "Creates a warm pool could have served but had no member ready for.");
    for (const auto& p : pools) out.Sample(labels(p.spec), static_cast<double>(p.misses));
  }

  if (!options_.per_sandbox_metrics) return;
  std::vector<SandboxUsage> usage = UsageOf(std::move(recorded));
  auto labels = [](const Sandbox& s) {
    return std::vector<std::pair<std::string_view, std::string>>{
        {"sandbox", s.id.str()}, {"kind", std::string(KindName(s.spec.kind))}};
  };
  out.Family("ephemera_sandbox_cpu_seconds_total", "counter",
             "CPU time of each running sandbox's QEMU or container.");
  for (const auto& u : usage) {
    if (u.resources) out.Sample(labels(u.sandbox), u.resources->cpu_seconds);
  }
  out.Family("ephemera_sandbox_memory_bytes", "gauge",
             "Memory each running sandbox's QEMU or container holds.");
  for (const auto& u : usage) {
    if (u.resources) {
      out.Sample(labels(u.sandbox), static_cast<double>(u.resources->memory_bytes));
    }
  }
  out.Family("ephemera_sandbox_network_receive_bytes_total", "counter",
             "Bytes each sandbox received through its host-side device.");
  for (const auto& u : usage) out.Sample(labels(u.sandbox), static_cast<double>(u.received_bytes));
  out.Family("ephemera_sandbox_network_transmit_bytes_total", "counter",
             "Bytes each sandbox sent through its host-side device.");
  for (const auto& u : usage) out.Sample(labels(u.sandbox), static_cast<double>(u.sent_bytes));
}

}  // namespace ephemera
