// Reconcile at startup: whatever the store says exists but the host does
// not, or the reverse, is cleaned up or adopted, and each action is logged.
#include <spdlog/spdlog.h>

#include <set>

#include "core/error.h"
#include "core/event_types.h"
#include "engine/engine.h"

namespace ephemera {

ReconcileReport Engine::Reconcile() {
  ReconcileReport report;
  auto note = [&report](std::string line) {
    spdlog::info("reconcile: {}", line);
    report.actions.push_back(std::move(line));
  };
  NetworkReconcileReport net = networks_.Reconcile();
  for (const auto& line : net.restored) note("restored " + line);
  for (const auto& line : net.removed) note("removed stale " + line);
  // A container's veth goes with its namespace: its sandbox is checked below.
  for (const auto& id : net.lost)
    note(fmt::format("network of sandbox {} has no device", id.str()));

  std::set<SandboxId> known;
  for (const auto& s : store_.List()) {
    known.insert(s.id);
    std::string reason;
    if (s.owner == kPoolOwner) {
      reason = "a warm pool member of the previous daemon (its password died with it)";
    } else if (s.state == SandboxState::kCreating || s.state == SandboxState::kProvisioning) {
      reason = "its creation was interrupted";  // its password is lost with the old process
    } else if (s.state == SandboxState::kFailed || s.state == SandboxState::kDestroying) {
      reason = "its teardown was interrupted";
    } else {
      try {
        const VmState state = DriverOf(s).Inspect(s.id).state;
        if (state == VmState::kShutoff) {
          reason = s.state == SandboxState::kPaused ? "its saved state is gone"
                                                    : "its VM stopped while the daemon was down";
        } else if (state == VmState::kSaved && s.state == SandboxState::kReady) {
          // Saved by a pause the daemon did not live to record.
          store_.Move(AsPaused(s), SandboxState::kPaused, {});
          note(fmt::format("sandbox {} was saved by an unfinished pause: now paused", s.id.str()));
          continue;
        }
      } catch (const Error& e) {
        if (e.code() != ErrorCode::kNotFound) {
          // Unknown is not gone: keep it, the reaper looks again.
          note(fmt::format("kept sandbox {}: its VM cannot be checked ({})", s.id.str(), e.what()));
          continue;
        }
        reason = "its VM is gone";
      }
    }
    if (reason.empty()) {
      note(fmt::format("adopted sandbox {} ({})", s.id.str(), s.tap));
      continue;
    }
    try {
      Destroy(s.id, std::nullopt, reason, false, {}, {event_type::kReaped, "reconcile"});
      note(fmt::format("destroyed sandbox {}: {}", s.id.str(), reason));
    } catch (const Error& e) {
      // Marked destroying if it got that far: the reaper tries again.
      note(fmt::format("could not destroy sandbox {} yet ({}): {}", s.id.str(), reason, e.what()));
    }
  }
  for (const auto& [name, driver] : drivers_.by_name) {
    std::vector<SandboxId> ids;
    try {
      ids = driver->List();
    } catch (const Error& e) {
      note(fmt::format("could not list driver {}'s VMs: {}", name, e.what()));
      continue;
    }
    for (const auto& id : ids) {
      if (known.count(id)) continue;
      driver->Destroy(id);
      note(fmt::format("removed {} VM {} that no sandbox owns", name, id.str()));
    }
  }
  for (const auto& n : networks_.List()) {
    if (known.count(n.id)) continue;
    networks_.Teardown(n.id);
    note(fmt::format("removed network {} ({}) that no sandbox owns", n.id.str(), n.tap));
  }
  return report;
}

}  // namespace ephemera
