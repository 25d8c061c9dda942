#include "daemon/hooks.h"

#include <spdlog/spdlog.h>

#include <nlohmann/json.hpp>

#include "api/wire.h"
#include "core/error.h"
#include "core/subprocess.h"

namespace ephemera {

namespace {

// What a hook prints is logged, up to this much of each stream.
constexpr std::size_t kLoggedOutput = 2048;
constexpr std::chrono::seconds kDrainAtStop{10};

std::string Excerpt(const std::string& text) {
  std::string out = text.substr(0, kLoggedOutput);
  while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
  for (char& c : out) {
    if (c == '\n') c = '|';
  }
  return out;
}

std::string FirstLine(const std::string& text) {
  std::string line = text.substr(0, text.find('\n'));
  if (line.size() > 200) line.resize(200);
  return line;
}

nlohmann::json CreateRequestToJson(const CreateRequest& request, const SandboxSpec& spec) {
  nlohmann::json r = {{"owner", request.owner},
                      {"name", request.name},
                      {"kind", KindName(spec.kind)},
                      {"image", spec.image},
                      {"memory_mib", spec.memory_mib},
                      {"vcpus", spec.vcpus},
                      {"egress", EgressModeName(spec.egress.mode)}};
  if (spec.ttl) r["ttl_seconds"] = spec.ttl->count();
  if (request.kernel) r["kernel"] = *request.kernel;
  if (request.rootfs) r["rootfs"] = *request.rootfs;
  if (request.run_id) r["run_id"] = *request.run_id;
  if (request.machine) r["machine"] = *request.machine;
  return r;
}

}  // namespace

Hooks::Hooks(HooksConfig config, MetricsRegistry* metrics) : config_(std::move(config)) {
  if (metrics) {
    runs_ = &metrics->Counter("ephemera_hooks_total",
                              "Hooks run, by event type and result (ok, failed, timeout, "
                              "not_started, dropped; before_create: allowed, refused).",
                              {"event", "result"});
  }
  if (config_.on.empty()) return;
  for (unsigned i = 0; i < config_.max_running; ++i) workers_.emplace_back([this] { Work(); });
}

Hooks::~Hooks() { Stop(); }

void Hooks::Count(const std::string& type, const char* result) {
  if (runs_) runs_->Add({type, result});
}

void Hooks::OnEvent(const Event& event) {
  try {
    Queue(event);
  } catch (const std::exception& e) {
    spdlog::error("hooks: event {} (seq {}) not queued: {}", event.kind, event.seq, e.what());
  }
}

void Hooks::Queue(const Event& event) {
  std::vector<std::filesystem::path> programs;
  for (const std::string& key : {event.kind, std::string("*")}) {
    auto it = config_.on.find(key);
    if (it != config_.on.end())
      programs.insert(programs.end(), it->second.begin(), it->second.end());
  }
  if (programs.empty()) return;
  const std::string input = JsonText(EventToJson(event));
  std::size_t dropped = 0;
  {
    std::lock_guard lock(mutex_);
    for (const auto& program : programs) {
      if (stopping_ || queue_.size() >= config_.max_queued) {
        ++dropped;
        continue;
      }
      queue_.push_back({program, event.kind, input});
    }
  }
  wake_.notify_all();
  if (dropped) {
    // Logged, not waited for: the event's own work goes on regardless.
    spdlog::warn(
        "hooks: {} hook(s) of event {} (seq {}) dropped: {} queued already "
        "(hooks.max_queued) or the daemon stops",
        dropped, event.kind, event.seq, config_.max_queued);
    for (std::size_t i = 0; i < dropped; ++i) Count(event.kind, "dropped");
  }
}

void Hooks::Work() {
  for (;;) {
    Job job;
    {
      std::unique_lock lock(mutex_);
      wake_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;
      if (stopping_ && std::chrono::steady_clock::now() > drain_until_) {
        spdlog::warn("hooks: {} queued hook(s) dropped: the daemon stops", queue_.size());
        for (const Job& j : queue_) Count(j.type, "dropped");
        queue_.clear();
        return;
      }
      job = std::move(queue_.front());
      queue_.pop_front();
    }
    Run(job);
  }
}

void Hooks::Run(const Job& job) {
  const auto started = std::chrono::steady_clock::now();
  try {
    ProcessResult r = RunProcess(
        {job.program.string(), job.type},
        RunOptions{std::chrono::seconds(config_.timeout_seconds), 64 * 1024, job.input, true});
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                        std::chrono::steady_clock::now() - started)
                        .count();
    if (r.ok()) {
      Count(job.type, "ok");
      spdlog::info("hook {} ({}): done in {} ms{}{}", job.program.string(), job.type, ms,
                   r.out.empty() ? "" : "; stdout: " + Excerpt(r.out),
                   r.err.empty() ? "" : "; stderr: " + Excerpt(r.err));
    } else {
      Count(job.type, "failed");
      spdlog::warn("hook {} ({}): {} after {} ms; stdout: {}; stderr: {}", job.program.string(),
                   job.type,
                   r.term_signal ? fmt::format("killed by signal {}", r.term_signal)
                                 : fmt::format("exit status {}", r.exit_code),
                   ms, Excerpt(r.out), Excerpt(r.err));
    }
  } catch (const Error& e) {
    Count(job.type, e.code() == ErrorCode::kTimeout ? "timeout" : "not_started");
    spdlog::warn("hook {} ({}): {}", job.program.string(), job.type, e.what());
  }
}

std::optional<std::string> Hooks::BeforeCreate(const CreateRequest& request,
                                               const SandboxSpec& spec) {
  if (config_.before_create.empty()) return std::nullopt;
  const std::string program = config_.before_create.string();
  nlohmann::json input = {{"type", "before_create"},
                          {"request", CreateRequestToJson(request, spec)}};
  try {
    ProcessResult r =
        RunProcess({program, "before_create"},
                   RunOptions{std::chrono::seconds(config_.before_create_timeout_seconds),
                              64 * 1024, JsonText(input), true});
    if (!r.err.empty())
      spdlog::info("hook {} (before_create): stderr: {}", program, Excerpt(r.err));
    if (r.ok()) {
      Count("before_create", "allowed");
      return std::nullopt;
    }
    Count("before_create", "refused");
    const std::string why = FirstLine(r.out);
    return fmt::format("refused by the before_create hook{}", why.empty() ? "" : ": " + why);
  } catch (const Error& e) {
    Count("before_create", "refused");
    spdlog::error("hook {} (before_create): {}; the create is refused", program, e.what());
    if (e.code() == ErrorCode::kTimeout) {
      return fmt::format("the before_create hook did not answer within {} s",
                         config_.before_create_timeout_seconds);
    }
    return "the before_create hook could not run (the daemon's log says why)";
  }
}

void Hooks::Stop() {
  {
    std::lock_guard lock(mutex_);
    if (stopping_) return;
    stopping_ = true;
    drain_until_ = std::chrono::steady_clock::now() + kDrainAtStop;
  }
  wake_.notify_all();
  for (auto& t : workers_) t.join();
  workers_.clear();
}

}  // namespace ephemera
