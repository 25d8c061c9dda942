#include "wirt/service.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>

#include <spdlog/spdlog.h>
#include <algorithm>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/text.h"
#include "wirt/layout.h"
#include "wirt/mail.h"
#include "wirt/request.h"
#include "wirt/status.h"

namespace ephemera::wirt {

namespace {

// Tags of the watches that are nobody's tree.
constexpr std::uint64_t kAccountsTag = Inotify::kOverflow - 1;  // /etc: group, passwd
constexpr std::uint64_t kHomesTag = Inotify::kOverflow - 2;     // the folders homes are in

std::string HistoryDir(Layout layout) {
  return std::string(layout == Layout::kWirt ? kHistoryDir : kOldHistoryDir);
}

// A history name for a request: when, which VM, which action file.
std::string HistoryName(const std::string& stamp, Layout layout, const std::string& vm,
                        const std::string& file) {
  return layout == Layout::kWirt ? fmt::format("{}-{}-{}", stamp, vm, file)
                                 : fmt::format("{}-dom-{}-{}", stamp, vm, file);
}

std::string JoinPath(const std::string& home, const std::string& relative) {
  return relative.empty() ? home : home + "/" + relative;
}

}  // namespace

std::string OwnerOf(uid_t uid) { return fmt::format("uid:{}", uid); }

std::optional<uid_t> UidOfOwner(const std::string& owner) {
  if (owner.rfind("uid:", 0) != 0 || owner.size() == 4 || owner.size() > 14) return std::nullopt;
  std::uint64_t uid = 0;
  for (char c : owner.substr(4)) {
    if (c < '0' || c > '9') return std::nullopt;
    uid = uid * 10 + static_cast<unsigned>(c - '0');
  }
  if (uid > 0xffffffffu) return std::nullopt;
  return static_cast<uid_t>(uid);
}

Service::Service(ServiceOptions options, Backend& backend)
    : options_(std::move(options)), backend_(backend) {
  auto gid = GroupId(options_.group);
  if (!gid) {
    Fail(ErrorCode::kFailedPrecondition, "wirt: group '{}' does not exist (config key wirt.group)",
         options_.group);
  }
  gid_ = *gid;
  wake_ = UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!wake_) FailErrno("eventfd", errno);
  inotify_ = std::make_unique<Inotify>();
}

Service::~Service() { Stop(); }

void Service::Start() {
  // Instances that outlived a daemon restart stay theirs.
  for (const Sandbox& s : backend_.List()) {
    auto uid = UidOfOwner(s.owner);
    if (!uid || s.name.empty()) continue;
    std::lock_guard lock(mutex_);
    vms_[{*uid, s.name}].instance = s;
  }
  for (const auto& [uid, name] : backend_.ListAutostart()) {
    Task keep;
    keep.kind = Task::Kind::kKeepRunning;
    keep.why = "autostart at daemon start";
    Enqueue({uid, name}, std::move(keep));
  }
  for (std::size_t i = 0; i < std::max<std::size_t>(1, options_.workers); ++i) {
    workers_.emplace_back([this] { WorkerLoop(); });
  }
  RefreshMembers();
  watcher_ = std::thread([this] { WatchLoop(); });
}

void Service::Stop() {
  {
    std::lock_guard lock(mutex_);
    if (stopping_) return;
    stopping_ = true;
  }
  std::uint64_t one = 1;
  if (::write(wake_.get(), &one, sizeof one) < 0) {
    spdlog::warn("wirt: cannot wake the watcher: {}", strerror(errno));
  }
  work_.notify_all();
  if (watcher_.joinable()) watcher_.join();
  for (auto& w : workers_) {
    if (w.joinable()) w.join();
  }
}

std::size_t Service::Busy() {
  std::lock_guard lock(mutex_);
  return busy_;
}

std::size_t Service::Watches() {
  std::lock_guard lock(mutex_);
  return watches_;
}

void Service::OnSandboxGone(const Sandbox& gone, const std::string& why) {
  auto uid = UidOfOwner(gone.owner);
  if (!uid || gone.name.empty()) return;
  Task task;
  task.kind = Task::Kind::kInstanceGone;
  task.gone_id = gone.id;
  task.why = why;
  Enqueue({*uid, gone.name}, std::move(task));
}

// ---- watching -------------------------------------------------------------

