// The libvirt driver end to end: a real ephemerad connected to a libvirtd
// of the test's own (tests/e2e/test_libvirtd.h), in the test's private
// network namespace. One libvirtd serves every test here (this binary runs
// as one test), since its first answer waits for it to probe QEMU.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <memory>
#include <nlohmann/json.hpp>
#include <thread>

#include "core/fs.h"
#include "core/subprocess.h"
#include "e2e/daemon_fixture.h"
#include "e2e/live_iso.h"
#include "e2e/test_libvirtd.h"
#include "guest/ssh_session.h"

extern char** environ;

namespace ephemera {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using nlohmann::json;
using test::TestLibvirtd;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;

TestLibvirtd* libvirtd = nullptr;

class LibvirtEnvironment : public ::testing::Environment {
 public:
  void SetUp() override { libvirtd = new TestLibvirtd(); }
  void TearDown() override {
    delete libvirtd;
    libvirtd = nullptr;
  }
};

const auto* const kEnvironment = ::testing::AddGlobalTestEnvironment(new LibvirtEnvironment);

std::string Virsh(const std::string& args) { return TestLibvirtd::Virsh(args); }

class LibvirtTest : public test::DaemonTest {
 protected:
  void SetUp() override {
    // libvirt's QEMU (libvirt-qemu) reaches overlays under the state folder.
    ::chmod(state_.path().c_str(), 0711);
    DaemonTest::SetUp();
  }
  std::string VmConfig() const override {
    return std::string(", driver: libvirt, libvirt_uri: '") + TestLibvirtd::kUri + "'" +
           NetworkMode();
  }
  virtual std::string NetworkMode() const { return ""; }

  // Nothing of any sandbox is left in libvirt: no domain, no network of
  // ours, no filter of ours, no overlay.
  void ExpectNothingLeftInLibvirt() {
    EXPECT_THAT(Virsh("list --all --name"), Not(HasSubstr("-")));
    // A destroy returns once the domain is gone; its network follows within
    // a moment, off the request's thread.
    WaitForTeardowns();
    EXPECT_THAT(Virsh("net-list --all --name"), Not(HasSubstr("eph-")));
    EXPECT_THAT(Virsh("nwfilter-list"), Not(HasSubstr("ephemera-")));
    std::error_code ec;
    EXPECT_TRUE(fs::is_empty(state_.path() / "state" / "libvirt", ec));
    ExpectNothingLeft();
  }

  void Login(const json& s) {
    SshSession client(s["host"], s["port"].get<std::uint16_t>(), s["username"], 30s);
    EXPECT_EQ(client.HostKeyFingerprint(), s["host_key_fingerprint"]);
    ASSERT_TRUE(client.AuthenticateWithPassword(s["password"]));
    EXPECT_EQ(client.Execute("id -un", 30s).out, s["username"].get<std::string>() + "\n");
  }

  void WaitForTeardowns() {
    std::error_code ec;
    EXPECT_TRUE(Within(5s, [&] {
      return Virsh("net-list --all --name").find("eph-") == std::string::npos &&
             Virsh("nwfilter-list").find("ephemera-") == std::string::npos &&
             fs::is_empty(state_.path() / "state" / "libvirt", ec);
    })) << "a destroyed sandbox's network, filter or files are still there after 5 s";
  }

