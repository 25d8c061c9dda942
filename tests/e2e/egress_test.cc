// Egress rules on a real guest (QEMU under TCG, the default image): an
// allow-list by domain name reaches that name's address and nothing else,
// its names resolve only through the host, and a sandbox without rules
// reaches the same "internet" (so the block is the rule's, not the
// network's). The internet is a namespace the test makes, behind a LAN:
// 203.0.113.10 (example.test), 203.0.113.11 (other.test) and a resolver at
// 203.0.113.53, each answering HTTP on 8080.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <sstream>
#include <string>
#include <thread>

#include "core/base64.h"
#include "core/ipv4.h"
#include "core/subprocess.h"
#include "e2e/daemon_fixture.h"
#include "e2e/http_client.h"

namespace ephemera {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;
using ::testing::HasSubstr;

constexpr const char* kOutside = "eph-test-internet";

class EgressTest : public test::DaemonTest {
 protected:
  std::string NetworkConfig() const override {
    return ", outbound_nat: true, dns_servers: [203.0.113.53]";
  }

  void SetUp() override {
    RunProcess({"ip", "netns", "del", kOutside});
    RunChecked({"ip", "netns", "add", kOutside});
    RunChecked({"ip", "link", "add", "inetlan0", "type", "veth", "peer", "name", "inetlan1"});
    RunChecked({"ip", "link", "set", "inetlan1", "netns", kOutside});
    RunChecked({"ip", "addr", "add", "192.168.77.1/24", "dev", "inetlan0"});
    RunChecked({"ip", "link", "set", "inetlan0", "up"});
    RunChecked({"ip", "route", "add", "203.0.113.0/24", "via", "192.168.77.2"});
    Outside({"ip", "addr", "add", "192.168.77.2/24", "dev", "inetlan1"});
    Outside({"ip", "link", "set", "inetlan1", "up"});
    Outside({"ip", "link", "set", "lo", "up"});
    for (const char* a : {"203.0.113.10/32", "203.0.113.11/32", "203.0.113.53/32"}) {
      Outside({"ip", "addr", "add", a, "dev", "lo"});
    }
    Outside({"dnsmasq", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
             "--listen-address=203.0.113.53", "--bind-interfaces",
             "--address=/example.test/203.0.113.10", "--address=/other.test/203.0.113.11",
             "--pid-file=" + (state_.path() / "internet-dns.pid").string()});
    web_ = ::fork();
    if (web_ == 0) {
      ::execlp("ip", "ip", "netns", "exec", kOutside, "python3", "-m", "http.server", "8080",
               "--bind", "0.0.0.0", "--directory", "/", nullptr);
      ::_exit(127);
    }
    DaemonTest::SetUp();
  }

  void TearDown() override {
    DaemonTest::TearDown();
    if (web_ > 0) {
      ::kill(web_, SIGTERM);
      ::waitpid(web_, nullptr, 0);
    }
    // The resolver dies with its namespace's last process: end it first.
    RunProcess({"sh", "-c", std::string("kill $(ip netns pids ") + kOutside + ") 2>/dev/null"});
    RunProcess({"ip", "link", "del", "inetlan0"});
    RunProcess({"ip", "netns", "del", kOutside});
  }

  static void Outside(std::vector<std::string> args) {
    args.insert(args.begin(), {"ip", "netns", "exec", kOutside});
    RunChecked(args);
  }

  // A command in the guest through the daemon's exec API: its stdout and
  // exit code (-1 when the timeout killed it).
  std::pair<std::string, int> InGuest(const std::string& id, const std::string& script) {
    json request = {{"argv", {"bash", "-c", script}}, {"timeout_seconds", 4}};
    test::CurlResult r =
        test::Curl({"--unix-socket", socket_.string(), "-X", "POST", "--data-binary",
                    request.dump(), "http://localhost/v1/sandboxes/" + id + "/exec"});
    EXPECT_EQ(r.status, 200) << r.body;
    std::string out;
    int code = -1;
    std::istringstream lines(r.body);
    for (std::string line; std::getline(lines, line);) {
      json event = json::parse(line);
      if (event.contains("stdout")) out += *Base64Decode(event["stdout"].get<std::string>());
      if (event.contains("exit") && event["exit"].contains("code")) {
        code = event["exit"]["code"].get<int>();
      }
    }
    return {out, code};
  }

  // True when an HTTP request from the guest to `host` gets an answer.
  bool Fetch(const std::string& id, const std::string& host) {
    auto [out, code] =
        InGuest(id, "exec 3<>/dev/tcp/" + host +
                        "/8080 && printf 'GET / HTTP/1.0\\r\\n\\r\\n' >&3 && head -c 12 <&3");
    return code == 0 && out.find("HTTP/1.0 200") != std::string::npos;
  }

  pid_t web_ = -1;
};

TEST_F(EgressTest, AnAllowListedNameIsReachedAndNothingElseIs) {
  // Wait for the internet's web server (python starts in a moment).
  for (int i = 0; i < 100; ++i) {
    if (RunProcess({"ip", "netns", "exec", kOutside, "sh", "-c", "exec 3<>/dev/tcp/127.0.0.1/8080"})
            .ok()) {
      break;
    }
    std::this_thread::sleep_for(100ms);
  }
  json listed = Create({"--allow", "example.test"});
  json open = Create({});
  EXPECT_EQ(listed["egress"]["mode"], "allow");
  EXPECT_EQ(listed["egress"]["allow"], json::array({"example.test"}));
  EXPECT_EQ(open["egress"]["mode"], "all");
  const std::string id = listed["id"], open_id = open["id"];

  // The guest's resolver is its gateway, which answers the listed name...
  const Ipv4 gateway{Ipv4::Parse(listed["guest_ip"].get<std::string>()).value - 1};
  EXPECT_EQ(InGuest(id, "grep ^nameserver /etc/resolv.conf").first,
            "nameserver " + gateway.str() + "\n");
  EXPECT_TRUE(Fetch(id, "example.test")) << DaemonLog();
  // ...and no other name; the other address and the internet's resolver
  // itself stay closed (another resolver cannot be asked instead).
  EXPECT_FALSE(Fetch(id, "other.test"));
  EXPECT_FALSE(Fetch(id, "203.0.113.11"));
  EXPECT_FALSE(Fetch(id, "203.0.113.53"));
  // The same question to its own resolver and to the internet's: only the
  // first is answered.
  EXPECT_THAT(InGuest(id, "busybox nslookup example.test " + gateway.str() + " 2>&1").first,
              HasSubstr("203.0.113.10"));
  EXPECT_THAT(InGuest(id, "busybox nslookup example.test 203.0.113.53 2>&1").first,
              ::testing::Not(HasSubstr("203.0.113.10")));

  // Without rules, the same internet is there.
  EXPECT_TRUE(Fetch(open_id, "203.0.113.11"));
  EXPECT_TRUE(Fetch(open_id, "203.0.113.10"));

  // Bad egress gets a clear answer and makes nothing.
  ProcessResult bad = RunProcess(Cli({"create", "--allow", "not a name"}), 60s);
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_THAT(bad.err, HasSubstr("egress allow entry"));
  EXPECT_EQ(List().size(), 2u);
}

}  // namespace
}  // namespace ephemera
