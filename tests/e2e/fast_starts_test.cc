// Fast starts end to end. Pause and resume: a real guest's memory and
// disk saved to a file and its QEMU ended, then restored where it stopped,
// with the same credentials, address and clock; across a daemon restart;
// a pause without room leaves the sandbox running. The warm pool: a
// create handed a provisioned sandbox that logs in, the pool refilled,
// rebuilt (never reused) after a crash, and gone with the daemon.
// Snapshots: clones restored from one template log in, differ in all an
// attacker could use, pause and resume; a corrupted template boots cold.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
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

class SnapshotTest : public PauseTest {
 protected:
  std::string VmConfig() const override { return ", snapshots: true"; }
  json Snapshot() {
    json status = json::parse(Output(Cli({"status", "--json"})));
    return status["snapshots"].at(0);
  }
  void WaitForSnapshot() {
    auto deadline = std::chrono::steady_clock::now() + 180s;
    while (Snapshot()["state"] != "ready") {
      ASSERT_NE(Snapshot()["state"], "failed") << DaemonLog();
      ASSERT_LT(std::chrono::steady_clock::now(), deadline) << DaemonLog();
      std::this_thread::sleep_for(200ms);
    }
  }
  fs::path SnapshotsDir() const { return state_.path() / "state" / "snapshots"; }
  std::vector<fs::path> Snapshots() const {
    std::vector<fs::path> found;
    for (const auto& e : fs::directory_iterator(SnapshotsDir())) found.push_back(e.path());
    return found;
  }
};

// What a guest says of itself that must be its own: address, MAC, host
// name, kernel RNG output, wall clock.
constexpr char kSelf[] =
    "awk '/32 host/ && f !~ /^127\\./ {print f} {f=$2}' /proc/net/fib_trie | sort -u; "
    "cat /sys/class/net/eth0/address; hostname; head -c 16 /dev/urandom | od -An -tx1; date +%s";

TEST_F(SnapshotTest, ClonesOfOneTemplateLogInShareItsPagesAndNothingAnAttackerCouldUse) {
  json first = Create();
  EXPECT_EQ(first["start"], "boot");  // the first of its kind asks for the template
  WaitForSnapshot();
  ASSERT_EQ(Snapshots().size(), 1u);

  const std::time_t before = std::time(nullptr);
  json a = Create(), b = Create();
  ASSERT_EQ(a["start"], "snapshot") << DaemonLog();
  ASSERT_EQ(b["start"], "snapshot");
  EXPECT_EQ(Snapshot()["restores"], 2);
  EXPECT_NE(a["host_key"], b["host_key"]);
  EXPECT_NE(a["host_key"], first["host_key"]);
  std::vector<std::string> a_says, b_says;
  for (auto [s, says] : {std::pair{&a, &a_says}, std::pair{&b, &b_says}}) {
    std::istringstream lines(RunInGuest(*s, kSelf));
    for (std::string line; std::getline(lines, line);) says->push_back(line);
    ASSERT_EQ(says->size(), 5u);
    EXPECT_EQ((*says)[0], (*s)["guest_ip"]);
    EXPECT_EQ((*says)[1], (*s)["mac"]);
    EXPECT_EQ((*says)[2], "sandbox-" + (*s)["id"].get<std::string>().substr(0, 8));
    EXPECT_GE(std::stoll((*says)[4]), before - 2);  // not the template's clock
    EXPECT_LE(std::stoll((*says)[4]), std::time(nullptr) + 2);
  }
  for (std::size_t i = 0; i < 4; ++i) EXPECT_NE(a_says[i], b_says[i]) << i;
  // Each maps the template's memory (copy-on-write), never writable.
  const std::string maps = ReadFile("/proc/" + std::to_string(QemuPid(a["id"])) + "/maps");
  EXPECT_THAT(maps, ::testing::ContainsRegex("r[w-]-p [^\n]*memfd:ephemera-guest-ram"));
  EXPECT_THAT(maps,
              ::testing::Not(::testing::ContainsRegex("...s [^\n]*memfd:ephemera-guest-ram")));

  // A clone pauses and resumes like any sandbox.
  RunInGuest(a, "echo kept >/dev/shm/mark");
  Output(Cli({"pause", a["id"]}));
  Output(Cli({"resume", a["id"]}));
  EXPECT_EQ(RunInGuest(a, "cat /dev/shm/mark"), "kept\n");

  for (const json* s : {&first, &a, &b}) Output(Cli({"destroy", (*s)["id"]}));
  ExpectNothingLeft();
  EXPECT_EQ(Snapshots().size(), 1u);  // the template, for the next create
  StopDaemon(SIGTERM);
  EXPECT_TRUE(fs::is_empty(SnapshotsDir()));  // its memory went with the daemon
}

TEST_F(SnapshotTest, ACorruptedTemplateBootsColdSayingWhyAndIsMadeAgain) {
  json first = Create();
  WaitForSnapshot();
  ASSERT_EQ(Snapshots().size(), 1u);
  // Cut short, as by a crash or a full disk.
  const fs::path state = Snapshots()[0] / "saved-state";
  fs::resize_file(state, fs::file_size(state) / 2);
  json cold = Create();
  EXPECT_EQ(cold["start"], "boot");
  EXPECT_THAT(DaemonLog(), HasSubstr("booting cold: its snapshot did not restore"));
  EXPECT_EQ(Snapshot()["fallbacks"], 1);
  EXPECT_EQ(RunInGuest(cold, "id -un"), cold["username"].get<std::string>() + "\n");

  WaitForSnapshot();  // made again
  json again = Create();
  EXPECT_EQ(again["start"], "snapshot");
  EXPECT_EQ(RunInGuest(again, "id -un"), again["username"].get<std::string>() + "\n");
  for (const json* s : {&first, &cold, &again}) Output(Cli({"destroy", (*s)["id"]}));
  ExpectNothingLeft();
}

}  // namespace
}  // namespace ephemera
