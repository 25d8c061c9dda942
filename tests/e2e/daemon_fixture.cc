#include "e2e/daemon_fixture.h"

#include <fcntl.h>
#include <gmock/gmock.h>
#include <signal.h>
#include <spawn.h>
#include <sys/mount.h>
#include <sys/wait.h>

#include <thread>

#include <fstream>
#include <sstream>

#include "core/base64.h"
#include "core/cgroup.h"
#include "core/fs.h"
#include "core/subprocess.h"
#include "integration/guest_fixture.h"

extern char** environ;

namespace ephemera::test {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using nlohmann::json;
using ::testing::HasSubstr;
using ::testing::Not;

void DaemonTest::SetUp() {
  socket_ = state_.path() / "api.sock";
  config_ = state_.path() / "config.yaml";
  WriteBytes(config_, "state_dir: " + (state_.path() / "state").string() + "\nimage_dir: " +
                          ImageDirectory().string() + "\nsocket: " + socket_.string() +
                          "\nnetwork: {forward_address: 127.0.0.1" + NetworkConfig() +
                          "}\nvm: {accel: tcg" + VmConfig() + "}\n" + ExtraConfig());
  ::setenv("XDG_CONFIG_HOME", (state_.path() / "client").c_str(), 1);
  StartDaemon();
}

fs::path DaemonTest::ImageDirectory() const { return ImageDir(); }

void DaemonTest::TearDown() {
  // Leave nothing even if the test failed: destroy through the daemon,
  // then stop it.
  if (daemon_ > 0) {
    for (const auto& s : List()) RunProcess(Cli({"destroy", s["id"]}), 60s);
    StopDaemon(SIGTERM);
  }
}

std::vector<std::string> DaemonTest::Cli(std::vector<std::string> args) const {
  args.insert(args.begin(), {EPHEMERA_CLI, "--socket", socket_.string()});
  return args;
}

std::string DaemonTest::Output(const std::vector<std::string>& argv) const {
  ProcessResult r = RunProcess(argv, 120s);
  EXPECT_TRUE(r.ok()) << argv[0] << " failed: " << r.err;
  return r.out;
}

void DaemonTest::StartDaemon() {
  std::vector<std::string> args = {EPHEMERAD, "--config", config_.string()};
  for (auto& a : ExtraArgs()) args.push_back(a);
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  std::string log = (state_.path() / "ephemerad.log").string();
  posix_spawn_file_actions_addopen(&actions, 2, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
  ASSERT_EQ(posix_spawn(&daemon_, EPHEMERAD, &actions, nullptr, argv.data(), environ), 0);
  posix_spawn_file_actions_destroy(&actions);
  // The first start may generate an RSA-4096 key for the classic protocol.
  for (int i = 0; i < 400; ++i) {
    if (RunProcess(Cli({"status"})).ok()) return;
    std::this_thread::sleep_for(50ms);
  }
  FAIL() << "ephemerad did not start:\n" << DaemonLog();
}

void DaemonTest::StopDaemon(int sig) {
  ::kill(daemon_, sig);
  int status = 0;
  ::waitpid(daemon_, &status, 0);
  daemon_ = -1;
}

CurlResult DaemonTest::Api(const std::string& method, const std::string& path,
                           std::vector<std::string> extra) {
  std::vector<std::string> args = {"--unix-socket", socket_.string(), "-X", method};
  args.insert(args.end(), extra.begin(), extra.end());
  args.push_back("http://localhost" + path);
  return Curl(args);
}

DaemonTest::ExecResult DaemonTest::Exec(const std::string& id, const json& request) {
  CurlResult r = Api("POST", "/v1/sandboxes/" + id + "/exec", {"--data-binary", request.dump()});
  EXPECT_EQ(r.status, 200) << r.body;
  ExecResult result;
  std::istringstream lines(r.body);
  for (std::string line; std::getline(lines, line);) {
    json event = json::parse(line);
    if (event.contains("stdout")) result.out += *Base64Decode(event["stdout"].get<std::string>());
    if (event.contains("stderr")) result.err += *Base64Decode(event["stderr"].get<std::string>());
    if (event.contains("exit")) result.exit = event["exit"];
  }
  return result;
}

long DaemonTest::PeakMemoryKib() const {
  std::ifstream status("/proc/" + std::to_string(daemon_) + "/status");
  for (std::string line; std::getline(status, line);) {
    if (line.rfind("VmHWM:", 0) == 0) return std::stol(line.substr(6));
  }
  return -1;
}

void DaemonTest::ExpectLargeOutputStreamsInBoundedMemory(const std::string& id) {
  const long before = PeakMemoryKib();
  std::string line;
  for (const std::string& arg : Cli({"exec", id, "--", "head", "-c", "104857600", "/dev/zero"})) {
    line += arg + " ";
  }
  ProcessResult r = RunProcess({"bash", "-c", line + "| wc -c"}, 300s);
  EXPECT_EQ(r.out, "104857600\n") << r.err;
  const long after = PeakMemoryKib();
  EXPECT_LT(after - before, 16 * 1024)
      << "peak memory went from " << before << " to " << after << " KiB";
}

void DaemonTest::ExpectAFileRoundTrip(const std::string& id, unsigned mib,
                                      const std::string& user) {
  const fs::path up = state_.path() / "up.bin", down = state_.path() / "down.bin";
  RunChecked({"dd", "if=/dev/urandom", "of=" + up.string(), "bs=1M", "count=" + std::to_string(mib),
              "status=none"});
  fs::permissions(up, fs::perms(0640));
  const std::string sha = RunChecked({"sha256sum", up.string()}, 60s).out.substr(0, 64);
  ProcessResult r = RunProcess(Cli({"cp", up.string(), id + ":/tmp/up.bin"}), 300s);
  ASSERT_TRUE(r.ok()) << r.err;
  ExecResult e = Exec(id, {{"argv", {"sh", "-c", "sha256sum /tmp/up.bin; stat -c %a /tmp/up.bin"}},
                           {"user", user}});
  EXPECT_EQ(e.out, sha + "  /tmp/up.bin\n640\n");
  r = RunProcess(Cli({"cp", id + ":/tmp/up.bin", down.string()}), 300s);
  ASSERT_TRUE(r.ok()) << r.err;
  EXPECT_EQ(fs::file_size(down), std::uint64_t{mib} << 20);
  EXPECT_EQ(RunChecked({"sha256sum", down.string()}, 60s).out.substr(0, 64), sha);
  fs::remove(up);
  fs::remove(down);
}

void DaemonTest::ExpectATimeoutKillsTheWholeGroup(const std::string& id) {
  ExecResult e =
      Exec(id, {{"argv", {"sh", "-c", "sleep 300 & echo $!; wait"}}, {"timeout_seconds", 2}});
  EXPECT_EQ(e.exit["timed_out"], true);
  EXPECT_EQ(e.exit["signal"], 9);
  const std::string child = e.out.substr(0, e.out.find('\n'));
  ASSERT_FALSE(child.empty());
  e = Exec(id, {{"argv",
                 {"sh", "-c",
                  "for i in 1 2 3 4 5 6 7 8 9 10; do [ -e /proc/" + child +
                      " ] || exit 0; sleep 0.5; done; exit 1"}}});
  EXPECT_EQ(e.exit["code"], 0) << "the timed-out exec's child " << child << " still runs";
}

void DaemonTest::ExpectExecsBehaveAsDockerExec(const std::string& id, const std::string& user) {
  using ::testing::HasSubstr;
  // Through the CLI, as docker exec: both streams, the status passed on.
  ProcessResult r =
      RunProcess(Cli({"exec", id, "--", "sh", "-c", "echo out; echo err >&2; exit 7"}), 60s);
  EXPECT_EQ(r.exit_code, 7) << r.err;
  EXPECT_EQ(r.out, "out\n");
  EXPECT_EQ(r.err, "err\n");
  // The client's own account by default; another when asked.
  EXPECT_EQ(RunProcess(Cli({"exec", id, "--", "id", "-un"}), 60s).out, user + "\n");
  EXPECT_EQ(RunProcess(Cli({"exec", "-u", "root", "-e", "GREETING=hi", "-w", "/tmp", id, "--", "sh",
                            "-c", "echo $(id -un) $GREETING $(pwd)"}),
                       60s)
                .out,
            "root hi /tmp\n");

  // stdin: streamed from the CLI's own, and given whole in the request.
  std::string cli;
  for (const std::string& arg : Cli({"exec", "-i", id, "--", "tr", "a-z", "A-Z"})) cli += " " + arg;
  r = RunProcess({"bash", "-c", "printf 'round trip' |" + cli}, 60s);
  EXPECT_EQ(r.out, "ROUND TRIP") << r.err;
  ExecResult e = Exec(id, {{"argv", {"cat"}}, {"stdin", "given whole"}});
  EXPECT_EQ(e.out, "given whole");
  EXPECT_EQ(e.exit["code"], 0);

  // A terminal of the size asked for.
  e = Exec(id, {{"argv", {"stty", "size"}}, {"tty", true}, {"rows", 33}, {"cols", 101}});
  EXPECT_EQ(e.out, "33 101\r\n");

  ExpectATimeoutKillsTheWholeGroup(id);
  r = RunProcess(Cli({"exec", "--timeout", "1", id, "--", "sleep", "60"}), 60s);
  EXPECT_EQ(r.exit_code, 124);

  // Bad requests get clear errors; the daemon goes on.
  CurlResult bad =
      Api("POST", "/v1/sandboxes/" + id + "/exec", {"--data-binary", R"({"argv": []})"});
  EXPECT_EQ(bad.status, 400);
  EXPECT_THAT(bad.body, HasSubstr("'argv' must be a non-empty list of strings"));
  bad = Api("POST", "/v1/sandboxes/" + id + "/exec",
            {"--data-binary", R"({"argv": ["no-such-program"]})"});
  EXPECT_EQ(bad.status, 400);
  EXPECT_THAT(bad.body, HasSubstr("cannot execute no-such-program"));
  bad = Api("POST", "/v1/sandboxes/" + id + "/exec",
            {"--data-binary", R"({"argv": ["true"], "user": "nobody-here"})"});
  EXPECT_EQ(bad.status, 400);
  EXPECT_THAT(bad.body, HasSubstr("no such user"));
}

json DaemonTest::Create(const std::vector<std::string>& extra) {
  std::vector<std::string> args = {"create", "--json", "--ttl", "600"};
  args.insert(args.end(), extra.begin(), extra.end());
  ProcessResult r = RunProcess(Cli(args), 180s);
  EXPECT_TRUE(r.ok()) << r.err << DaemonLog();
  return json::parse(r.out);
}

json DaemonTest::List() { return json::parse(Output(Cli({"list", "--json"}))); }

std::string DaemonTest::DaemonLog() const { return ReadFile(state_.path() / "ephemerad.log"); }

void DaemonTest::ExpectNothingLeft() {
  EXPECT_TRUE(List().empty());
  EXPECT_THAT(Output({"ip", "-o", "link", "show"}), Not(HasSubstr("eph")));
  EXPECT_THAT(Output({"ss", "-Hulpn"}), Not(HasSubstr("dnsmasq")));
  // No forwarded port is left; the daemon's own front doors may listen.
  EXPECT_THAT(Output({"ss", "-Htlpn", "( sport >= :10000 and sport <= :15000 )"}),
              Not(HasSubstr("ephemerad")));
  EXPECT_THAT(Output({"nft", "list", "table", "inet", "ephemera"}), Not(HasSubstr("\"eph")));
  EXPECT_TRUE(fs::is_empty(state_.path() / "state" / "vms"));
  EXPECT_TRUE(fs::is_empty(state_.path() / "state" / "net"));
  EXPECT_THAT(RunProcess({"pgrep", "-f", "qemu-system.* -name ephemera-"}).out,
              ::testing::IsEmpty());
  // Nor any VM cgroup.
  Cgroups cgroups = Cgroups::Discover(Cgroups::SubtreeFor(state_.path() / "state"));
  EXPECT_THAT(cgroups.List(), ::testing::IsEmpty());
  // Nor any container's folder or mount; an image's read-only mount may
  // stay a while for the next container (container.image_idle_seconds).
  const fs::path containers = state_.path() / "state" / "containers";
  if (fs::exists(containers)) {
    for (const auto& entry : fs::directory_iterator(containers)) {
      EXPECT_THAT(entry.path().filename().string(), ::testing::StartsWith("."));
    }
  }
  EXPECT_THAT(ReadFile("/proc/self/mountinfo"),
              Not(::testing::ContainsRegex((containers / "[0-9a-f]{8}-").string())));
}

void DaemonTest::MountStateTmpfs(const std::string& size) {
  fs::create_directories(state_.path() / "state");
  ASSERT_EQ(
      ::mount("tmpfs", (state_.path() / "state").c_str(), "tmpfs", 0, ("size=" + size).c_str()), 0);
}

void DaemonTest::UnmountStateTmpfs() { ::umount2((state_.path() / "state").c_str(), MNT_DETACH); }

pid_t DaemonTest::QemuPid(const std::string& id) const {
  return std::stoi(ReadFile(state_.path() / "state" / "vms" / id / "qemu.pid"));
}

}  // namespace ephemera::test
