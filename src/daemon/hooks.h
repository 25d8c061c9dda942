// The operator's programs run on events (hooks: in the configuration), as
// Anweddol's event handlers allow: each gets the event as one JSON object
// on its stdin and its type as its one argument, runs in a process group
// of its own killed at its timeout, and has its output logged. They run on
// workers of their own, a bounded number at once, from a bounded queue:
// never delaying or failing what the event tells of. The exception is
// before_create, asked in line before a create, whose refusal stops it.
#pragma once

#include <condition_variable>
#include <deque>
#include <filesystem>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "config/config.h"
#include "core/metrics.h"
#include "engine/engine.h"
#include "store/event_feed.h"

namespace ephemera {

class Hooks {
 public:
  // `metrics`: where ephemera_hooks_total counts (none: not counted).
  Hooks(HooksConfig config, MetricsRegistry* metrics);
  ~Hooks();  // Stop()
  Hooks(const Hooks&) = delete;
  Hooks& operator=(const Hooks&) = delete;

  // An EventFeed listener: queues the event's hooks, never waits.
  void OnEvent(const Event& event);
  // The before_create hook's answer (an EngineVeto): nullopt lets the
  // create go; a reason refuses it. A non-zero exit, a timeout or a hook
  // that cannot start all refuse: a policy that cannot answer says no.
  std::optional<std::string> BeforeCreate(const CreateRequest& request, const SandboxSpec& spec);
  bool has_before_create() const { return !config_.before_create.empty(); }
  // Lets what is queued run for a few seconds more (the daemon stops),
  // drops the rest, waits for the running ones (each within its timeout).
  void Stop();

 private:
  struct Job {
    std::filesystem::path program;
    std::string type;
    std::string input;  // the event as JSON
  };
  void Queue(const Event& event);
  void Work();
  void Run(const Job& job);
  void Count(const std::string& type, const char* result);

  const HooksConfig config_;
  CounterFamily* runs_ = nullptr;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<Job> queue_;
  bool stopping_ = false;
  std::chrono::steady_clock::time_point drain_until_;
  std::vector<std::thread> workers_;
};

}  // namespace ephemera
