// Container sandboxes end to end, with the real daemon, crun, cgroups,
// nftables and the image's own sshd, inside the test's private network
// namespace: create → log in with the returned credentials → from inside,
// the uid map, hostname, capabilities, seccomp, masked paths, the pid
// namespace and the limits are checked → destroy → nothing left. Then a VM
// and a container that cannot reach each other, the reaper and reconcile,
// and 100 create/destroy cycles that leave nothing behind.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "core/cgroup.h"
#include "core/fs.h"
#include "core/subprocess.h"
#include "core/unique_fd.h"
#include "e2e/daemon_fixture.h"
#include "guest/ssh_session.h"

namespace ephemera {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using nlohmann::json;
using test::CurlResult;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr unsigned kUidBase = 1500000000;

class ContainerTest : public test::DaemonTest {
 protected:
  void SetUp() override {
    // The runtime reaches the rootfs as the container's root (CheckSearchable).
    fs::permissions(state_.path(), fs::perms::others_exec, fs::perm_options::add);
    DaemonTest::SetUp();
  }
  std::string ExtraConfig() const override {
    return "container: {uid_base: " + std::to_string(kUidBase) +
           ", max_pids: 64, disk_mib: 256}\nlimits: {max_sandboxes: 8}\n";
  }

  json CreateContainer() { return Create({"--kind", "container", "--memory", "128"}); }

  // A session as the client, with exactly the credentials the API returned.
  std::unique_ptr<SshSession> Login(const json& s) {
    auto session =
        std::make_unique<SshSession>(s["host"], s["port"].get<std::uint16_t>(), s["username"], 30s);
    EXPECT_EQ(session->HostKeyFingerprint(), s["host_key_fingerprint"]);
    EXPECT_TRUE(session->AuthenticateWithPassword(s["password"]));
    return session;
  }

  // Runs `command` as root inside (sudo with the client's password).
  CommandResult AsRoot(SshSession& session, const json& s, const std::string& command) {
    return session.Execute(
        "echo '" + s["password"].get<std::string>() + "' | sudo -S -p '' sh -c '" + command + "'",
        60s);
  }

