// The wirt service over a fake engine, with real users and a real group
// writing real files as themselves (setpriv): what it must withstand
// (symlinks, other members, a member who left, bad requests, FIFOs) and a
// burst of requests. The same service with the real engine and real guests
// is in e2e/wirt_test.cc.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <thread>

#include "core/fs.h"
#include "support/test_users.h"
#include "unit/test_files.h"
#include "wirt/layout.h"
#include "wirt/service.h"

namespace ephemera::wirt {
namespace {

using test::TempDir;
using test::TestUser;
using test::TestUsers;
using ::testing::HasSubstr;
namespace fs = std::filesystem;
using namespace std::chrono_literals;

// Records what it is asked, per VM, and keeps "running" instances.
class FakeBackend : public Backend {
 public:
  CreateResult Create(const CreateRequest& request) override {
    std::lock_guard lock(mutex_);
    calls_[request.owner + "/" + request.name].push_back("create");
    requests_.push_back(request);
    Sandbox s(SandboxId::Generate());
    s.owner = request.owner;
    s.name = request.name;
    s.spec.image = request.image.value_or("default");
    s.username = "user_12345";
    s.host_port = 10022;
    s.guest_ip = "172.16.0.2";
    s.state = SandboxState::kReady;
    s.created_at = NowUnix();
    running_.emplace(s.id.str(), s);
    return CreateResult{s, "the-password", "token", "ssh-ed25519 AAAAhostkey", {}};
  }
  void Destroy(const SandboxId& id, const std::string& reason, bool graceful) override {
    std::optional<Sandbox> gone;
    {
      std::lock_guard lock(mutex_);
      auto it = running_.find(id.str());
      if (it == running_.end()) Fail(ErrorCode::kNotFound, "no sandbox {}", id.str());
      gone = it->second;
      calls_[gone->owner + "/" + gone->name].push_back(graceful ? "shutdown" : "destroy");
      running_.erase(it);
    }
    if (service) service->OnSandboxGone(*gone, reason);  // as the engine does
  }
  std::vector<Sandbox> List() override {
    std::lock_guard lock(mutex_);
    std::vector<Sandbox> all;
    for (const auto& [id, s] : running_) all.push_back(s);
    return all;
  }
  void SetAutostart(uid_t uid, const std::string& vm, bool on) override {
    std::lock_guard lock(mutex_);
    if (on) {
      autostart_.insert({uid, vm});
    } else {
      autostart_.erase({uid, vm});
    }
  }
  std::vector<std::pair<std::uint32_t, std::string>> ListAutostart() override {
    std::lock_guard lock(mutex_);
    return {autostart_.begin(), autostart_.end()};
  }
  // The instance of a VM ending by itself (the guest powered off).
  void EndInstance(const std::string& owner, const std::string& vm) {
    std::optional<Sandbox> gone;
    {
      std::lock_guard lock(mutex_);
      for (auto it = running_.begin(); it != running_.end(); ++it) {
        if (it->second.owner == owner && it->second.name == vm) {
          gone = it->second;
          running_.erase(it);
          break;
        }
      }
    }
    if (gone && service) service->OnSandboxGone(*gone, "the guest shut down");
  }
  std::vector<std::string> Calls(const std::string& owner, const std::string& vm) {
    std::lock_guard lock(mutex_);
    return calls_[owner + "/" + vm];
  }
  std::size_t Running() {
    std::lock_guard lock(mutex_);
    return running_.size();
  }
  std::vector<CreateRequest> Requests() {
    std::lock_guard lock(mutex_);
    return requests_;
  }

  Service* service = nullptr;

 private:
  std::mutex mutex_;
  std::map<std::string, std::vector<std::string>> calls_;
  std::map<std::string, Sandbox> running_;
  std::set<std::pair<std::uint32_t, std::string>> autostart_;
  std::vector<CreateRequest> requests_;
};

class WirtServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    users_ = std::make_unique<TestUsers>(dir_.path() / "home");
    alice_ = users_->Add("a");
    bob_ = users_->Add("b");
  }
  void TearDown() override {
    if (service_) service_->Stop();
    service_.reset();
    users_.reset();
  }

  void StartService(std::size_t workers = 4) {
    ServiceOptions options;
    options.group = users_->group();
    options.client_host = "host.example";
    options.workers = workers;
    options.history_keep = 100;
    options.short_life = short_life_;
    options.retry_backoff = 100ms;
    options.retry_limit = 2;
    service_ = std::make_unique<Service>(options, backend_);
    backend_.service = service_.get();
    service_->Adopt();
    service_->Start();
  }

