// The network part against the real kernel, dnsmasq and nftables, inside a
// private network namespace (no guests: see sandbox_network_test for those).
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>

#include "core/error.h"
#include "core/fs.h"
#include "core/netdev.h"
#include "core/subprocess.h"
#include "core/tracked_process.h"
#include "net/dhcp_server.h"
#include "net/network_manager.h"
#include "net/tap.h"
#include "unit/test_files.h"

namespace ephemera {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::Not;

NetworkConfig TestNetworkConfig() {
  NetworkConfig config;
  config.pool = Ipv4Cidr::Parse("172.16.0.0/16");
  config.forward_address = "127.0.0.1";
  config.forward_port_first = 10000;
  config.forward_port_last = 10100;
  return config;
}

std::string Output(const std::vector<std::string>& argv) { return RunChecked(argv).out; }

bool Listening(std::uint16_t port) {
  return Output({"ss", "-Htln", "sport", "= :" + std::to_string(port)}).find("LISTEN") !=
         std::string::npos;
}

class NetworkTest : public ::testing::Test {
 protected:
  void TearDown() override {
    manager_.reset();
    NetworkManager cleanup(state_.path(), TestNetworkConfig());
    cleanup.Reconcile();
    cleanup.TeardownAll();
  }
  test::TempDir state_;
  std::unique_ptr<NetworkManager> manager_ =
      std::make_unique<NetworkManager>(state_.path(), TestNetworkConfig());
};

TEST_F(NetworkTest, SetupBuildsEveryPieceAndTeardownRemovesThem) {
  SandboxId id = SandboxId::Generate();
  SandboxNetwork n = manager_->Setup(id);
  EXPECT_EQ(n.tap, TapNameFor(id));
  EXPECT_TRUE(IsTunTapDevice(n.tap));
  EXPECT_THAT(Output({"ip", "-4", "-o", "addr", "show", "dev", n.tap}),
              HasSubstr(n.subnet.gateway().str() + "/30"));
  EXPECT_THAT(Output({"ip", "-o", "link", "show", "dev", n.tap}), HasSubstr(",UP"));
  EXPECT_EQ(ReadFile("/proc/sys/net/ipv4/conf/" + n.tap + "/rp_filter"), "1\n");
  // dnsmasq: DHCP bound to this TAP only, no DNS port at all.
  std::string udp = Output({"ss", "-Hulpn"});
  EXPECT_THAT(udp, HasSubstr("%" + n.tap + ":67"));
  EXPECT_THAT(udp, Not(HasSubstr(":53 ")));
  EXPECT_THAT(Output({"ss", "-Htlpn"}), Not(HasSubstr("dnsmasq")));
  // nftables: the sandbox's elements are in the table.
  std::string table = Output({"nft", "list", "table", "inet", "ephemera"});
  EXPECT_THAT(table, HasSubstr("\"" + n.tap + "\" . " + n.subnet.guest().str()));
  // The forward listens on loopback within the range.
  EXPECT_GE(n.host_port, 10000);
  EXPECT_LE(n.host_port, 10100);
  EXPECT_TRUE(Listening(n.host_port));

  manager_->Teardown(id);
  manager_->Teardown(id);  // idempotent
  EXPECT_FALSE(InterfaceExists(n.tap));
  EXPECT_THAT(Output({"ss", "-Hulpn"}), Not(HasSubstr("dnsmasq")));
  EXPECT_THAT(Output({"nft", "list", "table", "inet", "ephemera"}), Not(HasSubstr(n.tap)));
  EXPECT_FALSE(Listening(n.host_port));
  EXPECT_FALSE(fs::exists(state_.path() / "net" / id.str()));
  EXPECT_FALSE(manager_->Find(id));
}

TEST_F(NetworkTest, TwoSandboxesGetDistinctSubnetsTapsAndPorts) {
  SandboxNetwork a = manager_->Setup(SandboxId::Generate());
  SandboxNetwork b = manager_->Setup(SandboxId::Generate());
  EXPECT_NE(a.subnet, b.subnet);
  EXPECT_NE(a.tap, b.tap);
  EXPECT_NE(a.host_port, b.host_port);
  EXPECT_NE(a.mac, b.mac);
  manager_->Teardown(a.id);
  // b is untouched by a's teardown.
  EXPECT_TRUE(IsTunTapDevice(b.tap));
  EXPECT_TRUE(Listening(b.host_port));
  EXPECT_THAT(Output({"nft", "list", "table", "inet", "ephemera"}), HasSubstr(b.tap));
}

TEST_F(NetworkTest, DerivedSubnetIsStableAndCollisionsFailCleanly) {
  SandboxNetwork a = manager_->Setup(SandboxId::Generate(), DerivedSubnet{"run-7", "vm-a"});
  EXPECT_EQ(a.tap, TapNameForRun("run-7", "vm-a"));
  EXPECT_TRUE(IsTunTapDevice(a.tap));
  manager_->Teardown(a.id);
  EXPECT_FALSE(InterfaceExists(a.tap));
  SandboxNetwork again = manager_->Setup(SandboxId::Generate(), DerivedSubnet{"run-7", "vm-a"});
  EXPECT_EQ(again.subnet, a.subnet);
  EXPECT_EQ(again.tap, a.tap);
  SandboxId loser = SandboxId::Generate();
  try {
    manager_->Setup(loser, DerivedSubnet{"run-7", "vm-a"});
    ADD_FAILURE() << "two networks share run-7/vm-a's subnet";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kAlreadyExists);
    EXPECT_THAT(e.what(), HasSubstr(again.id.str()));  // names the holder
  }
  EXPECT_TRUE(IsTunTapDevice(again.tap));  // the holder's TAP is untouched
  EXPECT_FALSE(fs::exists(state_.path() / "net" / loser.str()));

