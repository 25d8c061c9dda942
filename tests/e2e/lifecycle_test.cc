// End to end with the real daemon and CLI, inside the test's private network
// namespace: create, log in with the returned credentials through the
// forwarded port, sudo, endpoint refused, destroy, and nothing left; the
// same after kill -9 of QEMU (the reaper) and of ephemerad mid-create
// (reconcile at the next start).
#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "core/error.h"
#include "core/fs.h"
#include "core/subprocess.h"
#include "integration/guest_fixture.h"
#include "provision/ssh_session.h"
#include "unit/test_files.h"

extern char** environ;

namespace ephemera {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using nlohmann::json;
using ::testing::HasSubstr;
using ::testing::Not;

std::string Output(const std::vector<std::string>& argv) { return RunChecked(argv, 60s).out; }

class LifecycleTest : public ::testing::Test {
 protected:
  void SetUp() override {
    socket_ = state_.path() / "api.sock";
    config_ = state_.path() / "config.yaml";
    test::WriteBytes(config_, "state_dir: " + (state_.path() / "state").string() + "\nimage_dir: " +
                                  test::ImageDir().string() + "\nsocket: " + socket_.string() +
                                  "\nnetwork: {forward_address: 127.0.0.1}\nvm: {accel: tcg}\n");
    ::setenv("XDG_CONFIG_HOME", (state_.path() / "client").c_str(), 1);
    StartDaemon();
  }

  void TearDown() override {
    // Leave nothing even if the test failed: destroy through the daemon,
    // then stop it.
    if (daemon_ > 0) {
      for (const auto& s : List()) RunProcess(Cli({"destroy", s["id"]}), 60s);
      StopDaemon(SIGTERM);
    }
  }

  std::vector<std::string> Cli(std::vector<std::string> args) {
    args.insert(args.begin(), {EPHEMERA_CLI, "--socket", socket_.string()});
    return args;
  }

