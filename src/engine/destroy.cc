// Destroying a sandbox: every step idempotent, so a half-done destroy can be
// repeated by the reaper or the next reconcile.
#include <openssl/crypto.h>
#include <spdlog/spdlog.h>

#include "core/error.h"
#include "core/sha256.h"
#include "engine/engine.h"

namespace ephemera {

void Engine::TearDownHost(const SandboxId& id) {
  vms_.Destroy(id);
  networks_.Teardown(id);
}

void Engine::Destroy(const SandboxId& id, const std::optional<std::string>& token,
                     const std::string& reason) {
  auto sandbox = store_.Get(id);
  if (!sandbox) Fail(ErrorCode::kNotFound, "no sandbox {}", id.str());
  if (token) {
    std::string presented = Sha256Hex(*token);
    if (presented.size() != sandbox->token_sha256.size() ||
        CRYPTO_memcmp(presented.data(), sandbox->token_sha256.data(), presented.size()) != 0) {
      Fail(ErrorCode::kPermissionDenied, "the client token does not match sandbox {}", id.str());
    }
  }
  if (sandbox->state != SandboxState::kDestroying) {
    try {
      store_.Transition(id, SandboxState::kDestroying, reason);
    } catch (const Error& e) {
      if (e.code() != ErrorCode::kFailedPrecondition) throw;  // raced with another destroy
    }
  }
  TearDownHost(id);
  store_.Delete(id);
  store_.AddEvent("destroy", id.str(), reason);
  spdlog::info("sandbox {}: destroyed ({})", id.str(), reason);
}

void Engine::DestroyAll(const std::string& reason) {
  for (const auto& s : store_.List()) {
    try {
      Destroy(s.id, std::nullopt, reason);
    } catch (const Error& e) {
      spdlog::error("sandbox {}: destroy failed: {}", s.id.str(), e.what());
    }
  }
}

}  // namespace ephemera
