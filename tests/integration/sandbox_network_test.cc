// Two real guests on their own sandbox networks, inside a private network
// namespace: DHCP gives each its address, each reaches its gateway, neither
// reaches the other, the host reaches each sshd through its forwarded port,
// and teardown leaves nothing.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <thread>

#include "core/error.h"
#include "core/fs.h"
#include "core/subprocess.h"
#include "image/catalog.h"
#include "net/network_manager.h"
#include "net/tap.h"
#include "unit/test_files.h"
#include "vm/console.h"
#include "vm/qemu/qemu_driver.h"

namespace ephemera {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using ::testing::HasSubstr;
using ::testing::Not;

fs::path ImageDir() {
  const char* dir = std::getenv("EPHEMERA_IMAGE_DIR");
  return dir ? dir : "/var/cache/ephemera/images";
}

class SandboxNetworkTest : public ::testing::Test {
 protected:
  void SetUp() override {
    NetworkConfig net;
    net.forward_address = "127.0.0.1";
    networks_ = std::make_unique<NetworkManager>(state_.path(), net);
    driver_ = std::make_unique<QemuDriver>(
        QemuDriverOptions{state_.path(), VmConfig{}, AccelChoice{Accel::kTcg, "tests use TCG"}});
    image_ = ImageCatalog(ImageDir()).Get("default");
    key_ = state_.path() / "id_ed25519";
    RunChecked({"ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key_.string()});
  }

  void TearDown() override {
    for (const auto& id : driver_->List()) driver_->Destroy(id);
    networks_->TeardownAll();
  }

  struct Guest {
    SandboxNetwork network;
    VmInfo vm;
  };

  Guest Boot() {
    SandboxId id = SandboxId::Generate();
    SandboxNetwork network = networks_->Setup(id);
    VmSpec spec(id);
    spec.image = image_;
    spec.nic = NicSpec{network.tap, network.mac};
    spec.guest_files = {
        {"opt/ephemera/endpoint_authorized_keys", ReadFile(key_.string() + ".pub")}};
    return Guest{network, driver_->Start(spec)};
  }

  void WaitReady(const Guest& g) {
    WaitForConsoleMarker(g.vm.serial_log, "EPHEMERA_SSHD_READY", 120s,
                         [&] { return driver_->Inspect(g.network.id).state != VmState::kShutoff; });
  }

  // Runs `command` in the guest as endpoint, through the forwarded port.
  ProcessResult Ssh(const Guest& g, const std::string& command) {
    return RunProcess(
        {"ssh", "-i", key_.string(), "-p", std::to_string(g.network.host_port), "-o",
         "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
         "-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR", "endpoint@127.0.0.1", command},
        60s);
  }

  // The guest's sshd is up before DHCP may have finished: retry briefly.
  ProcessResult SshUntil(const Guest& g, const std::string& command, const std::string& expect) {
    ProcessResult r;
    for (int i = 0; i < 30; ++i) {
      r = Ssh(g, command);
      if (r.ok() && r.out.find(expect) != std::string::npos) break;
      std::this_thread::sleep_for(500ms);
    }
    return r;
  }

  test::TempDir state_;
  std::unique_ptr<NetworkManager> networks_;
  std::unique_ptr<QemuDriver> driver_;
  Image image_;
  fs::path key_;
};

TEST_F(SandboxNetworkTest, TwoGuestsAreAddressedIsolatedAndReachable) {
  Guest a = Boot();
  Guest b = Boot();
  WaitReady(a);
  WaitReady(b);

  for (const Guest* g : {&a, &b}) {
    SCOPED_TRACE(g->network.tap);
    // DHCP: the guest has exactly its /30 address and the default route.
    ProcessResult addr = SshUntil(*g, "busybox ip -4 -o addr show; busybox ip route",
                                  g->network.subnet.guest().str());
    ASSERT_TRUE(addr.ok()) << addr.err << ConsoleTail(g->vm.serial_log);
    EXPECT_THAT(addr.out, HasSubstr(g->network.subnet.guest().str() + "/30"));
    EXPECT_THAT(addr.out, HasSubstr("default via " + g->network.subnet.gateway().str()));
    // Its gateway answers.
    ProcessResult gw = Ssh(*g, "busybox ping -c 1 -W 3 " + g->network.subnet.gateway().str());
    EXPECT_TRUE(gw.ok()) << gw.out << gw.err;
  }
  // Neither reaches the other, by ping or TCP.
  for (auto [from, to] : {std::pair{&a, &b}, std::pair{&b, &a}}) {
    const std::string other = to->network.subnet.guest().str();
    ProcessResult ping = Ssh(*from, "busybox ping -c 1 -W 2 " + other);
    EXPECT_FALSE(ping.ok()) << "reached " << other << ": " << ping.out;
    ProcessResult tcp = Ssh(*from, "busybox nc -w 2 " + other + " 22 </dev/null");
    EXPECT_THAT(tcp.out, Not(HasSubstr("SSH-"))) << "TCP reached " << other;
    // Nor the other sandbox's gateway, nor any host port but DHCP.
    ProcessResult other_gw =
        Ssh(*from, "busybox ping -c 1 -W 2 " + to->network.subnet.gateway().str());
    EXPECT_FALSE(other_gw.ok());
  }

  for (const Guest* g : {&a, &b}) {
    driver_->Destroy(g->network.id);
    networks_->Teardown(g->network.id);
  }
  // Nothing is left: no TAP, dnsmasq, rule element, listener or file.
  EXPECT_TRUE(ListEphemeraTaps().empty());
  EXPECT_THAT(RunChecked({"ss", "-Hulpn"}).out, Not(HasSubstr("dnsmasq")));
  EXPECT_THAT(RunChecked({"ss", "-Htln"}).out, Not(HasSubstr("LISTEN")));
  std::string table = RunChecked({"nft", "list", "table", "inet", "ephemera"}).out;
  EXPECT_THAT(table, Not(HasSubstr(a.network.tap)));
  EXPECT_THAT(table, Not(HasSubstr(b.network.tap)));
  EXPECT_TRUE(fs::is_empty(state_.path() / "net"));
  EXPECT_TRUE(fs::is_empty(state_.path() / "vms"));
}

}  // namespace
}  // namespace ephemera