  void StartDaemon() {
    std::vector<std::string> args = {EPHEMERAD, "--config", config_.string()};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    std::string log = (state_.path() / "ephemerad.log").string();
    posix_spawn_file_actions_addopen(&actions, 2, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
    ASSERT_EQ(posix_spawn(&daemon_, EPHEMERAD, &actions, nullptr, argv.data(), environ), 0);
    posix_spawn_file_actions_destroy(&actions);
    for (int i = 0; i < 200; ++i) {
      if (RunProcess(Cli({"status"})).ok()) return;
      std::this_thread::sleep_for(50ms);
    }
    FAIL() << "ephemerad did not start:\n" << ReadFile(log);
  }

  void StopDaemon(int sig) {
    ::kill(daemon_, sig);
    int status = 0;
    ::waitpid(daemon_, &status, 0);
    daemon_ = -1;
  }

  json Create() {
    ProcessResult r = RunProcess(Cli({"create", "--json", "--ttl", "600"}), 180s);
    EXPECT_TRUE(r.ok()) << r.err << ReadFile(state_.path() / "ephemerad.log");
    return json::parse(r.out);
  }

  json List() { return json::parse(Output(Cli({"list", "--json"}))); }

  // No QEMU, TAP, dnsmasq, listener, rule, clone or row is left.
  void ExpectNothingLeft() {
    EXPECT_TRUE(List().empty());
    EXPECT_THAT(Output({"ip", "-o", "link", "show"}), Not(HasSubstr("eph")));
    EXPECT_THAT(Output({"ss", "-Hulpn"}), Not(HasSubstr("dnsmasq")));
    EXPECT_THAT(Output({"ss", "-Htlpn"}), Not(HasSubstr("ephemerad")));
    EXPECT_THAT(Output({"nft", "list", "table", "inet", "ephemera"}), Not(HasSubstr("\"eph")));
    EXPECT_TRUE(fs::is_empty(state_.path() / "state" / "vms"));
    EXPECT_TRUE(fs::is_empty(state_.path() / "state" / "net"));
    EXPECT_THAT(RunProcess({"pgrep", "-f", (state_.path() / "state").string() + "/vms/"}).out,
                ::testing::IsEmpty());
  }

  pid_t QemuPid(const std::string& id) {
    return std::stoi(ReadFile(state_.path() / "state" / "vms" / id / "qemu.pid"));
  }

  test::TempDir state_;
  fs::path socket_;
  fs::path config_;
  pid_t daemon_ = -1;
};

TEST_F(LifecycleTest, CreateLoginSudoDestroyLeavesNothing) {
  json s = Create();
  for (const char* key : {"id", "state", "host", "port", "username", "password", "token",
                          "host_key_fingerprint", "guest_ip", "expires_at"}) {
    EXPECT_TRUE(s.contains(key)) << key;
  }
  EXPECT_EQ(s["state"], "ready");
  EXPECT_EQ(s["password"].get<std::string>().size(), 120u);
  // show and list never reveal the password or token.
  json shown = json::parse(Output(Cli({"show", s["id"], "--json"})));
  EXPECT_FALSE(shown.contains("password"));
  EXPECT_FALSE(shown.contains("token"));
  EXPECT_EQ(shown["username"], s["username"]);
  EXPECT_THAT(Output(Cli({"list", "--json"})), Not(HasSubstr(s["password"].get<std::string>())));

  // The client logs in with exactly what the API returned.
  SshSession client(s["host"], s["port"].get<std::uint16_t>(), s["username"], 30s);
  EXPECT_EQ(client.HostKeyFingerprint(), s["host_key_fingerprint"]);
  ASSERT_TRUE(client.AuthenticateWithPassword(s["password"]));
  EXPECT_EQ(client.Execute("id -un", 30s).out, s["username"].get<std::string>() + "\n");
  CommandResult sudo =
      client.Execute("echo '" + s["password"].get<std::string>() + "' | sudo -S -p '' id -u", 30s);
  EXPECT_EQ(sudo.out, "0\n") << sudo.err;
  SshSession endpoint(s["host"], s["port"].get<std::uint16_t>(), "endpoint", 30s);
  EXPECT_FALSE(endpoint.AuthenticateWithPassword("endpoint"));
  // And through the CLI, which pins the host key.
  EXPECT_EQ(Output(Cli({"ssh", s["id"], "--", "id", "-un"})),
            s["username"].get<std::string>() + "\n");

  Output(Cli({"destroy", s["id"]}));
  ExpectNothingLeft();
  EXPECT_FALSE(RunProcess(Cli({"show", s["id"]})).ok());
}

TEST_F(LifecycleTest, ReaperRemovesASandboxWhoseQemuWasKilled) {
  json s = Create();
  ASSERT_EQ(::kill(QemuPid(s["id"]), SIGKILL), 0);
  auto deadline = std::chrono::steady_clock::now() + 10s;
  while (!List().empty() && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(100ms);
  ExpectNothingLeft();
}

TEST_F(LifecycleTest, RestartAfterKill9MidCreateReconciles) {
  // Start a create, and kill the daemon while the guest boots.
  pid_t create = 0;
  std::vector<std::string> args = Cli({"create", "--json"});
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  ASSERT_EQ(posix_spawn(&create, args[0].c_str(), nullptr, nullptr, argv.data(), environ), 0);
  auto deadline = std::chrono::steady_clock::now() + 30s;
  while (!fs::exists(state_.path() / "state" / "vms") ||
         fs::is_empty(state_.path() / "state" / "vms")) {
    ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "no VM appeared";
    std::this_thread::sleep_for(20ms);
  }
  StopDaemon(SIGKILL);
  // The client sees the connection drop at once (no child of the daemon
  // may hold it open) and fails.
  int status = 0;
  auto client_deadline = std::chrono::steady_clock::now() + 20s;
  while (::waitpid(create, &status, WNOHANG) == 0) {
    if (std::chrono::steady_clock::now() > client_deadline) {
      ::kill(create, SIGKILL);
      ::waitpid(create, &status, 0);
      ADD_FAILURE() << "the client still waited after the daemon died";
      break;
    }
    std::this_thread::sleep_for(20ms);
  }
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) != 0);
  // Half a sandbox is on the host now; the restarted daemon removes it.
  StartDaemon();
  ExpectNothingLeft();
  EXPECT_THAT(ReadFile(state_.path() / "ephemerad.log"), HasSubstr("its creation was interrupted"));
}

TEST_F(LifecycleTest, SandboxesOutliveADaemonRestartAndAreAdopted) {
  json s = Create();
  StopDaemon(SIGTERM);  // no destroy_on_exit: the sandbox keeps running
  EXPECT_EQ(::kill(QemuPid(s["id"]), 0), 0);
  StartDaemon();
  json listed = List();
  ASSERT_EQ(listed.size(), 1u);
  EXPECT_EQ(listed[0]["id"], s["id"]);
  EXPECT_EQ(listed[0]["port"], s["port"]);  // the forward came back on its port
  EXPECT_EQ(Output(Cli({"ssh", s["id"], "--", "id", "-un"})),
            s["username"].get<std::string>() + "\n");
  EXPECT_THAT(ReadFile(state_.path() / "ephemerad.log"),
              HasSubstr("adopted sandbox " + s["id"].get<std::string>()));
  Output(Cli({"destroy", s["id"]}));
  ExpectNothingLeft();
}

TEST_F(LifecycleTest, BadRequestsGetClearErrorsAndTheDaemonKeepsServing) {
  ProcessResult r = RunProcess(Cli({"create", "--image", "nope"}));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.err, HasSubstr("unknown image 'nope'"));
  r = RunProcess(Cli({"create", "--memory", "1"}));
  EXPECT_THAT(r.err, HasSubstr("memory_mib 1 is out of range"));
  r = RunProcess(Cli({"create", "--ttl", "0"}));
  EXPECT_THAT(r.err, HasSubstr("ttl_seconds 0"));
  r = RunProcess(Cli({"show", "not-an-id"}));
  EXPECT_THAT(r.err, HasSubstr("is not a sandbox id"));
  r = RunProcess(Cli({"destroy", "123e4567-e89b-42d3-a456-426614174000"}));
  EXPECT_THAT(r.err, HasSubstr("no sandbox"));
  // Raw HTTP: not JSON, too large.
  std::string url = "http://localhost/v1/sandboxes";
  r = RunProcess({"curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--unix-socket",
                  socket_.string(), "-X", "POST", "-d", "{not json", url});
  EXPECT_EQ(r.out, "400");
  test::WriteBytes(state_.path() / "big.json", std::string(100 * 1024, ' '));
  r = RunProcess({"curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--unix-socket",
                  socket_.string(), "-X", "POST", "--data-binary",
                  "@" + (state_.path() / "big.json").string(), url});
  EXPECT_EQ(r.out, "413");
  EXPECT_TRUE(RunProcess(Cli({"status"})).ok());
  ExpectNothingLeft();
}

}  // namespace
}  // namespace ephemera
