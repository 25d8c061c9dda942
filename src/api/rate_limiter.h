// Token buckets per caller: `per_minute` requests refill steadily, up to
// `burst` may come at once. Memory is bounded: idle (full) buckets are
// dropped when the table grows past its limit.
#pragma once

#include <chrono>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>

namespace ephemera {

class RateLimiter {
 public:
  using Clock = std::chrono::steady_clock;

  explicit RateLimiter(std::size_t max_keys = 65536) : max_keys_(max_keys) {}

  // Takes one request from `key`'s bucket. nullopt when allowed, else how
  // long until one is (at least one second, for Retry-After).
  std::optional<std::chrono::seconds> Take(const std::string& key, double per_minute, double burst,
                                           Clock::time_point now = Clock::now());

  std::size_t size() const;

 private:
  struct Bucket {
    double tokens = 0;
    Clock::time_point updated;
    double per_second = 0;
    double burst = 0;
  };
  void PruneLocked(Clock::time_point now);

  std::size_t max_keys_;
  mutable std::mutex mutex_;
  std::unordered_map<std::string, Bucket> buckets_;
};

}  // namespace ephemera
