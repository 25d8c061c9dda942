// Destroying a sandbox: every step idempotent, so a half-done destroy can be
// repeated by the reaper or the next reconcile.
#include <openssl/crypto.h>
#include <spdlog/spdlog.h>

#include "core/error.h"
#include "core/event_types.h"
#include "core/log_context.h"
#include "core/sha256.h"
#include "engine/engine.h"

namespace ephemera {

void Engine::TearDownHost(const SandboxId& id, VmDriver& driver) {
  DropAgentLink(id);
  std::shared_ptr<SshChannel> ssh;
  {
    std::lock_guard lock(agent_links_mutex_);
    if (auto it = ssh_channels_.find(id); it != ssh_channels_.end()) {
      ssh = std::move(it->second);
      ssh_channels_.erase(it);
    }
  }
  if (ssh) ssh->Close();  // its streams end: the guest will not answer them
  ForgetActivity(id);
  driver.Destroy(id);
  networks_.Teardown(id);
}

void Engine::ForgetRecord(const SandboxId& id, std::string_view event, const std::string& detail,
                          const std::string& cause) {
  std::optional<Sandbox> gone;
  try {
    if (gone_listener_) gone = store_.Get(id);
    store_.Delete(id);
  } catch (const Error& e) {
    // The host side is gone already; only the bookkeeping waits for the
    // store to take writes again (a full disk), and the sandbox is hidden
    // meanwhile.
    spdlog::error("sandbox {}: its record cannot be removed yet ({}); retrying", id.str(),
                  e.what());
    std::lock_guard lock(bookkeeping_mutex_);
    unrecorded_.insert(id);
    return;
  }
  {
    std::lock_guard lock(bookkeeping_mutex_);
    unrecorded_.erase(id);
  }
  removals_->Add({std::string(event), cause});
  try {
    store_.AddEvent(event, id.str(), detail, cause);
  } catch (const Error& e) {
    spdlog::warn("sandbox {}: event '{}' not recorded: {}", id.str(), event, e.what());
  }
  if (gone && gone_listener_) gone_listener_(*gone, detail);
}

void Engine::RetryRecordRemovals() {
  std::set<SandboxId> pending;
  {
    std::lock_guard lock(bookkeeping_mutex_);
    pending = unrecorded_;
  }
  for (const auto& id : pending) {
    ForgetRecord(id, event_type::kDestroyed, "record removed late", "record_removed_late");
  }
}

void CheckClientToken(const Sandbox& sandbox, const std::string& token) {
  std::string presented = Sha256Hex(token);
  if (presented.size() != sandbox.token_sha256.size() ||
      CRYPTO_memcmp(presented.data(), sandbox.token_sha256.data(), presented.size()) != 0) {
    Fail(ErrorCode::kPermissionDenied, "the client token does not match sandbox {}",
         sandbox.id.str());
  }
}

Sandbox Engine::GetWithToken(const SandboxId& id, const std::string& token) {
  auto sandbox = Get(id);
  if (!sandbox) Fail(ErrorCode::kNotFound, "no sandbox {}", id.str());
  CheckClientToken(*sandbox, token);
  return *sandbox;
}

void Engine::Destroy(const SandboxId& id, const std::optional<std::string>& token,
                     const std::string& reason, bool graceful,
                     const std::function<bool(const Sandbox&)>& still_due, const Removal& removal) {
  if (Hidden(id)) Fail(ErrorCode::kNotFound, "no sandbox {}", id.str());
  auto sandbox = store_.Get(id);
  if (!sandbox) Fail(ErrorCode::kNotFound, "no sandbox {}", id.str());
  if (token) CheckClientToken(*sandbox, *token);
  LogScope log_scope(id.str(), sandbox->owner, "destroy");
  {
    // A pause or resume under way finishes first (and none starts now),
    // so that neither brings back a VM this tears down.
    std::unique_lock lock(bookkeeping_mutex_);
    destroying_.insert(id);
    moving_done_.wait(lock, [&] { return !moving_.count(id); });
  }
  struct DestroyingGuard {
    Engine* engine;
    SandboxId id;
    ~DestroyingGuard() {
      std::lock_guard lock(engine->bookkeeping_mutex_);
      engine->destroying_.erase(engine->destroying_.find(id));
    }
  } destroying{this, id};
  if (still_due) {
    // What was seen before the wait may be stale: an extend or a pause
    // that finished meanwhile keeps the sandbox.
    sandbox = store_.Get(id);
    if (!sandbox) return;
    if (!still_due(*sandbox)) {
      spdlog::info("sandbox {}: no longer to be destroyed ({} no more)", id.str(), reason);
      return;
    }
  }
  if (sandbox->state != SandboxState::kDestroying) {
    try {
      store_.Transition(id, SandboxState::kDestroying, reason);
    } catch (const Error& e) {
      // Raced with another destroy; or the store cannot write (a full
      // disk): the guest must still be stopped, so go on.
      if (e.code() != ErrorCode::kFailedPrecondition) {
        spdlog::error("sandbox {}: cannot record the destroy ({}); tearing down anyway", id.str(),
                      e.what());
      }
    }
  }
  VmDriver& driver = DriverOf(*sandbox);
  if (graceful) {
    try {
      if (!driver.Shutdown(id, options_.graceful_shutdown_timeout)) {
        spdlog::info("sandbox {}: did not power off within {} ms; stopping it", id.str(),
                     options_.graceful_shutdown_timeout.count());
      }
    } catch (const Error& e) {
      spdlog::warn("sandbox {}: graceful shutdown failed ({}); stopping it", id.str(), e.what());
    }
  }
  TearDownHost(id, driver);
  ForgetRecord(id, removal.event, reason, removal.cause);
  spdlog::info("sandbox {}: destroyed ({})", id.str(), reason);
}

std::size_t Engine::DestroyAll(const std::string& reason) {
  std::size_t failed = 0;
  for (const auto& s : store_.List()) {
    try {
      Destroy(s.id, std::nullopt, reason, false, {}, {event_type::kDestroyed, "daemon_stop"});
    } catch (const Error& e) {
      spdlog::error("sandbox {}: destroy failed: {}", s.id.str(), e.what());
      ++failed;
    }
  }
  return failed;
}

}  // namespace ephemera
