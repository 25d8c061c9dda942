#include "api/access.h"

#include <algorithm>

#include "api/peer_limits.h"

namespace ephemera {

Caller AccessControl::Admit(const Peer& peer, std::optional<std::string_view> token) {
  if (!policy_.filter.Admits(peer.address)) {
    Fail(ErrorCode::kPermissionDenied, "address {} is not allowed", peer.address.to_string());
  }
  Caller caller;
  double per_minute = policy_.rate_per_minute;
  if (policy_.require_tokens) {
    if (!token || token->empty()) {
      Fail(ErrorCode::kUnauthenticated, "an access token is required");
    }
    AccessToken record = engine_.Authenticate(*token);
    caller.owner = "token:" + record.id;
    if (record.max_sandboxes) caller.owner_limit = static_cast<std::size_t>(*record.max_sandboxes);
    if (record.rate_per_minute) per_minute = static_cast<double>(*record.rate_per_minute);
  } else {
    caller.owner = "address:" + peer.address.to_string();
  }
  const double burst = std::min(policy_.rate_burst, std::max(1.0, per_minute));
  // Without tokens the caller is its address; an IPv6 client may hold a
  // whole /64, so it is limited as one.
  std::string limit_key = policy_.require_tokens ? caller.owner : PeerKey(peer.address);
  if (auto wait = limiter_.Take(limit_key, per_minute, burst)) throw RateLimitedError(*wait);
  return caller;
}

std::optional<std::string_view> BearerToken(const HttpRequest& request) {
  auto it = request.find(boost::beast::http::field::authorization);
  if (it == request.end()) return std::nullopt;
  std::string_view value(it->value().data(), it->value().size());
  constexpr std::string_view kScheme = "Bearer ";
  if (value.size() <= kScheme.size()) return std::nullopt;
  // The scheme is case-insensitive (RFC 9110).
  for (std::size_t i = 0; i < kScheme.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(value[i])) !=
        std::tolower(static_cast<unsigned char>(kScheme[i]))) {
      return std::nullopt;
    }
  }
  value.remove_prefix(kScheme.size());
  while (!value.empty() && value.front() == ' ') value.remove_prefix(1);
  return value;
}

}  // namespace ephemera
