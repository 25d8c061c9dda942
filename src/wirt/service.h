// The wirt front door: watches the request trees of the members of one
// group with inotify and turns each request into engine calls, one VM at a
// time, writing the answers (status, credentials, logs, history) into the
// user's tree through user_fs.h. A wirt VM is a named sandbox owned by
// "uid:N"; each start makes a fresh one. service.cc watches and queues;
// actions.cc runs requests and answers them.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "core/unique_fd.h"
#include "engine/engine.h"
#include "wirt/inotify.h"
#include "wirt/members.h"
#include "wirt/tree.h"

namespace ephemera::wirt {

// What the service needs of the engine (the engine itself in the daemon;
// a fake in unit tests).
class Backend {
 public:
  virtual ~Backend() = default;
  virtual CreateResult Create(const CreateRequest& request) = 0;
  virtual void Destroy(const SandboxId& id, const std::string& reason, bool graceful) = 0;
  virtual std::vector<Sandbox> List() = 0;
  virtual void SetAutostart(uid_t uid, const std::string& vm, bool on) = 0;
  virtual std::vector<std::pair<std::uint32_t, std::string>> ListAutostart() = 0;
  // The hypervisor's description of an instance (libvirt's domain XML).
  virtual std::string DescribeXml(const Sandbox& sandbox) {
    (void)sandbox;
    return {};
  }
};

class EngineBackend : public Backend {
 public:
  explicit EngineBackend(Engine& engine) : engine_(engine) {}
  CreateResult Create(const CreateRequest& request) override { return engine_.Create(request); }
  void Destroy(const SandboxId& id, const std::string& reason, bool graceful) override {
    engine_.Destroy(id, std::nullopt, reason, graceful);
  }
  std::vector<Sandbox> List() override { return engine_.List(); }
  void SetAutostart(uid_t uid, const std::string& vm, bool on) override {
    engine_.SetAutostart(uid, vm, on);
  }
  std::vector<std::pair<std::uint32_t, std::string>> ListAutostart() override {
    return engine_.ListAutostart();
  }
  std::string DescribeXml(const Sandbox& sandbox) override { return engine_.DescribeXml(sandbox); }

 private:
  Engine& engine_;
};

struct ServiceOptions {
  std::string group = "vmguests";
  std::string client_host;  // what the credentials file names as the host
  std::optional<std::size_t> max_sandboxes_per_user = 4;
  std::optional<std::uint64_t> max_memory_mib_per_user = 4096;
  std::uint64_t log_max_bytes = 1 << 20;
  unsigned log_keep = 5;
  unsigned history_keep = 1000;
  std::size_t workers = 8;  // one user's requests take at most half of them
  // Errors also go to the user and root by the local sendmail, at most one
  // mail per user per mail_interval.
  bool mail = false;
  std::string sendmail = "/usr/sbin/sendmail";
  std::chrono::seconds mail_interval{300};
  // Where account changes are seen (group/passwd rewritten); the member
  // list is also read again every members_interval (NSS sources such as
  // LDAP tell no one of their changes).
  std::string accounts_dir = "/etc";
  std::chrono::seconds members_interval{300};
  // A new file is looked at after this even without a close (a FIFO, a
  // file still open for writing).
  std::chrono::milliseconds settle{250};
  // Autostart: an instance that ends sooner than this after its start, or
  // a start that fails, is tried again after a backoff doubling from
  // retry_backoff, and given up after retry_limit such failures in a row.
  std::chrono::seconds short_life{60};
  std::chrono::milliseconds retry_backoff{30000};
  unsigned retry_limit = 5;
};

class Service {
 public:
  // kFailedPrecondition if the group does not exist.
  Service(ServiceOptions options, Backend& backend);
  ~Service();  // Stop()

  gid_t gid() const { return gid_; }
  // Takes over the instances the store knows (call before the engine's
  // reconcile, which reports those that died meanwhile).
  void Adopt();
  // Starts what autostart keeps running, then watches. Call once, after Adopt.
  void Start();
  // Stops watching and waits for the requests in progress.
  void Stop();
  // For Engine::SetSandboxGoneListener: an instance ended (the guest
  // powered off, its time ran out, a destroy).
  void OnSandboxGone(const Sandbox& gone, const std::string& why);