  // As the user, in their home.
  void As(const TestUser& user, const std::string& script) {
    ASSERT_EQ(users_->RunAs(user, script), 0) << script;
  }
  // Waits until `done` holds (the service answers within milliseconds;
  // the bound only keeps a broken build from hanging).
  template <typename F>
  bool WaitFor(F done, std::chrono::milliseconds limit = 10s) {
    auto until = std::chrono::steady_clock::now() + limit;
    while (!done()) {
      if (std::chrono::steady_clock::now() > until) return false;
      std::this_thread::sleep_for(10ms);
    }
    return true;
  }
  bool Idle() {
    return WaitFor([&] { return service_->Busy() == 0; });
  }
  static std::string Owner(const TestUser& u) { return UserOwner(u.uid); }
  static fs::path Info(const TestUser& u, const std::string& vm) {
    return u.home / "wirt/info/vm" / vm;
  }
  static std::string Read(const fs::path& p) { return fs::exists(p) ? ReadFile(p) : ""; }
  std::vector<std::string> History(const TestUser& u, const char* dir = "wirt/logs/history") {
    std::vector<std::string> names;
    if (!fs::exists(u.home / dir)) return names;
    for (const auto& e : fs::directory_iterator(u.home / dir)) {
      names.push_back(e.path().filename().string());
    }
    std::sort(names.begin(), names.end());
    return names;
  }

  TempDir dir_;
  std::unique_ptr<TestUsers> users_;
  TestUser alice_, bob_;
  FakeBackend backend_;
  std::unique_ptr<Service> service_;
  // An instance that ends sooner counts as a failed start for autostart.
  std::chrono::seconds short_life_{0};
};

