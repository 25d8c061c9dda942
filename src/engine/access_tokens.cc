// Access tokens: issued with a random secret that is shown once, kept as
// SHA-256, checked on every remote request from an in-memory cache.
#include <spdlog/spdlog.h>

#include "core/error.h"
#include "core/event_types.h"
#include "core/random.h"
#include "core/sha256.h"
#include "engine/engine.h"

namespace ephemera {

namespace {

constexpr std::string_view kUrlSafe =
    "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_-";
constexpr std::size_t kSecretLength = 64;  // 384 bits
// last_used_at is written at most this often per token, not per request.
constexpr UnixSeconds kLastUsedResolution = 60;

void CheckOptionalPositive(const std::optional<std::int64_t>& value, const char* name,
                           std::int64_t max) {
  if (value && (*value < 1 || *value > max)) {
    Fail(ErrorCode::kInvalidArgument, "'{}' must be between 1 and {}, not {}", name, max, *value);
  }
}

}  // namespace

void Engine::LoadAccessTokensLocked() {
  if (tokens_loaded_) return;
  for (auto& token : store_.ListTokens()) tokens_by_hash_[token.token_sha256] = token;
  tokens_loaded_ = true;
}

IssuedAccessToken Engine::AddAccessToken(const NewAccessToken& request) {
  if (request.name.size() > 64 ||
      request.name.find_first_not_of(std::string(kUrlSafe) + ". @:") != std::string::npos) {
    Fail(ErrorCode::kInvalidArgument,
         "'name' must be at most 64 characters of letters, digits and '_-. @:'");
  }
  CheckOptionalPositive(request.expires_in_seconds, "expires_in_seconds", 10LL * 365 * 86400);
  CheckOptionalPositive(request.max_sandboxes, "max_sandboxes", 1 << 20);
  CheckOptionalPositive(request.rate_per_minute, "rate_per_minute", 1 << 24);

  IssuedAccessToken issued;
  issued.secret = RandomString(kSecretLength, kUrlSafe);
  AccessToken& t = issued.record;
  t.id = "tok_" + RandomString(12, "0123456789abcdef");
  t.name = request.name;
  t.token_sha256 = Sha256Hex(issued.secret);
  t.created_at = NowUnix();
  if (request.expires_in_seconds) t.expires_at = t.created_at + *request.expires_in_seconds;
  t.max_sandboxes = request.max_sandboxes;
  t.rate_per_minute = request.rate_per_minute;

  std::lock_guard lock(tokens_mutex_);
  LoadAccessTokensLocked();
  store_.InsertToken(t);
  tokens_by_hash_[t.token_sha256] = t;
  store_.AddEvent(event_type::kTokenAdded, "", t.id);
  spdlog::info("access token {} ('{}') added", t.id, t.name);
  return issued;
}

std::vector<AccessToken> Engine::ListAccessTokens() {
  std::lock_guard lock(tokens_mutex_);
  LoadAccessTokensLocked();
  std::vector<AccessToken> all;
  for (const auto& [_, token] : tokens_by_hash_) all.push_back(token);
  std::sort(all.begin(), all.end(), [](const AccessToken& a, const AccessToken& b) {
    return std::tie(a.created_at, a.id) < std::tie(b.created_at, b.id);
  });
  return all;
}

AccessToken Engine::SetAccessTokenEnabled(const std::string& id, bool enabled) {
  std::lock_guard lock(tokens_mutex_);
  LoadAccessTokensLocked();
  for (auto& [_, token] : tokens_by_hash_) {
    if (token.id != id) continue;
    store_.SetTokenEnabled(id, enabled);
    token.enabled = enabled;
    store_.AddEvent(enabled ? event_type::kTokenEnabled : event_type::kTokenDisabled, "", id);
    spdlog::info("access token {} {}", id, enabled ? "enabled" : "disabled");
    return token;
  }
  Fail(ErrorCode::kNotFound, "no access token {}", id.substr(0, 64));
}

void Engine::DeleteAccessToken(const std::string& id) {
  std::lock_guard lock(tokens_mutex_);
  LoadAccessTokensLocked();
  for (auto it = tokens_by_hash_.begin(); it != tokens_by_hash_.end(); ++it) {
    if (it->second.id != id) continue;
    store_.DeleteToken(id);
    tokens_by_hash_.erase(it);
    store_.AddEvent(event_type::kTokenDeleted, "", id);
    spdlog::info("access token {} deleted", id);
    return;
  }
  Fail(ErrorCode::kNotFound, "no access token {}", id.substr(0, 64));
}

AccessToken Engine::Authenticate(std::string_view secret) {
  // Looked up by hash: the secret itself is never compared byte by byte.
  const std::string hash = Sha256Hex(secret);
  std::lock_guard lock(tokens_mutex_);
  LoadAccessTokensLocked();
  auto it = tokens_by_hash_.find(hash);
  if (it == tokens_by_hash_.end()) Fail(ErrorCode::kUnauthenticated, "unknown access token");
  AccessToken& token = it->second;
  if (!token.enabled) Fail(ErrorCode::kUnauthenticated, "access token {} is disabled", token.id);
  const UnixSeconds now = NowUnix();
  if (token.expires_at && now >= *token.expires_at) {
    Fail(ErrorCode::kUnauthenticated, "access token {} has expired", token.id);
  }
  if (!token.last_used_at || now - *token.last_used_at >= kLastUsedResolution) {
    token.last_used_at = now;
    store_.SetTokenLastUsed(token.id, now);
  }
  return token;
}

}  // namespace ephemera