  std::string CgroupFile(const json& s, const std::string& controller, const std::string& file) {
    Cgroups cgroups = Cgroups::Discover(Cgroups::SubtreeFor(state_.path() / "state"));
    for (const fs::path& base : cgroups.bases()) {
      const fs::path path = base / ("ct-" + s["id"].get<std::string>()) / file;
      if (base.string().find(controller) != std::string::npos || cgroups.unified()) {
        if (fs::exists(path)) return ReadFile(path);
      }
    }
    return "";
  }
};

// CapEff's bits, from /proc/PID/status.
std::uint64_t EffectiveCaps(const std::string& status) {
  auto at = status.find("CapEff:");
  EXPECT_NE(at, std::string::npos) << status;
  return std::stoull(status.substr(at + 7), nullptr, 16);
}

TEST_F(ContainerTest, CreateLoginIsolationLimitsDestroyLeavesNothing) {
  json s = CreateContainer();
  EXPECT_EQ(s["state"], "ready");
  EXPECT_EQ(s["kind"], "container");
  auto session = Login(s);
  EXPECT_EQ(session->Execute("id -un", 30s).out, s["username"].get<std::string>() + "\n");

  // The user namespace: root inside is an unprivileged host uid of its range.
  std::string uid_map = session->Execute("cat /proc/self/uid_map", 30s).out;
  EXPECT_THAT(uid_map, ::testing::MatchesRegex("\\s*0\\s+15[0-9]+\\s+65536\\s*"));
  const std::uint64_t host_root = std::stoull(uid_map.substr(uid_map.find_first_not_of(" 0")));
  EXPECT_GE(host_root, kUidBase);
  EXPECT_EQ((host_root - kUidBase) % 65536, 0u);
  // Its own hostname, pid namespace (sshd is PID 1; no host process shows).
  EXPECT_EQ(session->Execute("hostname", 30s).out,
            "sandbox-" + s["id"].get<std::string>().substr(0, 8) + "\n");
  EXPECT_EQ(session->Execute("cat /proc/1/comm", 30s).out, "sshd\n");
  const int processes = std::stoi(session->Execute("ls /proc | grep -c '^[0-9]'", 30s).out);
  EXPECT_LT(processes, 20);
  EXPECT_THAT(session->Execute("ps -o comm", 30s).out, Not(HasSubstr("ephemerad")));

  // Root inside has only the default capabilities.
  CommandResult status = AsRoot(*session, s, "cat /proc/self/status");
  ASSERT_EQ(status.exit_status, 0) << status.err;
  const std::uint64_t caps = EffectiveCaps(status.out);
  EXPECT_NE(caps & (1ull << 7), 0u);  // CAP_SETUID: sudo worked
  for (int cap : {21 /* SYS_ADMIN */, 12 /* NET_ADMIN */, 16 /* SYS_MODULE */, 19 /* SYS_PTRACE */,
                  13 /* NET_RAW */}) {
    EXPECT_EQ(caps & (1ull << cap), 0u) << "capability " << cap;
  }
  EXPECT_THAT(status.out, ::testing::ContainsRegex("Seccomp:\\s+2"));
  // Denied by seccomp (a new user namespace) and by capabilities.
  CommandResult unshare = AsRoot(*session, s, "unshare -U true");
  EXPECT_NE(unshare.exit_status, 0);
  EXPECT_THAT(unshare.err, HasSubstr("Operation not permitted"));
  CommandResult mount = AsRoot(*session, s, "mount -t tmpfs none /mnt");
  EXPECT_NE(mount.exit_status, 0);
  EXPECT_THAT(AsRoot(*session, s, "cat /proc/mounts").out, Not(HasSubstr("none /mnt")));
  CommandResult insmod =
      AsRoot(*session, s, "insmod $(find /lib/modules -name \"*.ko\" | head -1)");
  EXPECT_NE(insmod.exit_status, 0);
  CommandResult raw =
      AsRoot(*session, s, "traceroute -n -m 1 -w 1 " + s["guest_ip"].get<std::string>());
  EXPECT_NE(raw.exit_status, 0);
  EXPECT_THAT(raw.err, HasSubstr("not permitted"));
  // Masked (or, on a kernel without it, absent): not one byte.
  EXPECT_EQ(AsRoot(*session, s, "head -c 16 /proc/kcore 2>/dev/null | wc -c").out, "0\n");
  EXPECT_EQ(AsRoot(*session, s, "ls /sys/firmware/qemu_fw_cfg/by_name/opt/ephemera | wc -l").out,
            "2\n");  // the guest files, and none of the host's firmware

  // Limits: the memory hog is killed inside, the container lives on.
  CommandResult hog = AsRoot(*session, s, "head -c 300m /dev/zero | tail > /dev/null; echo $?");
  EXPECT_EQ(hog.out, "137\n") << hog.err;  // SIGKILL
  EXPECT_EQ(session->Execute("echo alive", 30s).out, "alive\n");
  const std::string oom =
      CgroupFile(s, "memory", "memory.oom_control") + CgroupFile(s, "memory", "memory.events");
  EXPECT_THAT(oom, ::testing::ContainsRegex("oom_kill [1-9]"));
  // A fork bomb stays inside its pids limit (the sleeps end by themselves:
  // while they run, nothing more can start inside).
  CommandResult bomb = AsRoot(
      *session, s, "for i in $(seq 100); do sleep 4 >/dev/null 2>&1 & done 2>&1 | grep -m1 fork");
  EXPECT_THAT(bomb.out, HasSubstr("fork"));
  const std::string pids = CgroupFile(s, "pids", "pids.current");
  ASSERT_FALSE(pids.empty());
  EXPECT_GE(std::stoi(pids), 50);
  EXPECT_LE(std::stoi(pids), 64);
  std::this_thread::sleep_for(5s);
  EXPECT_EQ(session->Execute("echo alive", 30s).out, "alive\n");
  // Its output cannot fill the host's disk: the console log is bounded
  // (vm.console_log_kib, 1 MiB for a log and its predecessor).
  CommandResult flood = AsRoot(*session, s, "head -c 3000000 /dev/zero > /proc/1/fd/2; echo $?");
  EXPECT_EQ(flood.out, "0\n") << flood.err;
  std::this_thread::sleep_for(500ms);
  const fs::path console =
      state_.path() / "state" / "containers" / s["id"].get<std::string>() / "console.log";
  std::uintmax_t kept = fs::file_size(console);
  if (fs::exists(console.string() + ".1")) kept += fs::file_size(console.string() + ".1");
  EXPECT_GT(kept, 100000u);
  EXPECT_LE(kept, 1u << 20);
  session.reset();
  EXPECT_THAT(DaemonLog(), HasSubstr("out of memory"));

  Output(Cli({"destroy", s["id"]}));
  ExpectNothingLeft();
}

TEST_F(ContainerTest, ProgramsAndFilesGoThroughTheRuntimeInsideTheContainer) {
  // Room for a 200 MiB file in its writable layer, which its memory pays for.
  json s = Create({"--kind", "container", "--memory", "384"});
  const std::string id = s["id"];
  const std::string user = s["username"];

  ExpectExecsBehaveAsDockerExec(id, user);
  // In the container's namespaces: its user namespace, its hostname.
  ExecResult e = Exec(id, {{"argv", {"sh", "-c", "cat /proc/self/uid_map; hostname"}}});
  EXPECT_THAT(e.out, ::testing::MatchesRegex("\\s*0\\s+15[0-9]+\\s+65536\\s*\nsandbox-" +
                                             id.substr(0, 8) + "\n"));
  // A user's exec holds no capabilities; root's holds the container's.
  EXPECT_THAT(Exec(id, {{"argv", {"grep", "CapEff", "/proc/self/status"}}}).out,
              HasSubstr("0000000000000000"));
  EXPECT_THAT(Exec(id, {{"argv", {"grep", "CapEff", "/proc/self/status"}}, {"user", "root"}}).out,
              Not(HasSubstr("0000000000000000")));

  // In its cgroup, under its limits: a running exec counts there.
  Cgroups cgroups = Cgroups::Discover(Cgroups::SubtreeFor(state_.path() / "state"));
  const std::size_t idle = cgroups.Pids("ct-" + id).size();
  std::thread sleeper([&] { Exec(id, {{"argv", {"sleep", "3"}}}); });
  bool counted = false;
  for (int i = 0; i < 100 && !counted; ++i, std::this_thread::sleep_for(20ms)) {
    counted = cgroups.Pids("ct-" + id).size() > idle;
  }
  sleeper.join();
  EXPECT_TRUE(counted) << "the exec did not run in the container's cgroup";

  // A process ended by a signal: the runtime passes 128 + its number on.
  e = Exec(id, {{"argv", {"sh", "-c", "kill -TERM $$"}}});
  EXPECT_EQ(e.exit, json({{"code", 143}, {"timed_out", false}}));

  ExpectLargeOutputStreamsInBoundedMemory(id);
  ExpectAFileRoundTrip(id, 200, "root");
  // Owned by the client by default.
  const fs::path here = state_.path();
  WriteFileAtomic(here / "mine.txt", "mine\n", 0644);
  ProcessResult r =
      RunProcess(Cli({"cp", (here / "mine.txt").string(), id + ":/tmp/mine.txt"}), 60s);
  ASSERT_TRUE(r.ok()) << r.err;
  EXPECT_EQ(Exec(id, {{"argv", {"stat", "-c", "%U", "/tmp/mine.txt"}}}).out, user + "\n");

  // Paths resolve inside the container: its links and "..", never the host's.
  const std::string marker = "ephemera-container-test-" + id;
  Exec(id, {{"argv", {"ln", "-s", "/", "/tmp/top"}}});
  CurlResult put = Api("PUT", "/v1/sandboxes/" + id + "/files?path=/tmp/top/../../tmp/" + marker,
                       {"--data-binary", "inside"});
  EXPECT_EQ(put.status, 200) << put.body;
  EXPECT_EQ(Exec(id, {{"argv", {"cat", "/tmp/" + marker}}}).out, "inside");
  EXPECT_FALSE(fs::exists("/tmp/" + marker)) << "written on the host";
  Exec(id, {{"argv", {"ln", "-s", "/etc/passwd", "/tmp/users"}}});
  CurlResult got = Api("GET", "/v1/sandboxes/" + id + "/files?path=/tmp/top/tmp/users");
  EXPECT_EQ(got.status, 200);
  EXPECT_EQ(got.body, Exec(id, {{"argv", {"cat", "/etc/passwd"}}}).out);
  EXPECT_THAT(got.body, HasSubstr(user + ":"));  // the container's file, not the host's
  got = Api("GET", "/v1/sandboxes/" + id + "/files?path=/tmp/no-such-file");
  EXPECT_EQ(got.status, 404);
  // Not the kernel's files: the daemon would read them as the host's root.
  for (const char* kernel : {"/proc/kallsyms", "/sys/kernel/notes", "/tmp/top/proc/1/status"}) {
    got = Api("GET", "/v1/sandboxes/" + id + "/files?path=" + kernel);
    EXPECT_EQ(got.status, 409) << kernel;
    EXPECT_THAT(got.body, HasSubstr("kernel's own file systems")) << kernel;
  }

  // Folders travel as tar, packed and unpacked by the container's tar.
  r = RunProcess(Cli({"cp", id + ":/etc/ssh", (here / "ssh.tar").string()}), 60s);
  ASSERT_TRUE(r.ok()) << r.err;
  EXPECT_THAT(RunChecked({"tar", "-t", "-f", (here / "ssh.tar").string()}).out,
              HasSubstr("./sshd_config"));
  fs::create_directories(here / "tree" / "sub");
  WriteFileAtomic(here / "tree" / "sub" / "file.txt", "in a tar", 0644);
  RunChecked(
      {"tar", "-c", "-f", (here / "tree.tar").string(), "-C", (here / "tree").string(), "."});
  r = RunProcess(Cli({"cp", "--tar", (here / "tree.tar").string(), id + ":/tmp/unpacked"}), 60s);
  ASSERT_TRUE(r.ok()) << r.err;
  EXPECT_EQ(Exec(id, {{"argv", {"cat", "/tmp/unpacked/sub/file.txt"}}}).out, "in a tar");

  Output(Cli({"destroy", id}));
  ExpectNothingLeft();
}

TEST_F(ContainerTest, AVmAndAContainerCannotReachEachOther) {
  json vm = Create();
  json ct = CreateContainer();
  const std::string vm_ip = vm["guest_ip"], ct_ip = ct["guest_ip"];
  auto reach = [](const std::string& ip, int port) {
    return "timeout 5 bash -c 'echo > /dev/tcp/" + ip + "/" + std::to_string(port) +
           "' && echo reached || echo blocked";
  };
  auto container = Login(ct);
  auto machine = Login(vm);
  // Each reaches its own sshd, never the other's nor the host's forwarder.
  EXPECT_EQ(container->Execute(reach(ct_ip, 22), 30s).out, "reached\n");
  EXPECT_EQ(container->Execute(reach(vm_ip, 22), 30s).out, "blocked\n");
  EXPECT_EQ(machine->Execute(reach(ct_ip, 22), 30s).out, "blocked\n");
  // Nor a service of the host's, on any of its addresses, though the host
  // itself reaches it there.
  UniqueFd listener(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in any{};
  any.sin_family = AF_INET;
  any.sin_port = htons(18022);
  ASSERT_EQ(::bind(listener.get(), reinterpret_cast<sockaddr*>(&any), sizeof any), 0);
  ASSERT_EQ(::listen(listener.get(), 16), 0);
  auto gateway_of = [](const std::string& ip) {
    return ip.substr(0, ip.rfind('.')) + "." +
           std::to_string(std::stoi(ip.substr(ip.rfind('.') + 1)) - 1);
  };
  for (const std::string& gateway : {gateway_of(ct_ip), gateway_of(vm_ip)}) {
    EXPECT_TRUE(RunProcess({"bash", "-c", reach(gateway, 18022)}).out == "reached\n") << gateway;
    EXPECT_EQ(container->Execute(reach(gateway, 18022), 30s).out, "blocked\n") << gateway;
  }
  container.reset();
  machine.reset();
  Output(Cli({"destroy", ct["id"]}));
  Output(Cli({"destroy", vm["id"]}));
  ExpectNothingLeft();
}

TEST_F(ContainerTest, AnInitThatExitsIsReapedAndAKilledDaemonReconciles) {
  json kept = CreateContainer();
  json ended = CreateContainer();
  // The daemon dies; the containers run on and are adopted at its restart.
  StopDaemon(SIGKILL);
  StartDaemon();
  EXPECT_THAT(DaemonLog(), HasSubstr("adopted sandbox " + kept["id"].get<std::string>()));
  EXPECT_EQ(Output(Cli({"ssh", kept["id"], "--", "id", "-un"})),
            kept["username"].get<std::string>() + "\n");
  // A container whose init ends is reaped and destroyed within a second
  // (its pidfd wakes the reaper; a listing costs the rest).
  const std::string pid_file = (state_.path() / "state" / "containers" /
                                ended["id"].get<std::string>() / "bundle" / "init.pid")
                                   .string();
  ::kill(std::stoi(ReadFile(pid_file)), SIGKILL);
  auto deadline = std::chrono::steady_clock::now() + 1500ms;
  while (List().size() != 1) {
    ASSERT_LT(std::chrono::steady_clock::now(), deadline) << DaemonLog();
    std::this_thread::sleep_for(100ms);
  }
  Output(Cli({"destroy", kept["id"]}));
  ExpectNothingLeft();
}

TEST_F(ContainerTest, AHundredCyclesLeaveNoMountCgroupVethOrUidRange) {
  std::vector<std::string> ids;
  for (int i = 0; i < 100; ++i) {
    json s = CreateContainer();
    ASSERT_EQ(s["state"], "ready") << "cycle " << i;
    ids.push_back(s["id"]);
    ProcessResult destroyed = RunProcess(Cli({"destroy", s["id"]}), 60s);
    ASSERT_TRUE(destroyed.ok()) << "cycle " << i << ": " << destroyed.err;
  }
  ExpectNothingLeft();
  // The only mount left is the image's read-only one, kept for the next.
  int image_mounts = 0;
  std::ifstream mountinfo("/proc/self/mountinfo");
  for (std::string line; std::getline(mountinfo, line);) {
    if (line.find((state_.path() / "state").string()) == std::string::npos) continue;
    EXPECT_THAT(line, HasSubstr("/containers/.images/"));
    ++image_mounts;
  }
  EXPECT_EQ(image_mounts, 1);
  // No cgroup of theirs anywhere (not only under the daemon's subtree: a
  // runtime left to itself makes its own at a hierarchy's root).
  const std::string cgroups =
      Output({"find", "/sys/fs/cgroup", "-maxdepth", "5", "-type", "d", "-name", "*-*-*-*-*"});
  for (const std::string& id : ids) EXPECT_THAT(cgroups, Not(HasSubstr(id)));
  EXPECT_THAT(Output(Cli({"status", "--json"})), HasSubstr("\"sandboxes\""));
}

}  // namespace
}  // namespace ephemera