  // After a crash the derived TAP is restored, not taken for a stray, and
  // a teardown from the record alone (a fresh manager) removes it.
  manager_.reset();
  manager_ = std::make_unique<NetworkManager>(state_.path(), TestNetworkConfig());
  NetworkReconcileReport report = manager_->Reconcile();
  EXPECT_THAT(report.removed, ::testing::Not(::testing::Contains("TAP " + again.tap)));
  EXPECT_TRUE(IsTunTapDevice(again.tap));
  manager_.reset();
  manager_ = std::make_unique<NetworkManager>(state_.path(), TestNetworkConfig());
  manager_->Teardown(again.id);
  EXPECT_FALSE(InterfaceExists(again.tap));
}

TEST_F(NetworkTest, TapNameClashIsRefusedAndNothingIsLeft) {
  SandboxId id = SandboxId::Generate();
  CreateTap(TapNameFor(id), Ipv4::Parse("10.200.0.1"));  // someone else's interface
  try {
    manager_->Setup(id);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kAlreadyExists);
    EXPECT_THAT(e.what(), HasSubstr("clash"));
  }
  EXPECT_FALSE(fs::exists(state_.path() / "net" / id.str()));
  EXPECT_FALSE(manager_->Find(id));
  DeleteTap(TapNameFor(id));
}

TEST_F(NetworkTest, MissingDnsmasqIsNamed) {
  NetworkConfig config = TestNetworkConfig();
  config.dnsmasq_binary = "dnsmasq-not-installed";
  try {
    NetworkManager broken(state_.path(), config);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kUnavailable);
    EXPECT_THAT(e.what(), HasSubstr("dnsmasq-not-installed"));
    EXPECT_THAT(e.what(), HasSubstr("network.dnsmasq_binary"));
  }
}

TEST_F(NetworkTest, ReconcileAfterACrashRestoresRecordedAndRemovesStray) {
  SandboxNetwork n = manager_->Setup(SandboxId::Generate());
  // The daemon dies: its forwarder goes with it; dnsmasq is killed too.
  manager_.reset();
  EXPECT_FALSE(Listening(n.host_port));
  auto dnsmasq = TrackedProcess::Find(state_.path() / "net" / n.id.str() / "dnsmasq.pid",
                                      state_.path() / "net" / n.id.str());
  ASSERT_TRUE(dnsmasq);
  dnsmasq->Kill();
  ASSERT_TRUE(dnsmasq->WaitExit(std::chrono::seconds(5)));
  // A TAP that no record explains, and a half-written record.
  CreateTap("ephdeadbeef", Ipv4::Parse("10.201.0.1"));
  SandboxId torn = SandboxId::Generate();
  fs::create_directories(state_.path() / "net" / torn.str());
  test::WriteBytes(state_.path() / "net" / torn.str() / "network.json", "{\"id\":");

  manager_ = std::make_unique<NetworkManager>(state_.path(), TestNetworkConfig());
  NetworkReconcileReport report = manager_->Reconcile();
  EXPECT_THAT(report.restored, ::testing::Contains("dnsmasq for " + n.tap));
  EXPECT_THAT(report.removed, ::testing::Contains("TAP ephdeadbeef"));
  EXPECT_FALSE(InterfaceExists("ephdeadbeef"));
  EXPECT_FALSE(fs::exists(state_.path() / "net" / torn.str()));
  ASSERT_TRUE(manager_->Find(n.id));
  EXPECT_EQ(manager_->Find(n.id)->host_port, n.host_port);  // same port again
  EXPECT_TRUE(Listening(n.host_port));
  EXPECT_TRUE(IsTunTapDevice(n.tap));
  EXPECT_THAT(Output({"ss", "-Hulpn"}), HasSubstr("%" + n.tap + ":67"));
  EXPECT_THAT(Output({"nft", "list", "table", "inet", "ephemera"}), HasSubstr(n.tap));
}

TEST_F(NetworkTest, TeardownAllRemovesTheTable) {
  manager_->Setup(SandboxId::Generate());
  manager_->TeardownAll();
  EXPECT_TRUE(ListEphemeraTaps().empty());
  EXPECT_FALSE(RunProcess({"nft", "list", "table", "inet", "ephemera"}).ok());
}

}  // namespace
}  // namespace ephemera
