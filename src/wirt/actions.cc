// The wirt service's work on one VM: a request taken from the user's tree
// and answered there, an instance that ended, autostart keeping one running.
#include <fcntl.h>

#include <spdlog/spdlog.h>
#include <algorithm>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/text.h"
#include "wirt/layout.h"
#include "wirt/mail.h"
#include "wirt/request.h"
#include "wirt/service.h"
#include "wirt/status.h"

namespace ephemera::wirt {

namespace {

std::string HistoryDir(Layout layout) {
  return std::string(layout == Layout::kWirt ? kHistoryDir : kOldHistoryDir);
}

// A history name for a request: when, which VM, which action file.
std::string HistoryName(const std::string& stamp, Layout layout, const std::string& vm,
                        const std::string& file) {
  return layout == Layout::kWirt ? fmt::format("{}-{}-{}", stamp, vm, file)
                                 : fmt::format("{}-dom-{}-{}", stamp, vm, file);
}

std::string InfoDir(const std::string& vm) { return std::string(kInfoDir) + "/" + vm; }

// Runs `undo` on the way out unless dismissed.
template <typename F>
class Undo {
 public:
  explicit Undo(F f) : f_(std::move(f)) {}
  ~Undo() {
    if (armed_) f_();
  }
  void Dismiss() { armed_ = false; }

