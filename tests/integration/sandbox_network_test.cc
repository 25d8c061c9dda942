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
#include "provision/provisioner.h"
#include "provision/ssh_session.h"
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
  // A guest provisioned per the guest contract: its user may sudo (ping
  // and nc as root see exactly what the firewall lets through).
  struct Ready {
    Guest guest;
    ProvisionResult provisioned;
  };

  Ready BootAndProvision() {
    EndpointKey key = EndpointKey::Generate();
    Guest g = Boot(key.AuthorizedKeysLine());
    ProvisionRequest request;
    request.host = g.network.subnet.guest().str();  // DHCP gave it this address
    request.endpoint.key = &key;
    request.sshd_timeout = 120s;
    return Ready{g, Provision(request)};
  }

  // Runs `command` as root in the guest, logged in through the forwarded port.
  CommandResult AsRoot(const Ready& r, const std::string& command) {
    SshSession session("127.0.0.1", r.guest.network.host_port, r.provisioned.credentials.username,
                       30s);
    if (!session.AuthenticateWithPassword(r.provisioned.credentials.password)) {
      ADD_FAILURE() << "login refused";
      return {};
    }
    return session.Execute(
        "echo '" + r.provisioned.credentials.password + "' | sudo -S -p '' sh -c '" + command + "'",
        60s);
  }
};

TEST_F(SandboxNetworkTest, TwoGuestsAreAddressedIsolatedAndReachable) {
  Ready ra = BootAndProvision();
  Ready rb = BootAndProvision();
  const Guest& a = ra.guest;
  const Guest& b = rb.guest;

  for (const Ready* r : {&ra, &rb}) {
    const SandboxNetwork& n = r->guest.network;
    SCOPED_TRACE(n.tap);
    // DHCP: the guest has exactly its /30 address and the default route.
    CommandResult addr = AsRoot(*r, "busybox ip -4 -o addr show; busybox ip route");
    EXPECT_THAT(addr.out, HasSubstr(n.subnet.guest().str() + "/30"));
    EXPECT_THAT(addr.out, HasSubstr("default via " + n.subnet.gateway().str()));
    // Its gateway answers.
    CommandResult gw = AsRoot(*r, "busybox ping -c 1 -W 3 " + n.subnet.gateway().str());
    EXPECT_EQ(gw.exit_status, 0) << gw.out << gw.err;
  }
  // Neither reaches the other, by ping or TCP, nor the other's gateway.
  for (auto [from, to] : {std::pair{&ra, &rb}, std::pair{&rb, &ra}}) {
    const std::string other = to->guest.network.subnet.guest().str();
    CommandResult ping = AsRoot(*from, "busybox ping -c 1 -W 2 " + other);
    EXPECT_NE(ping.exit_status, 0) << "reached " << other << ": " << ping.out;
    CommandResult tcp = AsRoot(*from, "busybox nc -w 2 " + other + " 22 </dev/null");
    EXPECT_THAT(tcp.out, Not(HasSubstr("SSH-"))) << "TCP reached " << other;
    CommandResult other_gw =
        AsRoot(*from, "busybox ping -c 1 -W 2 " + to->guest.network.subnet.gateway().str());
    EXPECT_NE(other_gw.exit_status, 0);
    // Nor any other service of the host on its own gateway.
    CommandResult host_tcp =
        AsRoot(*from, "busybox nc -w 2 " + from->guest.network.subnet.gateway().str() + " " +
                          std::to_string(from->guest.network.host_port) + " </dev/null");
    EXPECT_THAT(host_tcp.out, Not(HasSubstr("SSH-")));
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
