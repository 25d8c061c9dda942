// Fast starts end to end. Pause and resume: a real guest's memory and
// disk saved to a file and its QEMU ended, then restored where it stopped,
// with the same credentials, address and clock; across a daemon restart;
// a pause without room leaves the sandbox running. The warm pool: a
// create handed a provisioned sandbox that logs in, the pool refilled,
// rebuilt (never reused) after a crash, and gone with the daemon.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "core/fs.h"
#include "core/subprocess.h"
#include "e2e/daemon_fixture.h"
#include "e2e/http_client.h"
#include "guest/ssh_session.h"

namespace ephemera {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using nlohmann::json;
using ::testing::HasSubstr;

std::string RunInGuest(const json& s, const std::string& command) {
  SshSession client(s["host"], s["port"].get<std::uint16_t>(), s["username"], 60s);
  EXPECT_TRUE(client.AuthenticateWithPassword(s["password"]));
  EXPECT_EQ(client.HostKeyLine(), s["host_key"].get<std::string>());
  CommandResult r = client.Execute(command, 60s);
  EXPECT_EQ(r.exit_status, 0) << command << ": " << r.err;
  return r.out;
}

class PauseTest : public test::DaemonTest {
 protected:
  fs::path VmDir(const std::string& id) const { return state_.path() / "state" / "vms" / id; }
  json Show(const std::string& id) { return json::parse(Output(Cli({"show", id, "--json"}))); }
};

TEST_F(PauseTest, APausedSandboxKeepsItsMemoryDiskAndCredentialsAndLeavesNothing) {
  json s = Create();
  const std::string id = s["id"];
  RunInGuest(s, "echo in-memory >/dev/shm/mark && echo on-disk >~/mark && sync");
  // The agent's port is there, and the client's user cannot open it.
  EXPECT_THAT(RunInGuest(s,
                         "for d in /dev/vport*; do echo $d; if [ -r $d ] || [ -w $d ]; then "
                         "echo open-to-the-user; fi; done"),
              ::testing::AllOf(HasSubstr("/dev/vport"), ::testing::Not(HasSubstr("open-to"))));
  const pid_t qemu = QemuPid(id);

  Output(Cli({"pause", id}));
  // The QEMU is gone (its memory free); the state is on disk.
  EXPECT_NE(::kill(qemu, 0), 0);
  EXPECT_TRUE(fs::exists(VmDir(id) / "saved-state"));
  EXPECT_FALSE(fs::exists(VmDir(id) / "saved-state.part"));
  json paused = Show(id);
  EXPECT_EQ(paused["state"], "paused");
  EXPECT_EQ(paused["running"], false);
  EXPECT_GT(paused["ttl_left_seconds"].get<std::int64_t>(), 500);  // of the default 600
  std::this_thread::sleep_for(3s);  // a gap the guest's clock must not keep

  Output(Cli({"resume", id}));
  EXPECT_FALSE(fs::exists(VmDir(id) / "saved-state"));
  json resumed = Show(id);
  EXPECT_EQ(resumed["state"], "ready");
  EXPECT_FALSE(resumed.contains("paused_at"));
  // The same machine: its memory and disk, reached with the same
  // credentials and host key on the same port.
  // The guest's clock reads the host's time between the command's start
  // and its end (a login under TCG can take seconds): not the time it had
  // when it was paused, 3 s and more before.
  const std::time_t before = std::time(nullptr);
  const std::string out = RunInGuest(s, "cat /dev/shm/mark ~/mark && date +%s");
  const std::time_t after = std::time(nullptr);
  EXPECT_THAT(out, HasSubstr("in-memory\non-disk\n"));
  const long guest_now = std::stol(out.substr(out.rfind("on-disk\n") + 8));
  EXPECT_GE(guest_now, before - 1) << "the guest's clock was not set after the resume";
  EXPECT_LE(guest_now, after + 1);
  EXPECT_THAT(DaemonLog(), ::testing::Not(HasSubstr("its clock lags")));
  EXPECT_NE(QemuPid(id), qemu);

  Output(Cli({"destroy", id}));
  ExpectNothingLeft();
}

TEST_F(PauseTest, APausedSandboxOutlivesADaemonCrashAndResumes) {
  json s = Create();
  const std::string id = s["id"];
  RunInGuest(s, "echo before-the-crash >/dev/shm/mark");
  Output(Cli({"pause", id}));
  StopDaemon(SIGKILL);
  StartDaemon();
  EXPECT_THAT(DaemonLog(), HasSubstr("adopted sandbox " + id));
  EXPECT_EQ(Show(id)["state"], "paused");
  Output(Cli({"resume", id}));
  EXPECT_EQ(RunInGuest(s, "cat /dev/shm/mark"), "before-the-crash\n");
  Output(Cli({"destroy", id}));
  ExpectNothingLeft();
}

TEST_F(PauseTest, OnlyAReadySandboxPausesAndOnlyAPausedOneResumes) {
  json s = Create();
  const std::string id = s["id"];
  ProcessResult resume = RunProcess(Cli({"resume", id}), 60s);
  EXPECT_FALSE(resume.ok());
  EXPECT_THAT(resume.err, HasSubstr("not paused"));
  Output(Cli({"pause", id}));
  ProcessResult again = RunProcess(Cli({"pause", id}), 60s);
  EXPECT_FALSE(again.ok());
  EXPECT_THAT(again.err, HasSubstr("only a ready one can be paused"));
  // A paused sandbox is destroyed like any other, its saved state with it.
  Output(Cli({"destroy", id}));
  ExpectNothingLeft();
}

// The state folder on a small tmpfs, nearly full when the pause comes.
class PauseFullDiskTest : public PauseTest {
 protected:
  void SetUp() override {
    MountStateTmpfs("200m");
    DaemonTest::SetUp();
  }
  void TearDown() override {
    DaemonTest::TearDown();
    UnmountStateTmpfs();
  }
  std::string ExtraConfig() const override { return "limits: {min_free_disk_mib: 8}\n"; }
};

TEST_F(PauseFullDiskTest, APauseWithoutRoomIsRefusedAndTheSandboxRunsOn) {
  json s = Create();
  const std::string id = s["id"];
  RunInGuest(s, "echo still-here >/dev/shm/mark");
  // Leave ~16 MiB: far less than the guest's state.
  const fs::path filler = state_.path() / "state" / "filler";
  {
    std::ofstream out(filler, std::ios::binary);
    std::string mib(1 << 20, 'x');
    while ((fs::space(state_.path() / "state").available >> 20) > 16 &&
           out.write(mib.data(), mib.size())) {
      out.flush();
    }
  }
  test::CurlResult refused = test::Curl({"--unix-socket", socket_.string(), "-X", "POST",
                                         "http://localhost/v1/sandboxes/" + id + "/pause"});
  // Refused before anything stops: the state would need the guest's memory.
  EXPECT_EQ(refused.status, 507) << refused.body;
  EXPECT_THAT(refused.body, HasSubstr("MiB free where sandboxes live"));
  EXPECT_FALSE(fs::exists(VmDir(id) / "saved-state.part"));
  EXPECT_FALSE(fs::exists(VmDir(id) / "saved-state"));
  EXPECT_EQ(Show(id)["state"], "ready");
  EXPECT_EQ(RunInGuest(s, "cat /dev/shm/mark"), "still-here\n");  // it runs on, as it was
  fs::remove(filler);
  Output(Cli({"destroy", id}));
  ExpectNothingLeft();
}

class PoolTest : public PauseTest {
 protected:
  std::string ExtraConfig() const override {
    return "pool: [{image: default, memory_mib: 256, vcpus: 1, size: 1}]\n";
  }
  json Pool() {
    json status = json::parse(Output(Cli({"status", "--json"})));
    return status["pools"].at(0);
  }
  void WaitForReady(std::size_t ready) {
    auto deadline = std::chrono::steady_clock::now() + 180s;
    while (Pool()["ready"] != ready) {
      ASSERT_LT(std::chrono::steady_clock::now(), deadline) << DaemonLog();
      std::this_thread::sleep_for(200ms);
    }
  }
  std::set<std::string> VmDirs() const {
    std::set<std::string> names;
    for (const auto& e : fs::directory_iterator(state_.path() / "state" / "vms")) {
      names.insert(e.path().filename().string());
    }
    return names;
  }
};

TEST_F(PoolTest, ACreateTakesAProvisionedMemberThatLogsInAndThePoolRefills) {
  WaitForReady(1);
  EXPECT_TRUE(List().empty());  // a member is nobody's until handed out
  const std::set<std::string> before = VmDirs();
  ASSERT_EQ(before.size(), 1u);

  json s = Create();
  EXPECT_EQ(s["id"], *before.begin());  // the member itself
  EXPECT_EQ(Pool()["hits"], 1);
  EXPECT_EQ(RunInGuest(s, "id -un"), s["username"].get<std::string>() + "\n");
  WaitForReady(1);  // refilled in the background
  EXPECT_EQ(VmDirs().size(), 2u);

  // A crash: the member's password died with the daemon, so the restarted
  // one destroys it and makes another; the handed-out sandbox stays.
  const std::set<std::string> with_member = VmDirs();
  StopDaemon(SIGKILL);
  StartDaemon();
  EXPECT_THAT(DaemonLog(), HasSubstr("warm pool member of the previous daemon"));
  WaitForReady(1);
  std::set<std::string> now = VmDirs();
  EXPECT_EQ(now.size(), 2u);
  for (const auto& name : with_member) {
    if (name != s["id"]) {
      EXPECT_EQ(now.count(name), 0u) << "a member was reused after a crash";
    }
  }
  EXPECT_EQ(RunInGuest(s, "id -un"), s["username"].get<std::string>() + "\n");

  Output(Cli({"destroy", s["id"]}));
  // The daemon takes its pool with it.
  StopDaemon(SIGTERM);
  EXPECT_TRUE(fs::is_empty(state_.path() / "state" / "vms"));
  EXPECT_TRUE(fs::is_empty(state_.path() / "state" / "net"));
  EXPECT_TRUE(RunProcess({"pgrep", "-f", "qemu-system.* -name ephemera-"}).out.empty());
  EXPECT_THAT(Output({"ip", "-o", "link", "show"}), ::testing::Not(HasSubstr("eph")));
}

}  // namespace
}  // namespace ephemera
