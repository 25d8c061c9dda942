// Who may use a remote front door, and how often: the IP filter, access
// tokens (checked by the engine), and a rate limit per caller. The local
// admin socket bypasses all of it.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

#include "api/http_server.h"
#include "api/ip_filter.h"
#include "api/rate_limiter.h"
#include "core/error.h"
#include "engine/engine.h"

namespace ephemera {

struct AccessPolicy {
  bool require_tokens = true;
  IpFilter filter;
  double rate_per_minute = 600;  // per token (per address when tokens are off)
  double rate_burst = 60;
};

// The identity a request acts as once admitted.
struct Caller {
  std::string owner;  // "token:<id>", "address:<ip>" or "uid:<n>"; sandboxes are counted by it
  std::optional<std::size_t> owner_limit;
  std::optional<std::uint64_t> owner_memory_mib;
  // A local user (by SO_PEERCRED): destroys its own sandboxes without
  // their client tokens.
  bool local_user = false;
};

// kResourceExhausted with the time after which a retry may succeed.
class RateLimitedError : public Error {
 public:
  explicit RateLimitedError(std::chrono::seconds retry_after)
      : Error(ErrorCode::kResourceExhausted,
              fmt::format("too many requests; retry in {} s", retry_after.count())),
        retry_after_(retry_after) {}
  std::chrono::seconds retry_after() const { return retry_after_; }

 private:
  std::chrono::seconds retry_after_;
};

class AccessControl {
 public:
  AccessControl(AccessPolicy policy, Engine& engine)
      : policy_(std::move(policy)), engine_(engine) {}

  // Throws kPermissionDenied for a filtered address, kUnauthenticated for a
  // missing or bad token, RateLimitedError over the rate.
  Caller Admit(const Peer& peer, std::optional<std::string_view> token);

  bool requires_tokens() const { return policy_.require_tokens; }
  // The IP filter alone, for doors that drop a connection before reading.
  bool AdmitsAddress(const boost::asio::ip::address& address) const {
    return policy_.filter.Admits(address);
  }

 private:
  AccessPolicy policy_;
  Engine& engine_;
  RateLimiter limiter_;
};

// The secret of an "Authorization: Bearer <token>" header, if there is one.
std::optional<std::string_view> BearerToken(const HttpRequest& request);

}  // namespace ephemera
