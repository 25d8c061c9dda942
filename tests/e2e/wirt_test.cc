// The wirt front door end to end: real users of a real group write their
// requests with the wirt command (as themselves), a real ephemerad boots a
// real guest, and the credentials it writes log in over SSH. Also the
// local socket's peers: a member acts as themselves, others are refused.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <thread>

#include "core/fs.h"
#include "core/subprocess.h"
#include "e2e/daemon_fixture.h"
#include "guest/credentials.h"
#include "guest/ssh_session.h"
#include "support/test_users.h"
#include "wirt/members.h"

namespace ephemera::test {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using nlohmann::json;
using ::testing::HasSubstr;

// A daemon whose socket real users of a real group reach.
class LocalUsersTest : public DaemonTest {
 protected:
  void SetUp() override {
    users_ = std::make_unique<TestUsers>(homes_.path() / "home");
    AddUsers();
    // The users reach the socket in the test's state folder.
    fs::permissions(state_.path(), fs::perms::others_exec, fs::perm_options::add);
    DaemonTest::SetUp();
  }
  void TearDown() override {
    DaemonTest::TearDown();
    users_.reset();
  }
  virtual void AddUsers() = 0;
  // The ephemera command as the user on the daemon's socket: exit status and output.
  std::pair<int, std::string> Ephemera(const TestUser& user, const std::string& args) {
    const fs::path out = user.home / ".ephemera.out";
    int status = users_->RunAs(user, std::string(EPHEMERA_CLI) + " --socket " + socket_.string() +
                                         " " + args + " > " + out.string() + " 2>&1");
    std::string text = fs::exists(out) ? ReadFile(out) : "";
    fs::remove(out);
    return {status, text};
  }

  TempDir homes_;
  std::unique_ptr<TestUsers> users_;
};

class WirtTest : public LocalUsersTest {
 protected:
  void AddUsers() override {
    alice_ = users_->Add("a");
    bob_ = users_->Add("b");
    carol_ = users_->Add("c", /*member=*/false);
  }
  std::string ExtraConfig() const override {
    // Anyone may connect: whom the daemon serves is decided by SO_PEERCRED.
    // No socket_group: the socket is wirt.group's.
    return "socket_mode: '0666'\nwirt: {enabled: true, group: " + users_->group() + "}\n";
  }

  // The wirt command as the user; its stdout, or the test fails.
  std::string Wirt(const TestUser& user, const std::string& args) {
    const fs::path out = user.home / ".wirt.out";
    int status =
        users_->RunAs(user, std::string(WIRT_CLI) + " " + args + " > " + out.string() + " 2>&1");
    std::string text = fs::exists(out) ? ReadFile(out) : "";
    fs::remove(out);
    EXPECT_EQ(status, 0) << "wirt " << args << ":\n" << text << DaemonLog();
    return text;
  }
  json Credentials(const TestUser& user, const std::string& vm) {
    return json::parse(ReadFile(user.home / "wirt/info/vm" / vm / "credentials"));
  }
  std::string Status(const TestUser& user, const std::string& vm) {
    return ReadFile(user.home / "wirt/info/vm" / vm / "status.xml");
  }
  // Logs in as the client and returns `id -un`.
  std::string LoginWithPassword(const json& c) {
    SshSession ssh(c["host"], c["port"].get<std::uint16_t>(), c["username"], 30s);
    EXPECT_EQ(ssh.HostKeyLine(), c["host_key"].get<std::string>());
    EXPECT_TRUE(ssh.AuthenticateWithPassword(c["password"]));
    return ssh.Execute("id -un", 30s).out;
  }

