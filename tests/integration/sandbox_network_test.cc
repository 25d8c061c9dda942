// Two real guests on their own sandbox networks, inside a private network
// namespace: DHCP gives each its address, each reaches its gateway, neither
// reaches the other, the host reaches each sshd through its forwarded port,
// and teardown leaves nothing.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <thread>

#include "core/error.h"
#include "core/fs.h"
#include "core/subprocess.h"
#include "guest/provisioner.h"
#include "guest/ssh_session.h"
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
  // A guest provisioned per the guest contract: its user may sudo (ping
  // and nc as root see exactly what the firewall lets through).
  struct Ready {
    Guest guest;
    ProvisionResult provisioned;
  };

  Ready BootAndProvision() {
    SshKeyPair key = SshKeyPair::Generate();
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

// With outbound NAT on, a guest reaches a public address but not the
// host's LAN, the cloud metadata address, or a private range, unless that
// range is allowed. The "outside" is a network namespace of the test's own,
// behind a veth pair: every packet stays on this machine.
class NatSandboxNetworkTest : public SandboxNetworkTest {
 protected:
  static constexpr const char* kOutside = "eph-test-outside";

  NetworkConfig Network() const override {
    NetworkConfig net = GuestFixture::Network();
    net.outbound_nat = true;
    net.nat_allow = {Ipv4Cidr::Parse("10.99.0.0/24")};
    return net;
  }

  void SetUp() override {
    // The outside: 192.168.77.2 on the LAN this host is on (192.168.77.1),
    // and behind it a "public" 203.0.113.2, a metadata service at
    // 169.254.169.254 and a private 10.99.0.2, each serving HTTP.
    RunChecked({"ip", "netns", "add", kOutside});
    RunChecked({"ip", "link", "add", "ephlan0", "type", "veth", "peer", "name", "ephlan1"});
    RunChecked({"ip", "link", "set", "ephlan1", "netns", kOutside});
    RunChecked({"ip", "addr", "add", "192.168.77.1/24", "dev", "ephlan0"});
    RunChecked({"ip", "link", "set", "ephlan0", "up"});
    for (const char* route : {"203.0.113.2", "169.254.169.254", "10.99.0.2"}) {
      RunChecked({"ip", "route", "add", route, "via", "192.168.77.2"});
    }
    auto outside = [](std::vector<std::string> args) {
      args.insert(args.begin(), {"ip", "netns", "exec", kOutside});
      RunChecked(args);
    };
    outside({"ip", "addr", "add", "192.168.77.2/24", "dev", "ephlan1"});
    outside({"ip", "link", "set", "ephlan1", "up"});
    outside({"ip", "link", "set", "lo", "up"});
    for (const char* a : {"203.0.113.2/32", "169.254.169.254/32", "10.99.0.2/32"}) {
      outside({"ip", "addr", "add", a, "dev", "lo"});
    }
    web_ = ::fork();
    if (web_ == 0) {
      ::execlp("ip", "ip", "netns", "exec", kOutside, "python3", "-m", "http.server", "8080",
               "--bind", "0.0.0.0", "--directory", "/", nullptr);
      ::_exit(127);
    }
    GuestFixture::SetUp();
  }

  void TearDown() override {
    GuestFixture::TearDown();
    if (web_ > 0) {
      ::kill(web_, SIGTERM);
      ::waitpid(web_, nullptr, 0);
    }
    RunProcess({"ip", "link", "del", "ephlan0"});
    RunProcess({"ip", "netns", "del", kOutside});
  }

  pid_t web_ = -1;
};

TEST_F(NatSandboxNetworkTest, NatReachesPublicAddressesOnlyUnlessAllowed) {
  Ready r = BootAndProvision();
  // True when an HTTP request from the guest gets an answer.
  auto fetch = [&](const std::string& address) {
    CommandResult r2 =
        AsRoot(r, "printf \"GET / HTTP/1.0\\r\\n\\r\\n\" | busybox nc -w 3 " + address + " 8080");
    return r2.out.find("HTTP/1.0 200") != std::string::npos;
  };
  EXPECT_TRUE(fetch("203.0.113.2")) << "a public address is not reached through NAT";
  EXPECT_TRUE(fetch("10.99.0.2")) << "an allowed private range is not reached";
  EXPECT_FALSE(fetch("169.254.169.254")) << "the cloud metadata address is reachable";
  EXPECT_FALSE(fetch("192.168.77.2")) << "the host's LAN is reachable";
}

}  // namespace
}  // namespace ephemera
