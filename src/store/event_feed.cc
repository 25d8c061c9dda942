#include "store/event_feed.h"

#include <vector>

#include "core/error.h"

namespace ephemera {

struct FeedState {
  std::mutex mutex;
  std::condition_variable wake;
  std::set<EventFeed::Subscription*> followers;
  std::vector<std::function<void(const Event&)>> listeners;
  bool closed = false;
};

EventFeed::EventFeed() : state_(std::make_shared<FeedState>()) {}

EventFeed::~EventFeed() { Close(); }

EventFeed::Subscription::Subscription(std::shared_ptr<FeedState> state, std::size_t capacity)
    : state_(std::move(state)), capacity_(capacity) {}

EventFeed::Subscription::~Subscription() {
  std::lock_guard lock(state_->mutex);
  state_->followers.erase(this);
}

std::optional<Event> EventFeed::Subscription::Next(std::chrono::milliseconds timeout) {
  std::unique_lock lock(state_->mutex);
  state_->wake.wait_for(lock, timeout,
                        [&] { return !queue_.empty() || lagged_ || state_->closed; });
  if (!queue_.empty()) {
    Event event = std::move(queue_.front());
    queue_.pop_front();
    return event;
  }
  if (lagged_) {
    Fail(ErrorCode::kResourceExhausted,
         "this follower fell more than {} events behind (at {}); resume from the log", capacity_,
         last_seq_);
  }
  if (state_->closed) Fail(ErrorCode::kUnavailable, "the daemon is stopping");
  return std::nullopt;
}

std::unique_ptr<EventFeed::Subscription> EventFeed::Subscribe(std::size_t capacity) {
  std::unique_ptr<Subscription> s(new Subscription(state_, capacity));
  std::lock_guard lock(state_->mutex);
  if (state_->closed) Fail(ErrorCode::kUnavailable, "the daemon is stopping");
  state_->followers.insert(s.get());
  return s;
}

void EventFeed::AddListener(std::function<void(const Event&)> listener) {
  std::lock_guard lock(state_->mutex);
  state_->listeners.push_back(std::move(listener));
}

void EventFeed::Publish(const Event& event) {
  {
    std::lock_guard lock(state_->mutex);
    for (const auto& listener : state_->listeners) {
      // A listener's failure is its own: the event is logged already, and
      // the followers still get it.
      try {
        listener(event);
      } catch (const std::exception&) {
      }
    }
    for (Subscription* s : state_->followers) {
      if (s->lagged_) continue;
      if (s->queue_.size() >= s->capacity_) {
        // What it has not read stays readable up to the gap.
        s->lagged_ = true;
        continue;
      }
      s->queue_.push_back(event);
      s->last_seq_ = event.seq;
    }
  }
  state_->wake.notify_all();
}

void EventFeed::Close() {
  {
    std::lock_guard lock(state_->mutex);
    state_->closed = true;
  }
  state_->wake.notify_all();
}

std::size_t EventFeed::followers() const {
  std::lock_guard lock(state_->mutex);
  return state_->followers.size();
}

}  // namespace ephemera