  // For tests and the benchmark: requests waiting or in progress, and
  // watched folders.
  std::size_t Busy();
  std::size_t Watches();

 private:
  using Clock = std::chrono::steady_clock;
  struct Task {
    enum class Kind { kRequest, kStray, kInstanceGone, kKeepRunning } kind = Kind::kRequest;
    PendingRequest request;            // kRequest
    StrayEntry stray;                  // kStray
    std::optional<SandboxId> gone_id;  // kInstanceGone
    std::string why;
  };
  // A VM of a user; the name "" queues the user's other work (strays).
  struct VmKey {
    uid_t uid;
    std::string name;
    auto operator<=>(const VmKey&) const = default;
  };
  struct VmState {
    std::optional<Sandbox> instance;
    std::optional<CreateResult> created;  // the instance this daemon made (its password)
    std::string last_action, last_outcome, last_message;
    std::int64_t last_at = 0;
    bool starting = false, stopping = false;
    unsigned failures = 0;  // autostart: short lives or failed starts in a row
    std::deque<Task> queue;
    bool running_task = false;
  };

  // service.cc
  void WatchLoop();
  void WatchOnce(std::map<uid_t, Clock::time_point>& settling, Clock::time_point& next_members);
  void RefreshMembers();
  void ScanUser(uid_t uid);
  void Enqueue(const VmKey& key, Task task);
  void WorkerLoop();
  std::optional<Member> Lookup(uid_t uid);
  bool Autostarted(const VmKey& key);
  void RetryLater(const VmKey& key, std::chrono::milliseconds after);

  // actions.cc
  void Run(const VmKey& key, Task& task);
  void RunRequest(const VmKey& key, const PendingRequest& request);
  void RunInstanceGone(const VmKey& key, const Task& task);
  void RunKeepRunning(const VmKey& key, const std::string& why);
  void RejectStray(const Member& member, const StrayEntry& stray);
  // The actions; each returns the outcome message (throws on failure).
  std::string StartInstance(const VmKey& key, const Member& member, const UserDir& home,
                            bool config_may_set_autostart);
  std::string StopInstance(const VmKey& key, const UserDir& home, bool graceful,
                           const std::string& why);
  void DeliverCredentials(const VmKey& key, const UserDir& home, const CreateResult& created);
  void RemoveCredentials(const UserDir& home, const std::string& vm);
  // Autostart's count of failures in a row: reset, or one more (then
  // tried again after the backoff, or given up past retry_limit).
  void ResetAutostartFailures(const VmKey& key);
  void CountAutostartFailure(const VmKey& key);
  void Remember(const VmKey& key, const std::string& action, const std::string& outcome,
                const std::string& message);
  void WriteStatus(const VmKey& key, const Member& member, const UserDir& home);
  // A line in the VM's log (~/wirt/logs/vm/NAME.log), rotated at its limit.
  void Report(const Member& member, const UserDir& home, const std::string& vm,
              const std::string& line);
  // Keeps the newest history_keep entries.
  void PruneHistory(const UserDir& history);
  void Mail(const Member& member, const std::string& subject, const std::string& body);

  ServiceOptions options_;
  Backend& backend_;
  gid_t gid_ = 0;

  std::mutex mutex_;
  std::condition_variable work_;
  bool stopping_ = false;
  std::map<VmKey, VmState> vms_;
  std::deque<VmKey> ready_;  // VMs with queued tasks and no worker
  std::map<uid_t, std::size_t> running_per_user_;
  std::set<std::string> queued_;    // PendingRequest::Key() of requests queued or running
  std::set<std::string> reported_;  // problems and strays already reported
  std::map<uid_t, Member> members_;
  std::map<uid_t, Clock::time_point> last_mail_;
  std::map<VmKey, Clock::time_point> retry_;  // autostarts to try again
  std::size_t busy_ = 0;
  std::size_t watches_ = 0;

  std::unique_ptr<Inotify> inotify_;  // the watch loop's
  UniqueFd wake_;                     // eventfd: wakes the watch loop (stop, a retry due)
  std::thread watcher_;
  std::vector<std::thread> workers_;
};

}  // namespace ephemera::wirt
