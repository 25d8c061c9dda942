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
#include "e2e/daemon_fixture.h"
#include "e2e/http_client.h"
#include "guest/ssh_session.h"
#include "unit/loopback_server.h"

extern char** environ;

namespace ephemera {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using nlohmann::json;
using ::testing::HasSubstr;
using ::testing::Not;

class LifecycleTest : public test::DaemonTest {};

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

// The confined QEMU (its own uid, seccomp, descriptors only) on q35 too.
class Q35LifecycleTest : public LifecycleTest {
  std::string VmConfig() const override { return ", machine: q35"; }
};

TEST_F(Q35LifecycleTest, CreateLoginDestroyOnQ35) {
  json s = Create();
  const std::string status = ReadFile("/proc/" + std::to_string(QemuPid(s["id"])) + "/status");
  EXPECT_THAT(status, HasSubstr("Seccomp:\t2"));
  EXPECT_THAT(status, Not(HasSubstr("Uid:\t0\t")));
  EXPECT_EQ(Output(Cli({"ssh", s["id"], "--", "id", "-un"})),
            s["username"].get<std::string>() + "\n");
  Output(Cli({"destroy", s["id"]}));
  ExpectNothingLeft();
}

TEST_F(LifecycleTest, ReaperRemovesASandboxWhoseQemuWasKilled) {
  json s = Create();
  ASSERT_EQ(::kill(QemuPid(s["id"]), SIGKILL), 0);
  auto deadline = std::chrono::steady_clock::now() + 10s;
  while (!List().empty() && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(100ms);
  ExpectNothingLeft();
}

TEST_F(LifecycleTest, ADaemonOutOfDescriptorsKeepsItsSandboxes) {
  // At its descriptor limit the daemon cannot open a pidfile or a QMP
  // socket: that says nothing about the VM, which must be kept (and its
  // QEMU not orphaned), not reaped as "shut off".
  json s = Create();
  const pid_t qemu = QemuPid(s["id"]);
  std::size_t open = 0;
  for ([[maybe_unused]] const auto& fd :
       fs::directory_iterator("/proc/" + std::to_string(daemon_) + "/fd"))
    ++open;
  const std::string pid = std::to_string(daemon_);
  // The soft limit only (raising the hard one back would need privileges
  // a container may not give).
  std::string soft =
      Output({"prlimit", "--pid", pid, "--nofile", "--raw", "--noheadings", "--output=SOFT"});
  soft.erase(soft.find_last_not_of(" \n") + 1);
  soft.erase(0, soft.find_first_not_of(' '));
  Output({"prlimit", "--pid", pid, "--nofile=" + std::to_string(open) + ":"});
  std::this_thread::sleep_for(3s);  // several reaper passes
  Output({"prlimit", "--pid", pid, "--nofile=" + soft + ":"});
  EXPECT_EQ(::kill(qemu, 0), 0) << "QEMU was killed";
  json listed = List();
  ASSERT_EQ(listed.size(), 1u) << DaemonLog();
  EXPECT_EQ(listed[0]["state"], "ready");
  EXPECT_TRUE(fs::exists(state_.path() / "state" / "vms" / s["id"].get<std::string>()));
  EXPECT_EQ(Output(Cli({"ssh", s["id"], "--", "id", "-un"})),
            s["username"].get<std::string>() + "\n");
  Output(Cli({"destroy", s["id"]}));
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
  EXPECT_THAT(DaemonLog(), HasSubstr("its creation was interrupted"));
}

TEST_F(LifecycleTest, SandboxesOutliveADaemonRestartAndAreAdopted) {
  json s = Create();
  const json exposed = json::parse(Output(Cli({"port", "add", s["id"], "8080", "--json"})));
  const std::uint16_t exposed_port = exposed["host_port"].get<std::uint16_t>();
  StopDaemon(SIGTERM);  // no destroy_on_exit: the sandbox keeps running
  EXPECT_FALSE(test::ConnectLoopback(exposed_port)) << "the forwards go with the daemon";
  EXPECT_EQ(::kill(QemuPid(s["id"]), 0), 0);
  StartDaemon();
  json listed = List();
  ASSERT_EQ(listed.size(), 1u);
  EXPECT_EQ(listed[0]["id"], s["id"]);
  EXPECT_EQ(listed[0]["port"], s["port"]);  // the forward came back on its port
  // So did the exposed port's, on its host port.
  json ports = json::parse(Output(Cli({"port", "list", s["id"], "--json"})));
  ASSERT_EQ(ports.size(), 2u) << ports.dump();
  EXPECT_EQ(ports[1], exposed);
  EXPECT_TRUE(test::ConnectLoopback(exposed_port));
  EXPECT_EQ(Output(Cli({"ssh", s["id"], "--", "id", "-un"})),
            s["username"].get<std::string>() + "\n");
  EXPECT_THAT(DaemonLog(), HasSubstr("adopted sandbox " + s["id"].get<std::string>()));
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
  EXPECT_EQ(
      test::Curl({"--unix-socket", socket_.string(), "-X", "POST", "-d", "{not json", url}).status,
      400);
  test::WriteBytes(state_.path() / "big.json", std::string(100 * 1024, ' '));
  EXPECT_EQ(test::Curl({"--unix-socket", socket_.string(), "-X", "POST", "--data-binary",
                        "@" + (state_.path() / "big.json").string(), url})
                .status,
            413);
  EXPECT_TRUE(RunProcess(Cli({"status"})).ok());
  ExpectNothingLeft();
}

}  // namespace
}  // namespace ephemera
