#include "api/rate_limiter.h"

#include <algorithm>
#include <cmath>

namespace ephemera {

std::optional<std::chrono::seconds> RateLimiter::Take(const std::string& key, double per_minute,
                                                      double burst, Clock::time_point now) {
  const double per_second = std::max(per_minute, 1e-6) / 60.0;
  burst = std::max(burst, 1.0);
  std::lock_guard lock(mutex_);
  auto found = index_.find(key);
  if (found == index_.end()) {
    if (!lru_.empty() && lru_.size() >= std::max<std::size_t>(max_keys_, 1)) {
      index_.erase(lru_.back().key);
      lru_.pop_back();
    }
    lru_.push_front(Bucket{key, burst, now});
    found = index_.emplace(key, lru_.begin()).first;
  } else {
    lru_.splice(lru_.begin(), lru_, found->second);
  }
  Bucket& b = *found->second;
  const double elapsed = std::max(0.0, std::chrono::duration<double>(now - b.updated).count());
  b.tokens = std::min(burst, b.tokens + elapsed * per_second);
  b.updated = now;
  if (b.tokens >= 1.0) {
    b.tokens -= 1.0;
    return std::nullopt;
  }
  const double wait = (1.0 - b.tokens) / per_second;
  return std::chrono::seconds(std::max<long long>(1, static_cast<long long>(std::ceil(wait))));
}

std::size_t RateLimiter::size() const {
  std::lock_guard lock(mutex_);
  return lru_.size();
}

}  // namespace ephemera