void Service::RefreshMembers() {
  std::map<uid_t, Member> now;
  for (Member& m : Members(gid_)) now.emplace(m.uid, std::move(m));
  std::vector<uid_t> added;
  {
    std::lock_guard lock(mutex_);
    for (const auto& [uid, m] : members_) {
      if (!now.count(uid)) {
        inotify_->Forget(uid);
        spdlog::info("wirt: {} (uid {}) left group {}; its tree is no longer watched", m.name, uid,
                     options_.group);
      }
    }
    for (const auto& [uid, m] : now) {
      if (!members_.count(uid)) added.push_back(uid);
    }
    members_ = now;
  }
  inotify_->WatchDir(options_.accounts_dir, kAccountsTag);
  std::set<std::string> parents;
  for (const auto& [uid, m] : now) {
    if (auto slash = m.home.find_last_of('/'); slash != std::string::npos && slash > 0) {
      parents.insert(m.home.substr(0, slash));
    }
  }
  for (const auto& parent : parents) inotify_->WatchDir(parent, kHomesTag);
  for (uid_t uid : added) ScanUser(uid);
}

void Service::ScanUser(uid_t uid) {
  Member member;
  {
    std::lock_guard lock(mutex_);
    auto it = members_.find(uid);
    if (it == members_.end()) return;
    member = it->second;
  }
  // A folder is watched only after it was read: read again while that
  // added new watches, so that nothing written in between is missed.
  TreeScan scan;
  for (int round = 0; round < 8; ++round) {
    scan = TreeScan();
    try {
      UserDir home = OpenHome(member.home, {member.uid, member.gid});
      scan = ScanTree(home, uid);
    } catch (const Error& e) {
      scan.problems.push_back(e.what());
    }
    bool added = false;
    for (const std::string& relative : scan.watch) {
      added |= inotify_->WatchDir(JoinPath(member.home, relative), uid) == Inotify::Watch::kNew;
    }
    if (!added) break;
  }
  for (const StrayEntry& stray : scan.strays) RejectStray(member, stray);
  for (const std::string& problem : scan.problems) {
    std::lock_guard lock(mutex_);
    if (reported_.insert(fmt::format("{}:{}", uid, problem)).second) {
      spdlog::warn("wirt: {} (uid {}): {}", member.name, uid, problem);
    }
  }
  for (const PendingRequest& request : scan.requests) {
    {
      std::lock_guard lock(mutex_);
      if (!queued_.insert(request.Key()).second) continue;
    }
    Task task;
    task.request = request;
    Enqueue({uid, request.vm}, std::move(task));
  }
  std::lock_guard lock(mutex_);
  watches_ = inotify_->watches();
}

void Service::WatchLoop() {
  using Clock = std::chrono::steady_clock;
  std::map<uid_t, Clock::time_point> settling;  // users with a new file not yet closed
  for (;;) {
    int timeout = -1;
    if (!settling.empty()) {
      auto next = std::min_element(settling.begin(), settling.end(), [](auto& a, auto& b) {
                    return a.second < b.second;
                  })->second;
      timeout = static_cast<int>(std::max<std::int64_t>(
          0,
          std::chrono::duration_cast<std::chrono::milliseconds>(next - Clock::now()).count() + 1));
    }
    struct pollfd fds[2] = {{inotify_->fd(), POLLIN, 0}, {wake_.get(), POLLIN, 0}};
    if (::poll(fds, 2, timeout) < 0 && errno != EINTR) {
      spdlog::error("wirt: poll: {}; the watcher stops", strerror(errno));
      return;
    }
    if (fds[1].revents) return;
    std::set<uid_t> dirty;
    bool accounts = false;
    for (const Inotify::Event& e : inotify_->Drain()) {
      if (e.tag == Inotify::kOverflow) {
        accounts = true;  // rescan everyone
        std::lock_guard lock(mutex_);
        for (const auto& [uid, m] : members_) dirty.insert(uid);
      } else if (e.tag == kAccountsTag) {
        accounts = accounts || e.name == "group" || e.name == "passwd";
      } else if (e.tag == kHomesTag) {
        // A new home: of a new account, or of a member whose home was
        // missing until now.
        accounts = true;
        std::lock_guard lock(mutex_);
        for (const auto& [uid, m] : members_) {
          if (m.home.substr(m.home.find_last_of('/') + 1) == e.name) dirty.insert(uid);
        }
      } else if ((e.mask & IN_CREATE) && !(e.mask & IN_ISDIR)) {
        // Wait for the close (IN_CLOSE_WRITE) unless it never comes.
        settling.emplace(static_cast<uid_t>(e.tag), Clock::now() + options_.settle);
      } else {
        dirty.insert(static_cast<uid_t>(e.tag));
      }
    }
    for (auto it = settling.begin(); it != settling.end();) {
      if (it->second <= Clock::now()) {
        dirty.insert(it->first);
        it = settling.erase(it);
      } else {
        ++it;
      }
    }
    if (accounts) RefreshMembers();
    for (uid_t uid : dirty) ScanUser(uid);
  }
}

