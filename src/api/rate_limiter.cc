#include "api/rate_limiter.h"

#include <algorithm>
#include <cmath>

namespace ephemera {

namespace {

void Refill(double& tokens, double per_second, double burst, double elapsed_seconds) {
  tokens = std::min(burst, tokens + elapsed_seconds * per_second);
}

}  // namespace

std::optional<std::chrono::seconds> RateLimiter::Take(const std::string& key, double per_minute,
                                                      double burst, Clock::time_point now) {
  const double per_second = std::max(per_minute, 1e-6) / 60.0;
  burst = std::max(burst, 1.0);
  std::lock_guard lock(mutex_);
  auto it = buckets_.find(key);
  if (it == buckets_.end()) {
    if (buckets_.size() >= max_keys_) PruneLocked(now);
    // Still full of busy callers: forget one rather than grow without bound.
    if (buckets_.size() >= max_keys_) buckets_.erase(buckets_.begin());
    it = buckets_.emplace(key, Bucket{burst, now, per_second, burst}).first;
  }
  Bucket& b = it->second;
  Refill(b.tokens, per_second, burst, std::chrono::duration<double>(now - b.updated).count());
  b.updated = now;
  b.per_second = per_second;
  b.burst = burst;
  if (b.tokens >= 1.0) {
    b.tokens -= 1.0;
    return std::nullopt;
  }
  const double wait = (1.0 - b.tokens) / per_second;
  return std::chrono::seconds(std::max<long long>(1, static_cast<long long>(std::ceil(wait))));
}

void RateLimiter::PruneLocked(Clock::time_point now) {
  // A bucket that has refilled completely carries no state worth keeping.
  std::erase_if(buckets_, [now](const auto& entry) {
    const Bucket& b = entry.second;
    double tokens = b.tokens;
    Refill(tokens, b.per_second, b.burst, std::chrono::duration<double>(now - b.updated).count());
    return tokens >= b.burst;
  });
}

std::size_t RateLimiter::size() const {
  std::lock_guard lock(mutex_);
  return buckets_.size();
}

}  // namespace ephemera
