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
#include "integration/guest_fixture.h"
#include "net/network_manager.h"
#include "net/tap.h"
#include "vm/console.h"
#include "vm/qemu/qemu_driver.h"

namespace ephemera {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using ::testing::HasSubstr;
using ::testing::Not;

class SandboxNetworkTest : public test::GuestFixture {
 protected:
  void SetUp() override {
    GuestFixture::SetUp();
    key_ = state_.path() / "id_ed25519";
    RunChecked({"ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key_.string()});
  }

  Guest Boot() { return GuestFixture::Boot(ReadFile(key_.string() + ".pub")); }

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