TEST_F(WirtServiceTest, StartWritesCredentialsStatusLogAndHistory) {
  StartService();
  As(alice_,
     "mkdir -p wirt/service/vm/web && cd wirt/service/vm/web && "
     "echo '{\"memory_mib\": 512, \"image\": \"default\"}' > config && touch start");
  ASSERT_TRUE(WaitFor([&] { return fs::exists(Info(alice_, "web") / "credentials"); }));
  ASSERT_TRUE(Idle());
  EXPECT_EQ(backend_.Calls(Owner(alice_), "web"), std::vector<std::string>{"create"});
  ASSERT_EQ(backend_.Requests().size(), 1u);
  EXPECT_EQ(backend_.Requests()[0].memory_mib, 512u);
  EXPECT_EQ(backend_.Requests()[0].name, "web");

  struct stat st {};
  ASSERT_EQ(::stat((Info(alice_, "web") / "credentials").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, alice_.uid);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  std::string credentials = Read(Info(alice_, "web") / "credentials");
  EXPECT_THAT(credentials, HasSubstr("\"password\": \"the-password\""));
  EXPECT_THAT(credentials, HasSubstr("\"host\": \"host.example\""));
  EXPECT_THAT(credentials, HasSubstr("\"port\": 10022"));
  std::string status = Read(Info(alice_, "web") / "status.xml");
  EXPECT_THAT(status, HasSubstr("<state>running</state>"));
  EXPECT_THAT(status, HasSubstr("username=\"user_12345\""));
  EXPECT_THAT(Read(alice_.home / "wirt/logs/vm/web.log"), HasSubstr("start: ok: running as"));
  auto history = History(alice_);
  ASSERT_EQ(history.size(), 1u);
  EXPECT_THAT(history[0], ::testing::EndsWith("-web-start.ok"));
  EXPECT_FALSE(fs::exists(alice_.home / "wirt/service/vm/web/start"));

  // shutdown: the instance goes, and with it the credentials.
  As(alice_, "touch wirt/service/vm/web/stop");
  ASSERT_TRUE(WaitFor([&] { return !fs::exists(Info(alice_, "web") / "credentials"); }));
  ASSERT_TRUE(Idle());
  EXPECT_EQ(backend_.Calls(Owner(alice_), "web"), (std::vector<std::string>{"create", "shutdown"}));
  EXPECT_THAT(Read(Info(alice_, "web") / "status.xml"), HasSubstr("<state>stopped</state>"));
}

TEST_F(WirtServiceTest, RequestsWrittenWhileTheDaemonWasDownAreTakenAtStart) {
  As(alice_, "mkdir -p virsh/dom-old && touch virsh/dom-old/start");
  StartService();
  ASSERT_TRUE(WaitFor([&] { return backend_.Running() == 1; }));
  ASSERT_TRUE(Idle());
  // The older layout's answers are where that tool put them.
  auto history = History(alice_, "virsh/history");
  ASSERT_EQ(history.size(), 1u);
  EXPECT_THAT(history[0], ::testing::EndsWith("-dom-old-start.ok"));
  auto logs = History(alice_, "virsh/log");
  ASSERT_EQ(logs.size(), 1u);
  EXPECT_THAT(logs[0], ::testing::EndsWith("-" + alice_.name + "-dom-old-start.log"));
  EXPECT_TRUE(fs::exists(Info(alice_, "old") / "credentials"));
}

TEST_F(WirtServiceTest, BadRequestsAreRejectedWithTheReasonAndOthersGoOn) {
  StartService();
  As(alice_,
     "mkdir -p wirt/service/vm/a wirt/service/vm/b wirt/service/vm/c "
     "wirt/service/vm/d && "
     "echo '{\"memory\": 512}' > wirt/service/vm/a/config && touch wirt/service/vm/a/start "
     "&& echo --force > wirt/service/vm/b/destroy && "
     "mkfifo wirt/service/vm/c/start && "
     "head -c 5000 /dev/zero > wirt/service/vm/d/autostart && "
     "touch wirt/service/vm/d/reboot");
  // Bob's request is taken while Alice's bad ones are rejected.
  As(bob_, "mkdir -p wirt/service/vm/ok && touch wirt/service/vm/ok/start");
  ASSERT_TRUE(WaitFor([&] { return backend_.Running() == 1; }));
  ASSERT_TRUE(WaitFor([&] { return History(alice_).size() >= 8; }));
  ASSERT_TRUE(Idle());
  EXPECT_EQ(backend_.Calls(Owner(bob_), "ok"), std::vector<std::string>{"create"});
  EXPECT_TRUE(backend_.Calls(Owner(alice_), "a").empty());

  // A start whose config is wrong fails, naming the key.
  EXPECT_THAT(Read(alice_.home / "wirt/logs/vm/a.log"),
              HasSubstr("start: failed: config: unknown key 'memory'"));
  EXPECT_THAT(Read(Info(alice_, "a") / "status.xml"), HasSubstr("<state>failed</state>"));
  EXPECT_THAT(Read(alice_.home / "wirt/logs/vm/b.log"),
              HasSubstr("parameter '--force' is not accepted"));
  EXPECT_THAT(Read(alice_.home / "wirt/logs/vm/c.log"), HasSubstr("not a regular file"));
  EXPECT_THAT(Read(alice_.home / "wirt/logs/vm/d.log"), HasSubstr("5000 bytes"));
  auto history = History(alice_);
  auto count = [&](const std::string& part) {
    return std::count_if(history.begin(), history.end(),
                         [&](const std::string& n) { return n.find(part) != std::string::npos; });
  };
  EXPECT_EQ(count("ERRORFILE-"), 8);  // 4 rejected requests + reboot, each with its .reason
  EXPECT_EQ(count("-a-start.failed"), 2);
  EXPECT_TRUE(fs::exists(alice_.home / "wirt/logs/history" /
                         (*std::find_if(history.begin(), history.end(),
                                        [](const std::string& n) {
                                          return n.find("ERRORFILE-") == 0 &&
                                                 n.find("-b-destroy") != std::string::npos &&
                                                 n.find(".reason") == std::string::npos;
                                        }) +
                          ".reason")));
}

TEST_F(WirtServiceTest, SymlinksPlantedInTheTreeNeverReachRootsFiles) {
  // Root's files that a planted link points at.
  fs::path precious = dir_.path() / "precious";
  fs::create_directory(precious);
  WriteFileAtomic(precious / "file", "root's", 0644);
  StartService();
  As(alice_,
     "mkdir -p wirt/info/vm/web wirt/service/vm/web && "
     "ln -s " +
         (precious / "file").string() +
         " wirt/info/vm/web/status.xml && "
         "ln -s " +
         (precious / "file").string() +
         " wirt/info/vm/web/credentials && "
         "touch wirt/service/vm/web/start");
  ASSERT_TRUE(WaitFor([&] { return backend_.Running() == 1; }));
  ASSERT_TRUE(Idle());
  EXPECT_EQ(ReadFile(precious / "file"), "root's");
  EXPECT_FALSE(fs::is_symlink(Info(alice_, "web") / "status.xml"));
  EXPECT_THAT(Read(Info(alice_, "web") / "credentials"), HasSubstr("the-password"));

  // logs/ and history/ as links to root's folder: the request is not
  // answered there (nor run), and nothing appears in root's folder.
  As(bob_, "mkdir -p wirt/service/vm/x && ln -s " + precious.string() +
               " wirt/logs && touch wirt/service/vm/x/start");
  As(alice_, "mkdir -p virsh/dom-y && ln -s " + precious.string() +
                 " virsh/history && touch virsh/dom-y/start");
  std::this_thread::sleep_for(500ms);
  ASSERT_TRUE(Idle());
  EXPECT_EQ(std::distance(fs::directory_iterator(precious), fs::directory_iterator()), 1);
  EXPECT_EQ(ReadFile(precious / "file"), "root's");
  EXPECT_TRUE(backend_.Calls(Owner(bob_), "x").empty());
  EXPECT_TRUE(backend_.Calls(Owner(alice_), "y").empty());
  EXPECT_TRUE(fs::exists(bob_.home / "wirt/service/vm/x/start"));  // left where it is
}

TEST_F(WirtServiceTest, AnotherMembersRequestInAGroupWritableFolderIsRefused) {
  StartService();
  As(alice_, "mkdir -p wirt/service/vm/web && touch wirt/service/vm/web/start");
  ASSERT_TRUE(WaitFor([&] { return backend_.Running() == 1; }));
  ASSERT_TRUE(Idle());
  // What the older tool's README told users to do; a member drops destroy.
  As(alice_, "chmod 0775 wirt/service/vm/web && chgrp " + users_->group() + " wirt/service/vm/web");
  As(bob_, "touch " + (alice_.home / "wirt/service/vm/web/destroy").string());
  std::this_thread::sleep_for(500ms);
  ASSERT_TRUE(Idle());
  EXPECT_EQ(backend_.Calls(Owner(alice_), "web"), std::vector<std::string>{"create"});
  EXPECT_EQ(backend_.Running(), 1u);
  // Once the folder is Alice's alone again, Bob's file still is not hers.
  As(alice_, "chmod 0755 wirt/service/vm/web");
  std::this_thread::sleep_for(300ms);
  ASSERT_TRUE(Idle());
  EXPECT_EQ(backend_.Running(), 1u);
  EXPECT_THAT(Read(alice_.home / "wirt/logs/vm/web.log"), HasSubstr("belongs to uid"));
}

TEST_F(WirtServiceTest, AMemberWhoLeftTheGroupIsNoLongerServed) {
  StartService();
  As(bob_, "mkdir -p wirt/service/vm/web && touch wirt/service/vm/web/start");
  ASSERT_TRUE(WaitFor([&] { return backend_.Running() == 1; }));
  users_->RemoveFromGroup(bob_);
  std::this_thread::sleep_for(300ms);  // /etc/group is rewritten: the watcher rereads it
  As(bob_, "touch wirt/service/vm/web/destroy");
  std::this_thread::sleep_for(700ms);
  ASSERT_TRUE(Idle());
  EXPECT_EQ(backend_.Calls(Owner(bob_), "web"), std::vector<std::string>{"create"});
  EXPECT_TRUE(fs::exists(bob_.home / "wirt/service/vm/web/destroy"));
}

TEST_F(WirtServiceTest, AutostartKeepsOneInstanceRunning) {
  StartService();
  As(alice_, "mkdir -p wirt/service/vm/web && touch wirt/service/vm/web/autostart");
  ASSERT_TRUE(WaitFor([&] { return backend_.Running() == 1; }));
  ASSERT_TRUE(Idle());
  EXPECT_THAT(Read(Info(alice_, "web") / "status.xml"), HasSubstr("<autostart>yes</autostart>"));
  backend_.EndInstance(Owner(alice_), "web");  // the guest powered off
  ASSERT_TRUE(WaitFor([&] { return backend_.Calls(Owner(alice_), "web").size() == 2; }));
  ASSERT_TRUE(Idle());
  EXPECT_EQ(backend_.Running(), 1u);
  EXPECT_THAT(Read(alice_.home / "wirt/logs/vm/web.log"),
              HasSubstr("autostart (the instance ended): ok"));

  // A restarted daemon adopts the instance instead of making another.
  service_->Stop();
  StartService();
  ASSERT_TRUE(Idle());
  EXPECT_EQ(backend_.Calls(Owner(alice_), "web").size(), 2u);
  // With the instance gone while the daemon was down, the next start makes one.
  service_->Stop();
  backend_.service = nullptr;
  backend_.EndInstance(Owner(alice_), "web");
  StartService();
  ASSERT_TRUE(WaitFor([&] { return backend_.Running() == 1; }));

  As(alice_, "echo --disable > wirt/service/vm/web/autostart");
  ASSERT_TRUE(WaitFor([&] { return History(alice_).size() == 2; }));
  ASSERT_TRUE(Idle());
  backend_.EndInstance(Owner(alice_), "web");
  std::this_thread::sleep_for(300ms);
  ASSERT_TRUE(Idle());
  EXPECT_EQ(backend_.Running(), 0u);
  EXPECT_THAT(Read(Info(alice_, "web") / "status.xml"), HasSubstr("<autostart>no</autostart>"));
}

TEST_F(WirtServiceTest, AutostartBacksOffFromAnInstanceThatKeepsDyingAndGivesUp) {
  short_life_ = 3600s;  // every instance here dies young
  StartService();
  As(alice_, "mkdir -p wirt/service/vm/web && touch wirt/service/vm/web/autostart");
  ASSERT_TRUE(WaitFor([&] { return backend_.Running() == 1; }));
  for (std::size_t boots = 1; boots <= 3; ++boots) {
    ASSERT_TRUE(WaitFor([&] { return backend_.Running() == 1; })) << boots;
    const auto ended = std::chrono::steady_clock::now();
    backend_.EndInstance(Owner(alice_), "web");
    if (boots == 3) break;
    ASSERT_TRUE(WaitFor([&] { return backend_.Calls(Owner(alice_), "web").size() == boots + 1; }));
    // Not at once: after the backoff (100 ms, then 200 ms).
    EXPECT_GE(std::chrono::steady_clock::now() - ended, 100ms * boots);
  }
  ASSERT_TRUE(WaitFor([&] {
    return Read(Info(alice_, "web") / "status.xml").find("autostart gave up") != std::string::npos;
  }));
  std::this_thread::sleep_for(500ms);
  EXPECT_EQ(backend_.Calls(Owner(alice_), "web").size(), 3u);
  EXPECT_THAT(Read(Info(alice_, "web") / "status.xml"), HasSubstr("<state>failed</state>"));
  // A start of the user's own is a fresh attempt.
  As(alice_, "touch wirt/service/vm/web/start");
  ASSERT_TRUE(WaitFor([&] { return backend_.Running() == 1; }));
}

TEST_F(WirtServiceTest, ABurstFromTwoUsersIsProcessedInOrderPerVm) {
  StartService();
  // 2 users x 5 VMs x 5 actions, each VM's actions in its own order.
  const std::vector<std::string> actions = {"start", "stop", "autostart", "destroy", "shutdown"};
  std::mt19937 random(42);
  std::map<std::string, std::vector<std::string>> order;  // owner/vm -> actions as written
  std::string alice_script = "set -e; mkdir -p wirt/service/vm", bob_script = alice_script;
  for (const TestUser* u : {&alice_, &bob_}) {
    std::string& script = u == &alice_ ? alice_script : bob_script;
    for (int vm = 0; vm < 5; ++vm) {
      const std::string name = "vm" + std::to_string(vm);
      script += "; mkdir -p wirt/service/vm/" + name;
    }
    for (int vm = 0; vm < 5; ++vm) {
      const std::string name = "vm" + std::to_string(vm);
      auto mine = actions;
      std::shuffle(mine.begin(), mine.end(), random);
      order[Owner(*u) + "/" + name] = mine;
    }
    // Interleaved across VMs, one file at a time, as scripts write them.
    for (int step = 0; step < 5; ++step) {
      for (int vm = 0; vm < 5; ++vm) {
        const std::string name = "vm" + std::to_string(vm);
        script += "; touch wirt/service/vm/" + name + "/" + order[Owner(*u) + "/" + name][step];
      }
    }
  }
  std::thread bob([&] { EXPECT_EQ(users_->RunAs(bob_, bob_script), 0); });
  As(alice_, alice_script);
  bob.join();
  ASSERT_TRUE(WaitFor([&] { return History(alice_).size() + History(bob_).size() == 50; }, 30s));
  ASSERT_TRUE(Idle());
  for (const TestUser* u : {&alice_, &bob_}) {
    for (int vm = 0; vm < 5; ++vm) {
      const std::string name = "vm" + std::to_string(vm);
      // What the engine must have been asked, replaying the order written.
      std::vector<std::string> expected;
      bool running = false;
      for (const std::string& a : order[Owner(*u) + "/" + name]) {
        if ((a == "start" || a == "autostart") && !running) {
          expected.push_back("create");
          running = true;
        } else if ((a == "stop" || a == "shutdown" || a == "destroy") && running) {
          expected.push_back(a == "destroy" ? "destroy" : "shutdown");
          running = false;
        }
      }
      EXPECT_EQ(backend_.Calls(Owner(*u), name), expected) << u->name << " " << name;
    }
    for (const std::string& h : History(*u)) EXPECT_THAT(h, ::testing::EndsWith(".ok"));
  }
}

}  // namespace
}  // namespace ephemera::wirt
