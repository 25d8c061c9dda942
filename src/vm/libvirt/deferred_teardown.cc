#include "vm/libvirt/deferred_teardown.h"

#include <spdlog/spdlog.h>

#include <exception>

namespace ephemera {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

DeferredTeardown::DeferredTeardown() : worker_([this] { Run(); }) {}

DeferredTeardown::~DeferredTeardown() {
  if (!WaitIdle(10s)) {
    spdlog::warn("libvirt: teardowns unfinished at exit; the next start reconciles them");
  }
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  changed_.notify_all();
  worker_.join();
}

void DeferredTeardown::Add(const SandboxId& id, std::function<void()> step) {
  {
    std::lock_guard lock(mutex_);
    if (!pending_.insert(id).second) return;
    queue_.push_back({id, std::move(step), Clock::now()});
  }
  changed_.notify_all();
}

bool DeferredTeardown::Pending(const SandboxId& id) const {
  std::lock_guard lock(mutex_);
  return pending_.count(id) > 0;
}

bool DeferredTeardown::WaitIdle(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  return changed_.wait_for(lock, timeout, [this] { return pending_.empty(); });
}

void DeferredTeardown::Run() {
  std::unique_lock lock(mutex_);
  for (;;) {
    changed_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
    if (stopping_) return;
    // The first item that is due; retries wait their turn without holding
    // up new ones.
    auto now = Clock::now();
    auto due = queue_.begin();
    for (auto it = queue_.begin(); it != queue_.end(); ++it) {
      if (it->not_before < due->not_before) due = it;
    }
    if (due->not_before > now) {
      std::size_t size = queue_.size();
      changed_.wait_until(lock, due->not_before,
                          [this, size] { return stopping_ || queue_.size() != size; });
      continue;
    }
    Item item = std::move(*due);
    queue_.erase(due);
    lock.unlock();
    bool done = true;
    try {
      item.step();
    } catch (const std::exception& e) {
      done = false;
      spdlog::warn("libvirt: sandbox {}: teardown failed, retrying in {} ms: {}", item.id.str(),
                   item.backoff.count(), e.what());
    }
    lock.lock();
    if (done) {
      pending_.erase(item.id);
      changed_.notify_all();
    } else {
      item.not_before = Clock::now() + item.backoff;
      item.backoff = std::min(item.backoff * 2, std::chrono::milliseconds(10s));
      queue_.push_back(std::move(item));
    }
  }
}

}  // namespace ephemera
