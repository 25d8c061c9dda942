// Finishes a sandbox's teardown off the caller's thread: once its domain is
// gone, a destroy returns, and its libvirt network (whose removal costs
// libvirt 9.0 a dozen iptables runs, ~200 ms) goes here. A step that fails
// (libvirt away) is retried with backoff until it succeeds. Whoever needs
// the host quiet first (a start that reuses the /30) waits with WaitIdle.
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <set>
#include <string>
#include <thread>

#include "core/sandbox_id.h"

namespace ephemera {

class DeferredTeardown {
 public:
  DeferredTeardown();
  // Finishes what is queued (bounded by `drain`), then stops.
  ~DeferredTeardown();
  DeferredTeardown(const DeferredTeardown&) = delete;
  DeferredTeardown& operator=(const DeferredTeardown&) = delete;

  // Queues `step` for `id`, unless one is queued for it already. `step`
  // throws to be retried.
  void Add(const SandboxId& id, std::function<void()> step);
  bool Pending(const SandboxId& id) const;
  // True once nothing is queued or running; false after `timeout`.
  bool WaitIdle(std::chrono::milliseconds timeout);

 private:
  void Run();

  struct Item {
    SandboxId id;
    std::function<void()> step;
    std::chrono::steady_clock::time_point not_before;
    std::chrono::milliseconds backoff{100};
  };
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::deque<Item> queue_;
  std::set<SandboxId> pending_;  // queued or running
  bool stopping_ = false;
  std::thread worker_;
};

}  // namespace ephemera