// ---- the per-VM queues ----------------------------------------------------

void Service::Enqueue(const VmKey& key, Task task) {
  std::lock_guard lock(mutex_);
  if (stopping_) return;
  VmState& vm = vms_[key];
  vm.queue.push_back(std::move(task));
  ++busy_;
  if (!vm.running_task && vm.queue.size() == 1) {
    ready_.push_back(key);
    work_.notify_one();
  }
}

void Service::WorkerLoop() {
  std::unique_lock lock(mutex_);
  for (;;) {
    work_.wait(lock, [this] { return stopping_ || !ready_.empty(); });
    if (stopping_) return;
    VmKey key = ready_.front();
    ready_.pop_front();
    VmState& vm = vms_[key];
    vm.running_task = true;
    Task task = std::move(vm.queue.front());
    vm.queue.pop_front();
    lock.unlock();
    try {
      Run(key, task);
    } catch (const std::exception& e) {
      spdlog::error("wirt: uid {} VM {}: {}", key.uid, key.name, e.what());
    }
    lock.lock();
    --busy_;
    vm.running_task = false;
    if (!vm.queue.empty()) {
      ready_.push_back(key);
      work_.notify_one();
    }
  }
}

std::optional<Member> Service::Lookup(uid_t uid) { return MemberByUid(uid, gid_); }

bool Service::Autostarted(const VmKey& key) {
  for (const auto& [uid, name] : backend_.ListAutostart()) {
    if (uid == key.uid && name == key.name) return true;
  }
  return false;
}

void Service::Run(const VmKey& key, Task& task) {
  if (task.kind == Task::Kind::kRequest) return RunRequest(key, task.request);
  auto member = Lookup(key.uid);
  if (!member) {
    spdlog::warn("wirt: uid {} is not in group {}; VM {} left as it is", key.uid, options_.group,
                 key.name);
    return;
  }
  UserDir home = OpenHome(member->home, {member->uid, member->gid});
  std::string line;
  if (task.kind == Task::Kind::kInstanceGone) {
    {
      std::lock_guard lock(mutex_);
      VmState& vm = vms_[key];
      // A destroy this service asked for has already been answered.
      if (!vm.instance || vm.instance->id != *task.gone_id) return;
      vm.instance.reset();
      vm.credentials.reset();
      vm.last_action = "instance";
      vm.last_outcome = "ended";
      vm.last_message = task.why;
      vm.last_at = NowUnix();
    }
    if (auto info = OpenUserDir(home, std::string(kInfoDir) + "/" + key.name)) {
      RemoveUserFile(*info, kCredentialsFile);
    }
    line = fmt::format("instance {} ended: {}", task.gone_id->str(), task.why);
    Report(*member, home, key.name, line);
    if (!Autostarted(key)) return WriteStatus(key, *member, home);
  }
  // Autostart keeps one instance running.
  std::string outcome = "ok", message;
  try {
    message = StartInstance(key, *member, home);
  } catch (const Error& e) {
    outcome = "failed";
    message = e.what();
    Mail(*member, fmt::format("wirt: autostart of {} failed", key.name), message);
  }
  {
    std::lock_guard lock(mutex_);
    VmState& vm = vms_[key];
    vm.last_action = "autostart";
    vm.last_outcome = outcome;
    vm.last_message = message;
    vm.last_at = NowUnix();
  }
  Report(*member, home, key.name,
         fmt::format("autostart ({}): {}: {}",
                     task.kind == Task::Kind::kKeepRunning ? task.why : "the instance ended",
                     outcome, message));
  WriteStatus(key, *member, home);
}

// ---- one request ------------------------------------------------------------

