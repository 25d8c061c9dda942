#include "wirt/service.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <unistd.h>

#include <spdlog/spdlog.h>
#include <algorithm>
#include <cstring>

#include "core/error.h"
#include "core/text.h"

namespace ephemera::wirt {

namespace {

// Tags of the watches that are nobody's tree.
constexpr std::uint64_t kAccountsTag = Inotify::kOverflow - 1;  // /etc: group, passwd
constexpr std::uint64_t kHomesTag = Inotify::kOverflow - 2;     // the folders homes are in

// Remembered problems are for not repeating a log line; past this many
// the memory is cleared (and a problem may be logged again).
constexpr std::size_t kMaxReported = 10000;

}  // namespace

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

void Service::Adopt() {
  for (const Sandbox& s : backend_.List()) {
    auto uid = OwnerUid(s.owner);
    if (!uid || s.name.empty()) continue;
    std::lock_guard lock(mutex_);
    vms_[{*uid, s.name}].instance = s;
  }
}

void Service::Start() {
  for (const auto& [uid, name] : backend_.ListAutostart()) {
    Task keep;
    keep.kind = Task::Kind::kKeepRunning;
    keep.why = "at daemon start";
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
  auto uid = OwnerUid(gone.owner);
  if (!uid || gone.name.empty()) return;
  Task task;
  task.kind = Task::Kind::kInstanceGone;
  task.gone_id = gone.id;
  task.why = why;
  Enqueue({*uid, gone.name}, std::move(task));
}

void Service::RetryLater(const VmKey& key, std::chrono::milliseconds after) {
  {
    std::lock_guard lock(mutex_);
    retry_[key] = Clock::now() + after;
  }
  std::uint64_t one = 1;
  if (::write(wake_.get(), &one, sizeof one) < 0) {
    spdlog::warn("wirt: cannot wake the watcher: {}", strerror(errno));
  }
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
  inotify_->WatchPath(options_.accounts_dir, kAccountsTag);
  std::set<std::string> parents;
  for (const auto& [uid, m] : now) {
    if (auto slash = m.home.find_last_of('/'); slash != std::string::npos && slash > 0) {
      parents.insert(m.home.substr(0, slash));
    }
  }
  for (const auto& parent : parents) inotify_->WatchPath(parent, kHomesTag);
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
  std::set<int> watched;
  for (int round = 0; round < 8; ++round) {
    scan = TreeScan();
    watched.clear();
    try {
      UserDir home = OpenHome(member.home, {member.uid, member.gid});
      scan = ScanTree(home, uid);
    } catch (const Error& e) {
      scan.problems.push_back(e.what());
    }
    bool added = false;
    for (const UniqueFd& dir : scan.watch) {
      Inotify::Added watch = inotify_->WatchFd(dir.get(), uid);
      if (watch.wd >= 0) watched.insert(watch.wd);
      added |= watch.fresh;
    }
    if (!added) break;
  }
  // Folders that left the tree are watched no more.
  inotify_->Retain(uid, watched);
  std::vector<std::pair<VmKey, Task>> tasks;
  {
    std::lock_guard lock(mutex_);
    watches_ = inotify_->watches();
    if (reported_.size() > kMaxReported) reported_.clear();
    for (const std::string& problem : scan.problems) {
      if (reported_.insert(fmt::format("{}:{}", uid, problem)).second) {
        spdlog::warn("wirt: {} (uid {}): {}", member.name, uid, EscapeForLog(problem, 300));
      }
    }
    // Strays are moved aside by the user's own queue, not here: the
    // watcher never waits on one user's tree.
    for (const StrayEntry& stray : scan.strays) {
      const std::string id = fmt::format("{}:{}/{}:{}", uid, stray.dir, stray.name, stray.ino);
      if (!reported_.insert(id).second) continue;
      Task task;
      task.kind = Task::Kind::kStray;
      task.stray = stray;
      tasks.push_back({{uid, ""}, std::move(task)});
    }
    for (const PendingRequest& request : scan.requests) {
      if (!queued_.insert(request.Key()).second) continue;
      Task task;
      task.request = request;
      tasks.push_back({{uid, request.vm}, std::move(task)});
    }
  }
  for (auto& [key, task] : tasks) Enqueue(key, std::move(task));
}

void Service::WatchLoop() {
  std::map<uid_t, Clock::time_point> settling;  // users with a new file not yet closed
  Clock::time_point next_members = Clock::now() + options_.members_interval;
  for (;;) {
    {
      std::lock_guard lock(mutex_);
      if (stopping_) return;
    }
    try {
      WatchOnce(settling, next_members);
    } catch (const std::exception& e) {
      // One bad pass (a tree that cannot be read, memory) must not end the
      // watching for everyone; a pause keeps a persistent fault from spinning.
      spdlog::error("wirt: watcher: {}", e.what());
      std::this_thread::sleep_for(std::chrono::seconds(1));
    }
  }
}

void Service::WatchOnce(std::map<uid_t, Clock::time_point>& settling,
                        Clock::time_point& next_members) {
  Clock::time_point next = next_members;
  for (const auto& [uid, at] : settling) next = std::min(next, at);
  {
    std::lock_guard lock(mutex_);
    for (const auto& [key, at] : retry_) next = std::min(next, at);
  }
  const auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(next - Clock::now());
  struct pollfd fds[2] = {{inotify_->fd(), POLLIN, 0}, {wake_.get(), POLLIN, 0}};
  if (::poll(fds, 2, static_cast<int>(std::max<std::int64_t>(0, wait.count() + 1))) < 0 &&
      errno != EINTR) {
    FailErrno("poll", errno);
  }
  if (fds[1].revents) {
    std::uint64_t count = 0;
    if (::read(wake_.get(), &count, sizeof count) < 0 && errno != EAGAIN) {
      FailErrno("eventfd", errno);
    }
  }
  std::set<uid_t> dirty;
  bool accounts = false;
  for (const Inotify::Event& e : inotify_->Drain()) {
    std::lock_guard lock(mutex_);
    if (e.tag == Inotify::kOverflow) {
      accounts = true;  // rescan everyone
      for (const auto& [uid, m] : members_) dirty.insert(uid);
    } else if (e.tag == kAccountsTag) {
      accounts = accounts || e.name == "group" || e.name == "passwd";
    } else if (e.tag == kHomesTag) {
      // A new home: of a new account, or of a member whose home was
      // missing until now.
      accounts = true;
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
  const auto now = Clock::now();
  for (auto it = settling.begin(); it != settling.end();) {
    if (it->second <= now) {
      dirty.insert(it->first);
      it = settling.erase(it);
    } else {
      ++it;
    }
  }
  if (now >= next_members) {
    accounts = true;
    next_members = now + options_.members_interval;
  }
  std::vector<VmKey> due;
  {
    std::lock_guard lock(mutex_);
    for (auto it = retry_.begin(); it != retry_.end();) {
      if (it->second <= now) {
        due.push_back(it->first);
        it = retry_.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (const VmKey& key : due) {
    Task keep;
    keep.kind = Task::Kind::kKeepRunning;
    keep.why = "a retry";
    Enqueue(key, std::move(keep));
  }
  if (accounts) RefreshMembers();
  for (uid_t uid : dirty) ScanUser(uid);
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
  // One user may hold at most half of the workers: others' requests go on.
  const std::size_t per_user = std::max<std::size_t>(1, options_.workers / 2);
  std::unique_lock lock(mutex_);
  for (;;) {
    std::deque<VmKey>::iterator next;
    work_.wait(lock, [&] {
      if (stopping_) return true;
      next = std::find_if(ready_.begin(), ready_.end(),
                          [&](const VmKey& k) { return running_per_user_[k.uid] < per_user; });
      return next != ready_.end();
    });
    if (stopping_) return;
    VmKey key = *next;
    ready_.erase(next);
    VmState& vm = vms_[key];
    vm.running_task = true;
    ++running_per_user_[key.uid];
    Task task = std::move(vm.queue.front());
    vm.queue.pop_front();
    lock.unlock();
    try {
      Run(key, task);
    } catch (const std::exception& e) {
      spdlog::error("wirt: uid {} VM {}: {}", key.uid, key.name, EscapeForLog(e.what(), 500));
    }
    lock.lock();
    --busy_;
    --running_per_user_[key.uid];
    vm.running_task = false;
    if (!vm.queue.empty()) ready_.push_back(key);
    work_.notify_all();  // this user may run another now
  }
}

std::optional<Member> Service::Lookup(uid_t uid) { return MemberByUid(uid, gid_); }

bool Service::Autostarted(const VmKey& key) {
  for (const auto& [uid, name] : backend_.ListAutostart()) {
    if (uid == key.uid && name == key.name) return true;
  }
  return false;
}

}  // namespace ephemera::wirt