 private:
  F f_;
  bool armed_ = true;
};

}  // namespace

void Service::Run(const VmKey& key, Task& task) {
  switch (task.kind) {
    case Task::Kind::kRequest:
      return RunRequest(key, task.request);
    case Task::Kind::kInstanceGone:
      return RunInstanceGone(key, task);
    case Task::Kind::kKeepRunning:
      return RunKeepRunning(key, task.why);
    case Task::Kind::kStray: {
      auto member = Lookup(key.uid);
      if (member) RejectStray(*member, task.stray);
      return;
    }
  }
}

void Service::Remember(const VmKey& key, const std::string& action, const std::string& outcome,
                       const std::string& message) {
  std::lock_guard lock(mutex_);
  VmState& vm = vms_[key];
  vm.last_action = action;
  vm.last_outcome = outcome;
  vm.last_message = message;
  vm.last_at = NowUnix();
}

// ---- an instance that ended, and autostart ------------------------------------

void Service::RunInstanceGone(const VmKey& key, const Task& task) {
  bool short_life = false;
  {
    std::lock_guard lock(mutex_);
    VmState& vm = vms_[key];
    // A destroy this service asked for has already been answered.
    if (!vm.instance || vm.instance->id != *task.gone_id) return;
    short_life = NowUnix() - vm.instance->created_at <
                 static_cast<std::int64_t>(options_.short_life.count());
    vm.instance.reset();
    vm.created.reset();
  }
  Remember(key, "instance", "ended", task.why);
  auto member = Lookup(key.uid);
  if (member) {
    try {
      UserDir home = OpenHome(member->home, {member->uid, member->gid});
      RemoveCredentials(home, key.name);
      Report(*member, home, key.name,
             fmt::format("instance {} ended: {}", task.gone_id->str(), task.why));
      WriteStatus(key, *member, home);
    } catch (const Error& e) {
      spdlog::warn("wirt: uid {} VM {}: {}", key.uid, key.name, e.what());
    }
  }
  if (!Autostarted(key)) return;
  if (!short_life) {
    ResetAutostartFailures(key);
    return RunKeepRunning(key, "the instance ended");
  }
  // It died young: again later, not in a tight loop of boots.
  CountAutostartFailure(key);
}

void Service::ResetAutostartFailures(const VmKey& key) {
  std::lock_guard lock(mutex_);
  vms_[key].failures = 0;
}

void Service::CountAutostartFailure(const VmKey& key) {
  unsigned failures;
  {
    std::lock_guard lock(mutex_);
    failures = ++vms_[key].failures;
  }
  // Past the limit at once: RunKeepRunning then says that it gave up.
  RetryLater(key, failures > options_.retry_limit
                      ? std::chrono::milliseconds(0)
                      : options_.retry_backoff * (1u << std::min(failures - 1, 10u)));
}

void Service::RunKeepRunning(const VmKey& key, const std::string& why) {
  auto member = Lookup(key.uid);
  if (!member) {
    spdlog::warn("wirt: uid {} is not in group {}; VM {} is not started", key.uid, options_.group,
                 key.name);
    return;
  }
  if (!Autostarted(key)) return;  // disabled since this was queued
  unsigned failures;
  {
    std::lock_guard lock(mutex_);
    failures = vms_[key].failures;
  }
  UserDir home = OpenHome(member->home, {member->uid, member->gid});
  if (failures > options_.retry_limit) {
    const std::string message = fmt::format(
        "autostart gave up after {} failed starts or instances that ended within {} s; "
        "start it (or autostart it) again to retry",
        failures - 1, options_.short_life.count());
    Remember(key, "autostart", "failed", message);
    Report(*member, home, key.name, message);
    WriteStatus(key, *member, home);
    Mail(*member, fmt::format("wirt: autostart of {} gave up", key.name), message);
    return;
  }
  std::string outcome = "ok", message;
  try {
    message = StartInstance(key, *member, home, false);
  } catch (const Error& e) {
    outcome = "failed";
    message = e.what();
    CountAutostartFailure(key);
    Mail(*member, fmt::format("wirt: autostart of {} failed", key.name), message);
  }
  Remember(key, "autostart", outcome, message);
  Report(*member, home, key.name, fmt::format("autostart ({}): {}: {}", why, outcome, message));
  WriteStatus(key, *member, home);
}

// ---- one request ------------------------------------------------------------

void Service::RunRequest(const VmKey& key, const PendingRequest& request) {
  // Whatever happens, a later event may bring this file back.
  Undo unqueue([&] {
    std::lock_guard lock(mutex_);
    queued_.erase(request.Key());
  });
  auto member = Lookup(request.uid);
  if (!member) {
    // Left in place: no longer the user's to ask, nor the daemon's to
    // answer in that home.
    spdlog::warn("wirt: uid {} is not in group {}; request {}/{} ignored", request.uid,
                 options_.group, request.dir, request.file);
    return;
  }
  UserDir home = OpenHome(member->home, {member->uid, member->gid});
  auto folder = OpenUserDir(home, request.dir);
  // Gone, or still open for writing (taken when its writer closes it).
  if (!folder || BeingWritten(*folder, request.file)) return;
  UserDir history = MakeUserDir(home, HistoryDir(request.layout));
  const std::string stamp = Timestamp(NowUnixMicros());
  const std::string base = HistoryName(stamp, request.layout, request.vm, request.file);
  // Moved first, then read from where it now is: what runs is exactly
  // what history keeps, even if the user rewrites the request meanwhile.
  std::string moved;
  try {
    moved = MoveUserFile(*folder, request.file, history, base);
  } catch (const Error& e) {
    if (e.code() != ErrorCode::kNotFound) spdlog::warn("wirt: {}: {}", member->name, e.what());
    return;
  }
  auto finish = [&](const std::string& outcome, const std::string& message,
                    const std::string& params) {
    std::string final_name;
    if (outcome == "rejected") {
      final_name = MoveUserFile(history, moved, history, "ERRORFILE-" + moved);
    } else {
      final_name = MoveUserFile(history, moved, history, moved + "." + outcome);
    }
    if (outcome != "ok") WriteUserFile(history, final_name + ".reason", message + "\n", 0644);
    Remember(key, request.file, outcome, message);
    std::string line = fmt::format("{}{}{}: {}: {}", request.file, params.empty() ? "" : " ",
                                   params, outcome, message);
    Report(*member, home, request.vm, line);
    if (request.layout == Layout::kVirsh) {
      // The older layout's own log: one file per request.
      UserDir log = MakeUserDir(home, kOldLogDir);
      WriteUserFile(
          log, fmt::format("{}-{}-dom-{}-{}.log", stamp, member->name, request.vm, request.file),
          line + "\n", 0644);
      PruneHistory(log);
    }
    WriteStatus(key, *member, home);
    if (outcome != "ok") {
      spdlog::warn("wirt: {} (uid {}) VM {}: {}", member->name, member->uid, request.vm,
                   EscapeForLog(line, 1000));
      Mail(*member, fmt::format("wirt: {} of {} {}", request.file, request.vm, outcome), line);
    }
    PruneHistory(history);
  };

  std::string params;
  ActionParams parsed;
  Action action{};
  try {
    ReadResult content = ReadUserFile(history, moved, kMaxRequestBytes);
    if (!IsPlainText(content.content)) {
      Fail(ErrorCode::kInvalidArgument, "{}: binary content", request.file);
    }
    action = *ParseActionFile(request.file);
    parsed = ParseActionParams(action, content.content);
    params = std::string(content.content.substr(0, content.content.find('\n')));
    if (params == "EMPTY") params.clear();
  } catch (const Error& e) {
    return finish("rejected", e.what(), "");
  }
  std::string outcome = "ok", message;
  try {
    switch (action) {
      case Action::kStart:
        // A user's start is a fresh attempt: autostart's count starts over.
        ResetAutostartFailures(key);
        message = StartInstance(key, *member, home, true);
        break;
      case Action::kShutdown:
        message = StopInstance(key, home, true, "shut down by its user");
        break;
      case Action::kDestroy:
        message = StopInstance(key, home, false, "destroyed by its user");
        break;
      case Action::kAutostart:
        backend_.SetAutostart(key.uid, key.name, !parsed.disable);
        if (parsed.disable) {
          message = "autostart disabled (a running instance keeps running)";
        } else {
          ResetAutostartFailures(key);
          message = "autostart enabled; " + StartInstance(key, *member, home, false);
        }
        break;
    }
  } catch (const Error& e) {
    outcome = "failed";
    message = e.what();
  }
  finish(outcome, message, params);
}

void Service::RejectStray(const Member& member, const StrayEntry& stray) {
  const std::string name = EscapeForLog(stray.name, 100);
  const std::string line = fmt::format("{}/{}: rejected: {}", stray.dir, name, stray.reason);
  try {
    UserDir home = OpenHome(member.home, {member.uid, member.gid});
    if (stray.is_file) {
      auto folder = OpenUserDir(home, stray.dir);
      if (!folder) return;
      UserDir history = MakeUserDir(home, HistoryDir(stray.layout));
      const bool entity = stray.dir == kServiceDir || stray.dir == kOldRoot;
      // The name as far as it is safe and short: the stamp keeps it unique.
      std::string kept = stray.name.substr(0, 100);
      std::replace_if(
          kept.begin(), kept.end(), [](char c) { return c < 0x21 || c > 0x7e; }, '_');
      std::string moved = MoveUserFile(*folder, stray.name, history,
                                       fmt::format("{}-{}-{}", entity ? "ERRORENTITY" : "ERRORFILE",
                                                   Timestamp(NowUnixMicros()), kept));
      WriteUserFile(history, moved + ".reason", stray.reason + "\n", 0644);
      PruneHistory(history);
      std::lock_guard lock(mutex_);
      // Moved away: a new one by that name is new.
      reported_.erase(fmt::format("{}:{}/{}:{}", member.uid, stray.dir, stray.name, stray.ino));
    }
    // In a VM's folder: that VM's log says so too.
    for (std::string_view root : {kServiceDir, kOldRoot}) {
      const std::string prefix = std::string(root) + "/";
      if (stray.dir.rfind(prefix, 0) != 0) continue;
      std::string vm = stray.dir.substr(prefix.size());
      if (root == kOldRoot) vm = OldLayoutVmName(vm);
      if (IsValidVmName(vm)) Report(member, home, vm, line);
    }
    spdlog::warn("wirt: {} (uid {}): {}", member.name, member.uid, line);
    Mail(member, "wirt: request rejected", line);
  } catch (const Error& e) {
    spdlog::warn("wirt: {} (uid {}): {}/{}: {}", member.name, member.uid, stray.dir, name,
                 e.what());
  }
}

void Service::PruneHistory(const UserDir& history) {
  std::vector<std::string> names;
  for (const DirEntry& e : ListDir(history, 1 << 20)) {
    if (e.type == EntryType::kFile) names.push_back(e.name);
  }
  if (names.size() <= options_.history_keep) return;
  // Names start with their time (ERRORFILE- ones after it): oldest first.
  auto when = [](const std::string& n) {
    return n.rfind("ERROR", 0) == 0 ? n.substr(n.find('-') + 1) : n;
  };
  std::sort(names.begin(), names.end(),
            [&](const std::string& a, const std::string& b) { return when(a) < when(b); });
  for (std::size_t i = 0; i + options_.history_keep < names.size(); ++i) {
    RemoveUserFile(history, names[i]);
  }
}

// ---- the actions --------------------------------------------------------------

std::string Service::StartInstance(const VmKey& key, const Member& member, const UserDir& home,
                                   bool config_may_set_autostart) {
  {
    std::unique_lock lock(mutex_);
    VmState& vm = vms_[key];
    if (vm.instance) {
      // Its credentials file again, if it went missing (this daemon made it).
      std::optional<CreateResult> created = vm.created;
      const std::string id = vm.instance->id.str();
      lock.unlock();
      auto info = OpenUserDir(home, InfoDir(key.name));
      struct stat st {};
      if (created && (!info || ::fstatat(info->fd(), std::string(kCredentialsFile).c_str(), &st,
                                         AT_SYMLINK_NOFOLLOW) != 0)) {
        DeliverCredentials(key, home, *created);
      }
      return fmt::format("already running (sandbox {}); its credentials are unchanged", id);
    }
  }
  VmConfig config;
  if (auto folder = OpenUserDir(home, std::string(kServiceDir) + "/" + key.name)) {
    struct stat st {};
    if (::fstatat(folder->fd(), std::string(kConfigFile).c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0) {
      config = ParseVmConfig(ReadUserFile(*folder, kConfigFile, kMaxConfigBytes).content);
    }
  }
  CreateRequest create;
  create.name = key.name;
  create.owner = UserOwner(key.uid);
  create.owner_limit = options_.max_sandboxes_per_user;
  create.owner_memory_mib = options_.max_memory_mib_per_user;
  create.kind = config.kind;
  create.image = config.image;
  create.memory_mib = config.memory_mib;
  create.vcpus = config.vcpus;
  create.ttl_seconds = config.ttl_seconds;
  create.authorized_keys = config.ssh_keys;
  {
    std::lock_guard lock(mutex_);
    vms_[key].starting = true;
  }
  Undo not_starting([&] {
    std::lock_guard lock(mutex_);
    vms_[key].starting = false;
  });
  WriteStatus(key, member, home);
  CreateResult created = backend_.Create(create);
  try {
    DeliverCredentials(key, home, created);
  } catch (const Error& e) {
    // A machine whose login no one can read is of no use: it goes.
    backend_.Destroy(created.sandbox.id, "its credentials could not be written", false);
    throw e.WithContext("the credentials could not be written, so the VM was destroyed");
  }
  {
    std::lock_guard lock(mutex_);
    VmState& vm = vms_[key];
    vm.instance = created.sandbox;
    vm.created = created;
  }
  if (config_may_set_autostart && config.autostart) {
    backend_.SetAutostart(key.uid, key.name, *config.autostart);
  }
  return fmt::format("running as sandbox {}: ssh {}@{} -p {} (the password is in {}/{}/{})",
                     created.sandbox.id.str(), created.sandbox.username, options_.client_host,
                     created.sandbox.host_port, member.home, InfoDir(key.name), kCredentialsFile);
}

void Service::RemoveCredentials(const UserDir& home, const std::string& vm) {
  if (auto info = OpenUserDir(home, InfoDir(vm))) RemoveUserFile(*info, kCredentialsFile);
}

void Service::DeliverCredentials(const VmKey& key, const UserDir& home,
                                 const CreateResult& created) {
  UserDir info = MakeUserDir(home, InfoDir(key.name));
  nlohmann::json credentials = {
      {"id", created.sandbox.id.str()},    {"host", options_.client_host},
      {"port", created.sandbox.host_port}, {"username", created.sandbox.username},
      {"password", created.password},      {"host_key", created.host_key}};
  WriteUserFile(info, kCredentialsFile, credentials.dump(2) + "\n", 0600);
}

std::string Service::StopInstance(const VmKey& key, const UserDir& home, bool graceful,
                                  const std::string& why) {
  std::optional<Sandbox> instance;
  {
    std::lock_guard lock(mutex_);
    VmState& vm = vms_[key];
    instance = vm.instance;
    if (instance) vm.stopping = true;
  }
  if (!instance) return "not running";
  Undo not_stopping([&] {
    std::lock_guard lock(mutex_);
    vms_[key].stopping = false;
  });
  try {
    backend_.Destroy(instance->id, why, graceful);
  } catch (const Error& e) {
    if (e.code() != ErrorCode::kNotFound) throw;
  }
  {
    std::lock_guard lock(mutex_);
    VmState& vm = vms_[key];
    vm.instance.reset();
    vm.created.reset();
  }
  RemoveCredentials(home, key.name);
  return fmt::format("sandbox {} {}; its disk and state are gone", instance->id.str(),
                     graceful ? "powered off" : "stopped");
}

// ---- answers in the user's tree ---------------------------------------------------

void Service::WriteStatus(const VmKey& key, const Member& member, const UserDir& home) {
  VmStatus status;
  status.name = key.name;
  status.user = member.name;
  status.uid = member.uid;
  status.autostart = Autostarted(key);
  {
    std::lock_guard lock(mutex_);
    const VmState& vm = vms_[key];
    const bool failed = vm.last_outcome == "failed" && vm.last_action != "instance";
    status.state = vm.starting   ? "starting"
                   : vm.stopping ? "stopping"
                   : vm.instance ? "running"
                   : failed      ? "failed"
                                 : "stopped";
    status.instance = vm.instance;
    status.host = options_.client_host;
    status.last_action = vm.last_action;
    status.last_outcome = vm.last_outcome;
    status.last_message = vm.last_message;
    status.last_at = vm.last_at;
  }
  if (status.instance) status.domain_xml = backend_.DescribeXml(*status.instance);
  UserDir info = MakeUserDir(home, InfoDir(key.name));
  WriteUserFile(info, kStatusFile, StatusXml(status, NowUnix()), 0644);
}

void Service::Report(const Member& member, const UserDir& home, const std::string& vm,
                     const std::string& line) {
  try {
    UserDir logs = MakeUserDir(home, kLogDir);
    const std::string name = vm + ".log";
    RotateUserLog(logs, name, options_.log_max_bytes, options_.log_keep);
    AppendUserFile(logs, name, fmt::format("{} {}\n", Timestamp(NowUnixMicros()), line));
  } catch (const Error& e) {
    spdlog::warn("wirt: {} (uid {}): cannot write the log of {}: {}", member.name, member.uid, vm,
                 e.what());
  }
}

void Service::Mail(const Member& member, const std::string& subject, const std::string& body) {
  if (!options_.mail) return;
  {
    // At most one mail per user per interval: a user's burst of bad files
    // must not flood root's mailbox (the logs keep every one).
    std::lock_guard lock(mutex_);
    auto now = Clock::now();
    auto [it, fresh] = last_mail_.try_emplace(member.uid, now);
    if (!fresh && now - it->second < options_.mail_interval) return;
    it->second = now;
  }
  try {
    SendMail(options_.sendmail, {member.name, "root"}, subject,
             body + "\n\n(Further errors within " + std::to_string(options_.mail_interval.count()) +
                 " s are only in ~/wirt/logs and the daemon's log.)");
  } catch (const Error& e) {
    spdlog::warn("wirt: mail to {} failed: {}", member.name, e.what());
  }
}

}  // namespace ephemera::wirt