void Service::RunRequest(const VmKey& key, const PendingRequest& request) {
  auto member = Lookup(request.uid);
  if (!member) {
    // Left in place (and not retried until it changes): no longer the
    // user's to ask, and no longer the daemon's to answer in that home.
    spdlog::warn("wirt: uid {} is not in group {}; request {}/{} ignored", request.uid,
                 options_.group, request.dir, request.file);
    return;
  }
  UserDir home = OpenHome(member->home, {member->uid, member->gid});
  auto folder = OpenUserDir(home, request.dir);
  if (!folder) {
    std::lock_guard lock(mutex_);
    queued_.erase(request.Key());
    return;
  }
  if (BeingWritten(*folder, request.file)) {
    // Taken when its writer closes it (IN_CLOSE_WRITE rescans).
    std::lock_guard lock(mutex_);
    queued_.erase(request.Key());
    return;
  }
  UserDir history = MakeUserDir(home, HistoryDir(request.layout));
  const std::string stamp = Timestamp(NowUnixMicros());
  const std::string base = HistoryName(stamp, request.layout, request.vm, request.file);
  // Moved first, then read from where it now is: what runs is exactly
  // what history keeps, even if the user rewrites the request meanwhile.
  std::string moved;
  try {
    moved = MoveUserFile(*folder, request.file, history, base);
  } catch (const Error& e) {
    spdlog::warn("wirt: {}: {}", member->name, e.what());
    return;  // stays queued: not retried until the file changes
  }
  {
    std::lock_guard lock(mutex_);
    queued_.erase(request.Key());
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
    {
      std::lock_guard lock(mutex_);
      VmState& vm = vms_[key];
      vm.last_action = request.file;
      vm.last_outcome = outcome;
      vm.last_message = message;
      vm.last_at = NowUnix();
    }
    std::string line = fmt::format("{}{}{}: {}: {}", request.file, params.empty() ? "" : " ",
                                   params, outcome, message);
    Report(*member, home, request.vm, line);
    if (request.layout == Layout::kVirsh) {
      // The older layout's own log: one file per request.
      UserDir log = MakeUserDir(home, kOldLogDir);
      WriteUserFile(
          log, fmt::format("{}-{}-dom-{}-{}.log", stamp, member->name, request.vm, request.file),
          line + "\n", 0644);
    }
    WriteStatus(key, *member, home);
    if (outcome != "ok") {
      spdlog::warn("wirt: {} (uid {}) VM {}: {}", member->name, member->uid, request.vm, line);
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
        message = StartInstance(key, *member, home);
        break;
      case Action::kShutdown:
        message = StopInstance(key, true, "shut down by its user");
        break;
      case Action::kDestroy:
        message = StopInstance(key, false, "destroyed by its user");
        break;
      case Action::kAutostart:
        backend_.SetAutostart(key.uid, key.name, !parsed.disable);
        if (parsed.disable) {
          message = "autostart disabled (a running instance keeps running)";
        } else {
          message = "autostart enabled; " + StartInstance(key, *member, home);
        }
        break;
    }
  } catch (const Error& e) {
    outcome = "failed";
    message = e.what();
  }
  finish(outcome, message, params);
}