  TestUser alice_, bob_, carol_;
};

TEST_F(WirtTest, StartLogsInWithPasswordAndKeyThenShutdownLeavesNothing) {
  SshKeyPair key = SshKeyPair::Generate();
  Wirt(alice_, "create web --memory 256 --ttl 900 --ssh-key '" + key.PublicKeyLine() + " alice'");
  Wirt(alice_, "start web --wait --timeout 240");
  json c = Credentials(alice_, "web");
  struct stat st {};
  ASSERT_EQ(::stat((alice_.home / "wirt/info/vm/web/credentials").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, alice_.uid);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_EQ(LoginWithPassword(c), c["username"].get<std::string>() + "\n");
  {
    SshSession ssh(c["host"], c["port"].get<std::uint16_t>(), c["username"], 30s);
    EXPECT_TRUE(ssh.AuthenticateWithKey(key)) << "the config's ssh key is not authorised";
  }
  EXPECT_THAT(Status(alice_, "web"), HasSubstr("<state>running</state>"));
  EXPECT_THAT(Wirt(alice_, "status web"), HasSubstr("running"));
  // The user's own way in: the credentials file, the host key pinned.
  EXPECT_EQ(Wirt(alice_, "ssh web -- id -un"), c["username"].get<std::string>() + "\n");
  json listed = List();
  ASSERT_EQ(listed.size(), 1u);
  EXPECT_EQ(listed[0]["vm_name"], "web");
  EXPECT_EQ(listed[0]["owner_uid"], alice_.uid);
  const pid_t qemu = QemuPid(c["id"]);

  Wirt(alice_, "stop web --wait --timeout 120");
  EXPECT_FALSE(fs::exists(alice_.home / "wirt/info/vm/web/credentials"));
  EXPECT_THAT(Status(alice_, "web"), HasSubstr("<state>stopped</state>"));
  EXPECT_NE(::kill(qemu, 0), 0) << "QEMU still runs";
  EXPECT_THAT(ReadFile(alice_.home / "wirt/logs/vm/web.log"), HasSubstr("stop: ok: sandbox"));
  ExpectNothingLeft();
}

TEST_F(WirtTest, AutostartBringsTheVmBackAfterTheDaemonRestarts) {
  Wirt(alice_, "autostart web --wait --timeout 240");
  json first = Credentials(alice_, "web");
  // The daemon stops; meanwhile the VM dies (the host's trouble).
  StopDaemon(SIGTERM);
  ::kill(QemuPid(first["id"]), SIGKILL);
  StartDaemon();
  // The next daemon cleans the dead one up and starts a fresh instance.
  json second;
  for (int i = 0; i < 2400; ++i) {
    if (fs::exists(alice_.home / "wirt/info/vm/web/credentials")) {
      second = Credentials(alice_, "web");
      if (second["id"] != first["id"]) break;
    }
    std::this_thread::sleep_for(100ms);
  }
  ASSERT_NE(second["id"], first["id"]) << DaemonLog();
  EXPECT_EQ(LoginWithPassword(second), second["username"].get<std::string>() + "\n");
  EXPECT_THAT(Status(alice_, "web"), HasSubstr("<autostart>yes</autostart>"));
  Wirt(alice_, "autostart web --disable --wait --timeout 60");
  Wirt(alice_, "destroy web --wait --timeout 120");
  ExpectNothingLeft();
}

TEST_F(WirtTest, LocalSocketPeersSeeAndDestroyOnlyTheirOwn) {
  Wirt(alice_, "start web --wait --timeout 240");
  const std::string alices = Credentials(alice_, "web")["id"];

  auto [carol_status, carol_out] = Ephemera(carol_, "list --json");
  EXPECT_NE(carol_status, 0);
  EXPECT_THAT(carol_out, HasSubstr("is not a member of group " + users_->group()));

  auto [bob_list_status, bob_list] = Ephemera(bob_, "list --json");
  ASSERT_EQ(bob_list_status, 0) << bob_list;
  EXPECT_TRUE(json::parse(bob_list).empty()) << bob_list;
  auto [bob_destroy_status, bob_destroy] = Ephemera(bob_, "destroy " + alices);
  EXPECT_NE(bob_destroy_status, 0);
  EXPECT_THAT(bob_destroy, HasSubstr("no sandbox"));

  auto [create_status, created] = Ephemera(bob_, "create --json --ttl 600");
  ASSERT_EQ(create_status, 0) << created << DaemonLog();
  const std::string bobs = json::parse(created)["id"];
  auto [bob_again_status, bob_again] = Ephemera(bob_, "list --json");
  ASSERT_EQ(json::parse(bob_again).size(), 1u) << bob_again;
  EXPECT_EQ(json::parse(bob_again)[0]["id"], bobs);
  EXPECT_EQ(List().size(), 2u);  // root sees both
  auto [own_destroy_status, own_destroy] = Ephemera(bob_, "destroy " + bobs);
  EXPECT_EQ(own_destroy_status, 0) << own_destroy;
  ASSERT_EQ(List().size(), 1u);
  EXPECT_EQ(List()[0]["id"], alices);
}

// socket_group without wirt: the socket is the group's, its members use it
// as themselves (a container each: no guest to boot), others cannot connect.
class SocketGroupTest : public LocalUsersTest {
 protected:
  void AddUsers() override {
    dana_ = users_->Add("d");
    erin_ = users_->Add("e", /*member=*/false);
  }
  std::string ExtraConfig() const override { return "socket_group: " + users_->group() + "\n"; }

  TestUser dana_, erin_;
};

TEST_F(SocketGroupTest, MembersUseTheSocketAsThemselvesAndOthersCannotConnect) {
  struct stat st {};
  ASSERT_EQ(::stat(socket_.c_str(), &st), 0);
  EXPECT_EQ(st.st_gid, wirt::GroupId(users_->group()).value());
  EXPECT_EQ(st.st_mode & 0777, 0660u);

  auto [erin_status, erin_out] = Ephemera(erin_, "list --json");
  EXPECT_NE(erin_status, 0);
  EXPECT_THAT(erin_out, HasSubstr("ermission denied"));

  json roots = Create({"--kind", "container", "--memory", "128"});
  auto [create_status, created] =
      Ephemera(dana_, "create --json --kind container --memory 128 --ttl 600");
  ASSERT_EQ(create_status, 0) << created << DaemonLog();
  const std::string danas = json::parse(created)["id"];
  auto [list_status, listed] = Ephemera(dana_, "list --json");
  ASSERT_EQ(list_status, 0) << listed;
  ASSERT_EQ(json::parse(listed).size(), 1u) << listed;
  EXPECT_EQ(json::parse(listed)[0]["id"], danas);
  EXPECT_EQ(json::parse(listed)[0]["owner_uid"], dana_.uid);
  auto [destroy_status, destroyed] = Ephemera(dana_, "destroy " + roots["id"].get<std::string>());
  EXPECT_NE(destroy_status, 0);
  EXPECT_THAT(destroyed, HasSubstr("no sandbox"));
  EXPECT_EQ(List().size(), 2u);
  auto [own_status, own] = Ephemera(dana_, "destroy " + danas);
  EXPECT_EQ(own_status, 0) << own;
  Output(Cli({"destroy", roots["id"]}));
  ExpectNothingLeft();
}

// A socket_group the operator names must exist: the daemon stops at start,
// naming it, and serves nothing.
TEST(SocketGroupConfigTest, AGroupThatDoesNotExistStopsTheDaemonAtStart) {
  TempDir dir;
  WriteFileAtomic(dir.path() / "config.yaml",
                  "state_dir: " + (dir.path() / "state").string() +
                      "\nsocket: " + (dir.path() / "ephemera.sock").string() +
                      "\nsocket_group: no-such-group-here\ncontainer: {enabled: false}\n",
                  0600);
  ProcessResult r = RunProcess({EPHEMERAD, "--config", (dir.path() / "config.yaml").string()}, 60s);
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_THAT(r.err,
              HasSubstr("config key 'socket_group': there is no group 'no-such-group-here'"));
  EXPECT_FALSE(fs::exists(dir.path() / "ephemera.sock"));
}

}  // namespace
}  // namespace ephemera::test
