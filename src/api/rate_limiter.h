// Token buckets per caller: `per_minute` requests refill steadily, up to
// `burst` may come at once. Memory is bounded: past `max_keys` callers the
// least recently seen one is forgotten (a forgotten caller starts again
// with a full bucket, so the one evicted is the one idle the longest).
// Every operation is O(1).
#pragma once

#include <chrono>
#include <list>
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
    std::string key;
    double tokens = 0;
    Clock::time_point updated;
  };
  using Lru = std::list<Bucket>;  // most recently used first

  std::size_t max_keys_;
  mutable std::mutex mutex_;
  Lru lru_;
  std::unordered_map<std::string, Lru::iterator> index_;
};

}  // namespace ephemera