void Service::PruneHistory(const UserDir& history) {
  std::vector<std::string> names;
  for (const DirEntry& e : ListDir(history)) {
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

void Service::RejectStray(const Member& member, const StrayEntry& stray) {
  const std::string id = fmt::format("{}:{}/{}:{}", member.uid, stray.dir, stray.name, stray.ino);
  {
    std::lock_guard lock(mutex_);
    if (!reported_.insert(id).second) return;
  }
  try {
    UserDir home = OpenHome(member.home, {member.uid, member.gid});
    std::string line = fmt::format("{}/{}: rejected: {}", stray.dir, stray.name, stray.reason);
    if (stray.is_file) {
      auto folder = OpenUserDir(home, stray.dir);
      if (!folder) return;
      UserDir history = MakeUserDir(home, HistoryDir(stray.layout));
      const bool entity = stray.dir == kServiceDir || stray.dir == kOldRoot;
      std::string moved = MoveUserFile(*folder, stray.name, history,
                                       fmt::format("{}-{}-{}", entity ? "ERRORENTITY" : "ERRORFILE",
                                                   Timestamp(NowUnixMicros()), stray.name));
      WriteUserFile(history, moved + ".reason", stray.reason + "\n", 0644);
      std::lock_guard lock(mutex_);
      reported_.erase(id);  // moved away: a new one by that name is new
    }
    spdlog::warn("wirt: {} (uid {}): {}", member.name, member.uid, line);
    Mail(member, "wirt: request rejected", line);
  } catch (const Error& e) {
    spdlog::warn("wirt: {} (uid {}): {}/{}: {}", member.name, member.uid, stray.dir, stray.name,
                 e.what());
  }
}

// ---- the actions --------------------------------------------------------------

std::string Service::StartInstance(const VmKey& key, const Member& member, const UserDir& home) {
  {
    std::lock_guard lock(mutex_);
    VmState& vm = vms_[key];
    if (vm.instance) {
      return fmt::format("already running (sandbox {}); its credentials are unchanged",
                         vm.instance->id.str());
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
  create.owner = OwnerOf(key.uid);
  create.owner_limit = options_.max_sandboxes_per_user;
  create.owner_memory_mib = options_.max_memory_mib_per_user;
  create.image = config.image;
  create.memory_mib = config.memory_mib;
  create.vcpus = config.vcpus;
  create.ttl_seconds = config.ttl_seconds;
  create.authorized_keys = config.ssh_keys;
  {
    std::lock_guard lock(mutex_);
    vms_[key].starting = true;
  }
  WriteStatus(key, member, home);
  std::optional<CreateResult> created;
  try {
    created = backend_.Create(create);
  } catch (...) {
    std::lock_guard lock(mutex_);
    vms_[key].starting = false;
    throw;
  }
  const CreateResult& result = *created;
  {
    std::lock_guard lock(mutex_);
    VmState& vm = vms_[key];
    vm.starting = false;
    vm.instance = result.sandbox;
    vm.credentials = result;
  }
  UserDir info = MakeUserDir(home, std::string(kInfoDir) + "/" + key.name);
  nlohmann::json credentials = {
      {"id", result.sandbox.id.str()},    {"host", options_.client_host},
      {"port", result.sandbox.host_port}, {"username", result.sandbox.username},
      {"password", result.password},      {"host_key", result.host_key}};
  WriteUserFile(info, kCredentialsFile, credentials.dump(2) + "\n", 0600);
  if (config.autostart) backend_.SetAutostart(key.uid, key.name, *config.autostart);
  return fmt::format("running as sandbox {}: ssh {}@{} -p {} (login in {})",
                     result.sandbox.id.str(), result.sandbox.username, options_.client_host,
                     result.sandbox.host_port,
                     JoinPath(member.home, std::string(kInfoDir)) + "/" + key.name + "/" +
                         std::string(kCredentialsFile));
}

std::string Service::StopInstance(const VmKey& key, bool graceful, const std::string& why) {
  std::optional<Sandbox> instance;
  {
    std::lock_guard lock(mutex_);
    VmState& vm = vms_[key];
    instance = vm.instance;
    if (instance) vm.stopping = true;
  }
  if (!instance) return "not running";
  auto member = Lookup(key.uid);
  try {
    backend_.Destroy(instance->id, why, graceful);
  } catch (const Error& e) {
    if (e.code() != ErrorCode::kNotFound) {
      std::lock_guard lock(mutex_);
      vms_[key].stopping = false;
      throw;
    }
  }
  {
    std::lock_guard lock(mutex_);
    VmState& vm = vms_[key];
    vm.stopping = false;
    vm.instance.reset();
    vm.credentials.reset();
  }
  if (member) {
    UserDir home = OpenHome(member->home, {member->uid, member->gid});
    if (auto info = OpenUserDir(home, std::string(kInfoDir) + "/" + key.name)) {
      RemoveUserFile(*info, kCredentialsFile);
    }
  }
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
    status.state = vm.starting                                                     ? "starting"
                   : vm.stopping                                                   ? "stopping"
                   : vm.instance                                                   ? "running"
                   : (vm.last_outcome == "failed" && vm.last_action != "instance") ? "failed"
                                                                                   : "stopped";
    status.instance = vm.instance;
    status.host = options_.client_host;
    status.last_action = vm.last_action;
    status.last_outcome = vm.last_outcome;
    status.last_message = vm.last_message;
    status.last_at = vm.last_at;
  }
  if (status.instance) status.domain_xml = backend_.DescribeXml(*status.instance);
  UserDir info = MakeUserDir(home, std::string(kInfoDir) + "/" + key.name);
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
  try {
    SendMail(options_.sendmail, {member.name, "root"}, subject, body);
  } catch (const Error& e) {
    spdlog::warn("wirt: mail to {} failed: {}", member.name, e.what());
  }
}

}  // namespace ephemera::wirt