  template <typename Predicate>
  bool Within(std::chrono::milliseconds limit, Predicate done) {
    for (auto end = std::chrono::steady_clock::now() + limit;
         std::chrono::steady_clock::now() < end; std::this_thread::sleep_for(20ms)) {
      if (done()) return true;
    }
    return done();
  }
};

TEST_F(LibvirtTest, CreateLoginVirshInteropDestroyLeavesNothing) {
  json s = Create();
  const std::string id = s["id"];
  EXPECT_EQ(s["driver"], "libvirt");
  EXPECT_EQ(s["network"], "eph-" + id.substr(0, 8));
  EXPECT_THAT(s["mac"].get<std::string>(), ::testing::StartsWith("52:54:00:"));
  Login(s);
  // The operator sees and inspects it with virsh.
  EXPECT_THAT(Virsh("list --name"), HasSubstr(id));
  EXPECT_THAT(Virsh("dominfo " + id), HasSubstr("running"));
  EXPECT_THAT(Virsh("dumpxml " + id), HasSubstr("https://ephemera.dev/xmlns/sandbox/1"));
  // virsh console attaches to the guest's serial pty; virtlogd logs it too.
  EXPECT_THAT(Virsh("ttyconsole " + id), ::testing::StartsWith("/dev/pts/"));
  // The guest agent took its identity over its libvirt channel.
  EXPECT_THAT(ReadFile(state_.path() / "state" / "libvirt" / id / "serial.log"),
              HasSubstr("EPHEMERA_AGENT_READY"));
  EXPECT_THAT(Virsh("dumpxml " + id), HasSubstr("name='org.ephemera.agent.0' state='connected'"));
  // Its token went to QEMU by a file that is gone now, never by the XML.
  EXPECT_THAT(Virsh("dumpxml " + id), Not(HasSubstr("agent_token'>")));
  EXPECT_FALSE(fs::exists(state_.path() / "state" / "libvirt" / id / "fw_cfg-0"));
  // Programs and files through that channel, as under the qemu driver.
  ProcessResult r =
      RunProcess(Cli({"exec", id, "--", "sh", "-c", "echo out; echo err >&2; exit 7"}), 60s);
  EXPECT_EQ(r.exit_code, 7) << r.err;
  EXPECT_EQ(r.out, "out\n");
  EXPECT_EQ(r.err, "err\n");
  WriteFileAtomic(state_.path() / "up.txt", "through libvirt\n", 0644);
  r = RunProcess(Cli({"cp", (state_.path() / "up.txt").string(), id + ":/tmp/up.txt"}), 60s);
  ASSERT_TRUE(r.ok()) << r.err;
  r = RunProcess(Cli({"cp", id + ":/tmp/up.txt", (state_.path() / "down.txt").string()}), 60s);
  ASSERT_TRUE(r.ok()) << r.err;
  EXPECT_EQ(ReadFile(state_.path() / "down.txt"), "through libvirt\n");
  EXPECT_EQ(json::parse(Output(Cli({"show", "--json", id})))["running"], true);
  EXPECT_THAT(Virsh("net-list --name"), HasSubstr("eph-" + id.substr(0, 8)));
  // Transient: nothing of it is defined persistently.
  EXPECT_THAT(Virsh("list --persistent --all --name"), Not(HasSubstr(id)));
  json status = json::parse(Output(Cli({"status", "--json"})));
  EXPECT_THAT(status["drivers"]["libvirt"].get<std::string>(), HasSubstr("connected"));
  Output(Cli({"destroy", id}));
  ExpectNothingLeftInLibvirt();
}

TEST_F(LibvirtTest, AVirshDestroyIsReapedWithinASecond) {
  json s = Create();
  const std::string id = s["id"];
  Virsh("destroy " + id);  // returns once the domain is gone
  // The lifecycle event, not the next reaper pass, removes the sandbox and
  // all its state: records, network, rules, forward, overlay.
  const auto start = std::chrono::steady_clock::now();
  const fs::path overlay = state_.path() / "state" / "libvirt" / id;
  EXPECT_TRUE(Within(1s, [&] {
    return !fs::exists(overlay) && Virsh("net-list --all --name").find("eph-") == std::string::npos;
  })) << DaemonLog();
  EXPECT_LT(std::chrono::steady_clock::now() - start, 1s);
  EXPECT_TRUE(List().empty());
  ExpectNothingLeftInLibvirt();
}

TEST_F(LibvirtTest, ARestartedLibvirtdIsReconnectedAndTheSandboxServedMeanwhile) {
  json s = Create();
  const std::string id = s["id"];
  libvirtd->StopLibvirtd();
  // The daemon keeps serving, says libvirt is unreachable, and reaps nothing.
  EXPECT_TRUE(Within(10s, [&] {
    json status = json::parse(Output(Cli({"status", "--json"})));
    return status["drivers"]["libvirt"].get<std::string>().find("unreachable") != std::string::npos;
  }));
  std::this_thread::sleep_for(2s);  // several reaper passes
  ASSERT_EQ(List().size(), 1u);
  Login(s);  // the guest never stopped
  libvirtd->StartLibvirtd();
  EXPECT_TRUE(Within(15s, [&] {
    json status = json::parse(Output(Cli({"status", "--json"})));
    return status["drivers"]["libvirt"].get<std::string>().find("connected") == 0;
  })) << DaemonLog();
  EXPECT_THAT(DaemonLog(), HasSubstr("reconnected"));
  Output(Cli({"destroy", id}));
  ExpectNothingLeftInLibvirt();
}

TEST_F(LibvirtTest, AKilledDaemonReconcilesItsDomainsAtTheNextStart) {
  json kept = Create();
  // A second create is cut short by kill -9 once its domain exists.
  pid_t create = 0;
  std::vector<std::string> args = Cli({"create", "--json"});
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  ASSERT_EQ(posix_spawn(&create, args[0].c_str(), nullptr, nullptr, argv.data(), environ), 0);
  ASSERT_TRUE(Within(60s, [&] {
    std::string names = Virsh("list --name");
    return std::count(names.begin(), names.end(), '\n') >= 2;
  }));
  StopDaemon(SIGKILL);
  ::waitpid(create, nullptr, 0);
  StartDaemon();
  // The interrupted one is gone from libvirt; the ready one is adopted.
  json listed = List();
  ASSERT_EQ(listed.size(), 1u);
  EXPECT_EQ(listed[0]["id"], kept["id"]);
  std::string names = Virsh("list --all --name");
  EXPECT_EQ(std::count(names.begin(), names.end(), '\n'), 1) << names;
  EXPECT_THAT(DaemonLog(), HasSubstr("its creation was interrupted"));
  Login(kept);
  Output(Cli({"destroy", kept["id"]}));
  ExpectNothingLeftInLibvirt();
}

// Every sandbox on one shared libvirt network (Anweddol's layout).
class SharedLibvirtTest : public LibvirtTest {
 protected:
  static constexpr const char* kNetwork = "ephemera-test-shared";
  void SetUp() override {
    WriteFileAtomic("/tmp/ephemera-test-shared.xml",
                    "<network><name>ephemera-test-shared</name>"
                    "<bridge name='ephshared0' stp='off' delay='0'/>"
                    "<ip address='192.168.123.1' netmask='255.255.255.0'>"
                    "<dhcp><range start='192.168.123.10' end='192.168.123.50'/></dhcp>"
                    "</ip></network>",
                    0644);
    Virsh("net-create /tmp/ephemera-test-shared.xml");
    LibvirtTest::SetUp();
  }
  void TearDown() override {
    LibvirtTest::TearDown();
    Virsh(std::string("net-destroy ") + kNetwork);
  }
  // The shared network is the operator's (here, the test's): it stays.
  void ExpectNothingLeftInLibvirt() {
    EXPECT_THAT(Virsh("list --all --name"), Not(HasSubstr("-")));
    WaitForTeardowns();
    EXPECT_THAT(Virsh("nwfilter-list"), Not(HasSubstr("ephemera-")));
    EXPECT_THAT(Virsh("net-list --name"), HasSubstr(kNetwork));
    std::error_code ec;
    EXPECT_TRUE(fs::is_empty(state_.path() / "state" / "libvirt", ec));
    EXPECT_TRUE(List().empty());
    EXPECT_THAT(Output({"ss", "-Htlpn", "( sport >= :10000 and sport <= :15000 )"}),
                Not(HasSubstr("ephemerad")));
  }
  std::string NetworkMode() const override { return ", libvirt_network_mode: shared"; }
  std::string NetworkConfig() const override { return std::string(", bridge: ") + kNetwork; }
};

TEST_F(SharedLibvirtTest, SandboxesOnTheSharedBridgeCannotReachEachOther) {
  json a = Create();
  json b = Create();
  for (const json* s : {&a, &b}) {
    EXPECT_EQ((*s)["network"], kNetwork);
    EXPECT_THAT((*s)["guest_ip"].get<std::string>(), ::testing::StartsWith("192.168.123."));
    Login(*s);
  }
  SshSession client(a["host"], a["port"].get<std::uint16_t>(), a["username"], 30s);
  ASSERT_TRUE(client.AuthenticateWithPassword(a["password"]));
  const std::string sudo = "echo '" + a["password"].get<std::string>() + "' | sudo -S -p '' ";
  CommandResult gw = client.Execute(sudo + "busybox ping -c 1 -W 3 192.168.123.1", 30s);
  EXPECT_EQ(gw.exit_status, 0) << gw.out << gw.err;
  const std::string other = b["guest_ip"];
  CommandResult ping = client.Execute(sudo + "busybox ping -c 1 -W 2 " + other, 30s);
  EXPECT_NE(ping.exit_status, 0) << "reached the other sandbox: " << ping.out;
  CommandResult tcp = client.Execute(sudo + "busybox nc -w 2 " + other + " 22 </dev/null", 30s);
  EXPECT_THAT(tcp.out, Not(HasSubstr("SSH-"))) << "TCP reached the other sandbox";
  EXPECT_THAT(Virsh("nwfilter-list"), HasSubstr("ephemera-" + a["id"].get<std::string>()));
  // No agent on a shared bridge: exec goes over SSH with the daemon's own key.
  ProcessResult r = RunProcess(Cli({"exec", a["id"], "--", "id", "-un"}), 60s);
  EXPECT_EQ(r.out, a["username"].get<std::string>() + "\n") << r.err;
  Output(Cli({"destroy", a["id"]}));
  Output(Cli({"destroy", b["id"]}));
  ExpectNothingLeftInLibvirt();
}

// The project's live ISO as an Anweddol ISO domain: machine pc, the ISO as
// an IDE CD-ROM, the endpoint's well-known password retired by provisioning.
class LibvirtLiveIsoTest : public LibvirtTest {
 protected:
  std::string ExtraConfig() const override { return test::LiveIsoConfig(); }
};

TEST_F(LibvirtLiveIsoTest, TheLiveIsoBootsAsAnIdeCdromOnMachinePcAndIsProvisioned) {
  json s = Create({"--image", test::kLiveImage});
  test::ExpectLiveIsoSandbox(s);
  const std::string xml = Virsh("dumpxml " + s["id"].get<std::string>());
  EXPECT_THAT(xml, HasSubstr("machine='pc"));
  EXPECT_THAT(xml, HasSubstr("device='cdrom'"));
  EXPECT_THAT(xml, HasSubstr("bus='ide'"));
  EXPECT_THAT(xml, HasSubstr(s["iso_path"].get<std::string>()));
  json shown = json::parse(Output(Cli({"show", "--json", s["id"]})));
  EXPECT_EQ(shown["running"], true);
  EXPECT_EQ(shown["driver"], "libvirt");
  Output(Cli({"destroy", s["id"]}));
  ExpectNothingLeftInLibvirt();
}

TEST(LibvirtStartTest, BadUrisAndAMissingNetworkStopTheStartWithTheirName) {
  test::TempDir dir;
  ::chmod(dir.path().c_str(), 0711);
  auto start = [&](const std::string& vm_extra, const std::string& extra) {
    WriteFileAtomic(dir.path() / "config.yaml",
                    "state_dir: " + (dir.path() / "state").string() +
                        "\nsocket: " + (dir.path() / "api.sock").string() +
                        "\nvm: {accel: tcg, driver: libvirt" + vm_extra + "}\n" + extra,
                    0600);
    return RunProcess({EPHEMERAD, "--config", (dir.path() / "config.yaml").string()}, 60s);
  };
  ProcessResult unknown = start(", libvirt_uri: 'bogus:///system'", "");
  EXPECT_NE(unknown.exit_code, 0);
  EXPECT_THAT(unknown.err, HasSubstr("bogus:///system"));
  ProcessResult unreachable = start(", libvirt_uri: 'qemu+tcp://127.0.0.1:1/system'", "");
  EXPECT_NE(unreachable.exit_code, 0);
  EXPECT_THAT(unreachable.err, HasSubstr("qemu+tcp://127.0.0.1:1/system"));
  ProcessResult missing = start(", libvirt_network_mode: shared", "network: {bridge: nosuchnet}\n");
  EXPECT_NE(missing.exit_code, 0);
  EXPECT_THAT(missing.err, HasSubstr("network.bridge"));
  EXPECT_THAT(missing.err, HasSubstr("nosuchnet"));
  EXPECT_THAT(Virsh("list --all --name"), IsEmpty());
}

}  // namespace
}  // namespace ephemera
