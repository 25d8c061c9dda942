// Fans the event log's new entries out to those who follow it (GET
// /v1/events, the hooks). Each follower has a bounded queue: one that falls
// behind by more is cut off and told so, and never slows the writer.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>

#include "core/sandbox.h"

namespace ephemera {

struct Event {
  std::int64_t seq = 0;
  UnixSeconds at = 0;
  std::string sandbox_id;  // empty for daemon-wide events
  std::string kind;        // core/event_types.h
  std::string detail;      // for people: a reason, an image, a duration
  std::string cause;       // for programs: a failure's error code, a removal's reason
};

class EventFeed {
 public:
  class Subscription {
   public:
    ~Subscription();
    Subscription(const Subscription&) = delete;
    Subscription& operator=(const Subscription&) = delete;
    // The next event, waiting up to `timeout` (nullopt then). Throws
    // kResourceExhausted once this follower fell more than its capacity
    // behind (it resumes from the log), kUnavailable once the feed closed.
    std::optional<Event> Next(std::chrono::milliseconds timeout);

   private:
    friend class EventFeed;
    Subscription(std::shared_ptr<struct FeedState> state, std::size_t capacity);
    std::shared_ptr<struct FeedState> state_;
    const std::size_t capacity_;
    std::deque<Event> queue_;  // with state_->mutex
    bool lagged_ = false;
    std::int64_t last_seq_ = 0;  // the last one queued (for the lag message)
  };

  EventFeed();
  ~EventFeed();
  std::unique_ptr<Subscription> Subscribe(std::size_t capacity = 4096);
  // Called with each event as it is published, under the feed's lock: it
  // must only queue it (the hooks). Close leaves listeners be.
  void AddListener(std::function<void(const Event&)> listener);
  void Publish(const Event& event);
  // Wakes every follower for good (the daemon stops).
  void Close();
  std::size_t followers() const;

 private:
  std::shared_ptr<struct FeedState> state_;
};

}  // namespace ephemera
