// The guest agent (agent/): every field check of the identity request, the
// line framing, the hello/token state machine, and an identity applied to a
// temporary tree made from the default image's /etc (tests run as root:
// the new account's files are chowned).
#include <arpa/inet.h>
#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <sstream>

#include "agent/accounts.h"
#include "agent/channel.h"
#include "agent/error.h"
#include "agent/files.h"
#include "agent/identity.h"
#include "agent/netlink.h"
#include "agent/protocol.h"
#include "agent/sshd.h"
#include "core/base64.h"
#include "unit/test_files.h"

namespace ephemera::agent {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using ::testing::HasSubstr;
using ::testing::StartsWith;

constexpr char kToken[] = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

std::string SshString(std::string_view value) {
  uint32_t n = static_cast<uint32_t>(value.size());
  std::string out{static_cast<char>(n >> 24), static_cast<char>(n >> 16), static_cast<char>(n >> 8),
                  static_cast<char>(n)};
  return out + std::string(value);
}

// An unencrypted OpenSSH ed25519 key in the file format (the private part
// is filler: only the clear header is checked), and its public line.
struct TestKey {
  std::string private_text;
  std::string public_line;
};

TestKey MakeKey(char seed = 'k', std::string_view cipher = "none") {
  std::string public_blob = SshString("ssh-ed25519") + SshString(std::string(32, seed));
  std::string blob = std::string("openssh-key-v1\0", 15) + SshString(cipher) + SshString("none") +
                     SshString("") + std::string("\0\0\0\1", 4) + SshString(public_blob) +
                     SshString(std::string(64, 'p'));
  std::string body = Base64Encode(blob);
  std::string text = "-----BEGIN OPENSSH PRIVATE KEY-----\n";
  for (size_t i = 0; i < body.size(); i += 70) text += body.substr(i, 70) + "\n";
  text += "-----END OPENSSH PRIVATE KEY-----\n";
  return {text, "ssh-ed25519 " + Base64Encode(public_blob)};
}

json ValidIdentity() {
  TestKey key = MakeKey();
  return json{
      {"id", 3},
      {"op", "identity"},
      {"hostname", "sbx-1"},
      {"time_ns", 1733400000000000000},
      {"entropy", Base64Encode(std::string(64, 'r'))},
      {"ssh_host_key", key.private_text},
      {"ssh_host_key_public", key.public_line},
      {"user", "alice"},
      {"password_hash", "$6$salt$abcdefghijklmnopqrstuvwxyzABCDEFGHIJ./0123456789"},
      {"authorized_keys", {"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOr alice@laptop"}},
      {"ssh_port", 2222},
      {"network",
       {{"mac", "52:54:00:12:34:56"},
        {"address", "10.0.0.2"},
        {"prefix", 24},
        {"gateway", "10.0.0.1"},
        {"dns", {"10.0.0.1"}}}},
  };
}

// The message of the FieldError that ParseIdentity throws; "" if none.
std::string ParseError(const json& request) {
  try {
    ParseIdentity(request);
  } catch (const FieldError& e) {
    return e.what();
  }
  return "";
}

TEST(AgentProtocolTest, ValidIdentityParses) {
  Identity identity = ParseIdentity(ValidIdentity());
  EXPECT_EQ(identity.hostname, "sbx-1");
  EXPECT_EQ(identity.time_ns, 1733400000000000000);
  EXPECT_EQ(identity.entropy, std::string(64, 'r'));
  EXPECT_EQ(identity.user, "alice");
  EXPECT_EQ(identity.ssh_port, 2222);
  ASSERT_EQ(identity.authorized_keys.size(), 1u);
  ASSERT_TRUE(identity.network);
  EXPECT_EQ(identity.network->mac[0], 0x52);
  EXPECT_EQ(identity.network->mac[5], 0x56);
  EXPECT_EQ(identity.network->prefix, 24);
  EXPECT_TRUE(identity.network->gateway);
  EXPECT_EQ(identity.network->dns, std::vector<std::string>{"10.0.0.1"});
}

TEST(AgentProtocolTest, OptionalFieldsMayBeAbsentOrNull) {
  json request = ValidIdentity();
  request.erase("authorized_keys");
  request["network"] = nullptr;
  Identity identity = ParseIdentity(request);
  EXPECT_TRUE(identity.authorized_keys.empty());
  EXPECT_FALSE(identity.network);
  request = ValidIdentity();
  request["network"].erase("gateway");
  request["network"].erase("dns");
  identity = ParseIdentity(request);
  EXPECT_FALSE(identity.network->gateway);
  EXPECT_TRUE(identity.network->dns.empty());
}

struct BadField {
  std::string pointer;  // JSON pointer to the field changed
  json value;           // its bad value (null pointer: the field is removed)
  std::string error;    // the start of the error: the field's name
};

void PrintTo(const BadField& bad, std::ostream* out) {
  *out << bad.pointer << " = " << bad.value.dump();
}

class AgentFieldTest : public ::testing::TestWithParam<BadField> {};

TEST_P(AgentFieldTest, IsRefusedNamingTheField) {
  const BadField& bad = GetParam();
  json request = ValidIdentity();
  json::json_pointer pointer(bad.pointer);
  if (bad.value.is_discarded()) {
    request[pointer.parent_pointer()].erase(pointer.back());
  } else {
    request[pointer] = bad.value;
  }
  EXPECT_THAT(ParseError(request), StartsWith(bad.error + ": "));
}

json Removed() { return json::value_t::discarded; }

std::string LongString(size_t n, char c = 'a') { return std::string(n, c); }

INSTANTIATE_TEST_SUITE_P(
    EveryCheck, AgentFieldTest,
    ::testing::Values(
        BadField{"/hostname", Removed(), "hostname"}, BadField{"/hostname", 7, "hostname"},
        BadField{"/hostname", "", "hostname"}, BadField{"/hostname", LongString(64), "hostname"},
        BadField{"/hostname", "-sbx", "hostname"}, BadField{"/hostname", "Sbx", "hostname"},
        BadField{"/hostname", "sbx.local", "hostname"}, BadField{"/time_ns", Removed(), "time_ns"},
        BadField{"/time_ns", 0, "time_ns"}, BadField{"/time_ns", -5, "time_ns"},
        BadField{"/time_ns", 1.5, "time_ns"},
        BadField{"/time_ns", "1733400000000000000", "time_ns"},
        BadField{"/time_ns", 18446744073709551615u, "time_ns"},
        BadField{"/entropy", Removed(), "entropy"}, BadField{"/entropy", "not base64!", "entropy"},
        BadField{"/entropy", Base64Encode(std::string(31, 'r')), "entropy"},
        BadField{"/entropy", Base64Encode(std::string(513, 'r')), "entropy"},
        BadField{"/ssh_host_key", Removed(), "ssh_host_key"},
        BadField{"/ssh_host_key", "ssh-ed25519 AAAA", "ssh_host_key"},
        BadField{"/ssh_host_key", MakeKey().private_text.substr(0, 100), "ssh_host_key"},
        BadField{"/ssh_host_key",
                 "-----BEGIN OPENSSH PRIVATE KEY-----\nnot*base64\n-----END OPENSSH PRIVATE "
                 "KEY-----\n",
                 "ssh_host_key"},
        BadField{"/ssh_host_key",
                 "-----BEGIN OPENSSH PRIVATE KEY-----\n" + LongString(8200, 'A') +
                     "\n-----END OPENSSH PRIVATE KEY-----\n",
                 "ssh_host_key"},
        BadField{"/ssh_host_key", MakeKey('k', "aes256-ctr").private_text, "ssh_host_key"},
        BadField{"/ssh_host_key_public", Removed(), "ssh_host_key_public"},
        BadField{"/ssh_host_key_public", MakeKey().public_line + "\n", "ssh_host_key_public"},
        BadField{"/ssh_host_key_public", MakeKey().public_line + " comment", "ssh_host_key_public"},
        BadField{"/ssh_host_key_public", "ssh-rsa " + MakeKey().public_line.substr(12),
                 "ssh_host_key_public"},
        BadField{"/ssh_host_key_public", MakeKey('x').public_line, "ssh_host_key_public"},
        BadField{"/user", Removed(), "user"}, BadField{"/user", "", "user"},
        BadField{"/user", "Alice", "user"}, BadField{"/user", "1alice", "user"},
        BadField{"/user", "al:ice", "user"}, BadField{"/user", LongString(33), "user"},
        BadField{"/password_hash", Removed(), "password_hash"},
        BadField{"/password_hash", "plain", "password_hash"},
        BadField{"/password_hash", "$6$salt$has:h", "password_hash"},
        BadField{"/password_hash", "$6$salt$ha\nsh", "password_hash"},
        BadField{"/password_hash", "$" + LongString(512), "password_hash"},
        BadField{"/authorized_keys", "ssh-ed25519 AAAA", "authorized_keys"},
        BadField{"/authorized_keys/0", 5, "authorized_keys[0]"},
        BadField{"/authorized_keys/0", "", "authorized_keys[0]"},
        BadField{"/authorized_keys/0", "ssh-ed25519 AAAA\nssh-rsa BBBB", "authorized_keys[0]"},
        BadField{"/authorized_keys/0", "ssh-ed25519 AAAA\x01", "authorized_keys[0]"},
        BadField{"/authorized_keys/0", LongString(8193), "authorized_keys[0]"},
        BadField{"/authorized_keys", json(9, LongString(8000)), "authorized_keys"},
        BadField{"/ssh_port", Removed(), "ssh_port"}, BadField{"/ssh_port", 0, "ssh_port"},
        BadField{"/ssh_port", 65536, "ssh_port"}, BadField{"/ssh_port", "22", "ssh_port"},
        BadField{"/network", "10.0.0.2/24", "network"},
        BadField{"/network/mac", Removed(), "network.mac"},
        BadField{"/network/mac", "52:54:00:12:34", "network.mac"},
        BadField{"/network/mac", "52-54-00-12-34-56", "network.mac"},
        BadField{"/network/mac", "53:54:00:12:34:56", "network.mac"},
        BadField{"/network/mac", "00:00:00:00:00:00", "network.mac"},
        BadField{"/network/address", Removed(), "network.address"},
        BadField{"/network/address", "10.0.0", "network.address"},
        BadField{"/network/address", "10.0.0.256", "network.address"},
        BadField{"/network/prefix", Removed(), "network.prefix"},
        BadField{"/network/prefix", 0, "network.prefix"},
        BadField{"/network/prefix", 33, "network.prefix"},
        BadField{"/network/gateway", "10.0.1.1", "network.gateway"},
        BadField{"/network/gateway", "10.0.0.2", "network.gateway"},
        BadField{"/network/gateway", "gateway", "network.gateway"},
        BadField{"/network/dns", "10.0.0.1", "network.dns"},
        BadField{"/network/dns", json::array({"1.1.1.1", "1.0.0.1", "8.8.8.8", "8.8.4.4"}),
                 "network.dns"},
        BadField{"/network/dns/0", "one.one.one.one", "network.dns[0]"},
        BadField{"/network/vlan", 5, "network.vlan"}, BadField{"/shell", "/bin/sh", "shell"}));

TEST(AgentProtocolTest, Base64IsStrict) {
  for (std::string data : {"", "a", "ab", "abc", "abcd", "\xff\x00\x10 binary"}) {
    EXPECT_EQ(DecodeBase64(Base64Encode(data)), data);
  }
  EXPECT_FALSE(DecodeBase64("YWJj\n"));
  EXPECT_FALSE(DecodeBase64("YWJ"));
  EXPECT_FALSE(DecodeBase64("Y=Jj"));
  EXPECT_FALSE(DecodeBase64("YW-j"));
}

TEST(AgentFramingTest, SplitsLinesAcrossReads) {
  LineFramer framer;
  EXPECT_TRUE(framer.Feed("{\"id\":1,").empty());
  auto frames = framer.Feed("\"op\":\"ping\"}\n\n{\"id\":2}\n{\"id\"");
  ASSERT_EQ(frames.size(), 2u);
  EXPECT_EQ(frames[0].line, R"({"id":1,"op":"ping"})");
  EXPECT_EQ(frames[1].line, R"({"id":2})");
  frames = framer.Feed(":3}\n");
  ASSERT_EQ(frames.size(), 1u);
  EXPECT_EQ(frames[0].line, R"({"id":3})");
}

TEST(AgentFramingTest, OverlongLineIsReportedOnceAndSkippedToItsEnd) {
  LineFramer framer(16);
  auto frames = framer.Feed(std::string(10, 'x'));
  EXPECT_TRUE(frames.empty());
  frames = framer.Feed(std::string(10, 'x'));  // 20 > 16
  ASSERT_EQ(frames.size(), 1u);
  EXPECT_TRUE(frames[0].overlong);
  EXPECT_TRUE(framer.Feed(std::string(100, 'y')).empty());  // still the same line
  frames = framer.Feed("zz\n{\"id\":1}\n");
  ASSERT_EQ(frames.size(), 1u);
  EXPECT_FALSE(frames[0].overlong);
  EXPECT_EQ(frames[0].line, R"({"id":1})");
  // Exactly the limit is fine.
  frames = framer.Feed(std::string(16, 'a') + "\n");
  ASSERT_EQ(frames.size(), 1u);
  EXPECT_FALSE(frames[0].overlong);
  EXPECT_EQ(json::parse(Session::OverlongAnswer())["error"],
            "request: line longer than 1048576 bytes");
}

TEST(AgentFramingTest, ResetDropsAPartialLine) {
  LineFramer framer;
  framer.Feed("{\"id\":1,\"op\":\"pi");
  framer.Reset();
  auto frames = framer.Feed("{\"id\":2,\"op\":\"ping\"}\n");
  ASSERT_EQ(frames.size(), 1u);
  EXPECT_EQ(frames[0].line, R"({"id":2,"op":"ping"})");
}

// What the identity did to the running system, in order.
class FakeSystem : public System {
 public:
  void AddEntropy(const std::string& bytes) override {
    calls.push_back("entropy " + std::to_string(bytes.size()));
  }
  void SetClock(int64_t ns) override { calls.push_back("clock " + std::to_string(ns)); }
  void SetHostname(const std::string& name) override { calls.push_back("hostname " + name); }
  void ConfigureNetwork(const Network& network) override {
    calls.push_back("network /" + std::to_string(network.prefix));
  }
  void StartDhcp() override { calls.push_back("dhcp"); }
  void AwaitDhcp() override { calls.push_back("dhcp done"); }
  void StartSshd(uint16_t port) override {
    if (sshd_fails) throw std::runtime_error("exited with status 255");
    calls.push_back("sshd " + std::to_string(port));
    sshd_port = port;
  }
  bool AwaitSshd(uint16_t port) override { return sshd_port == port; }
  std::vector<std::string> calls;
  int sshd_port = -1;
  bool sshd_fails = false;
};

// A root tree with the default image's /etc, modes and owners as
// images/default/lib/rootfs.sh sets them.
class AgentTreeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root (chown of the new account's files)";
    root_ = dir_.path() / "root";
    fs::create_directories(root_);
    fs::copy(fs::path(AGENT_TEST_IMAGE_ROOTFS) / "etc", root_ / "etc", fs::copy_options::recursive);
    fs::create_directories(root_ / "etc/sudoers.d");
    fs::create_directories(root_ / "etc/ephemera");
    fs::create_directories(root_ / "home/endpoint/.ssh");
    test::WriteBytes(root_ / "home/endpoint/.ssh/authorized_keys", "ssh-ed25519 AAAA endpoint\n");
    for (const char* file : {"etc/shadow", "etc/gshadow"}) {
      ASSERT_EQ(::chown((root_ / file).c_str(), 0, 42), 0);
      ::chmod((root_ / file).c_str(), 0640);
    }
    ::chmod((root_ / "etc/sudoers").c_str(), 0440);
  }
  std::string Get(const std::string& path) { return ReadFile((root_ / path).string()); }
  struct stat Stat(const std::string& path) {
    struct stat st {};
    EXPECT_EQ(::lstat((root_ / path).c_str(), &st), 0) << path;
    return st;
  }
  // The answer to `request` from a session that said hello.
  json Ask(Session& session, const json& request) {
    json hello =
        json::parse(session.Answer(json{{"id", 1}, {"op", "hello"}, {"token", kToken}}.dump()));
    EXPECT_EQ(hello["ok"], true);
    return json::parse(session.Answer(request.dump()));
  }

  test::TempDir dir_;
  fs::path root_;
  FakeSystem system_;
};

TEST_F(AgentTreeTest, IdentityMakesTheSetupScriptsEndState) {
  GuestMachine machine(Root(root_.string()), system_);
  Session session(kToken, machine);
  json answer = Ask(session, ValidIdentity());
  ASSERT_EQ(answer["ok"], true) << answer.dump();
  EXPECT_EQ(answer["id"], 3);
  EXPECT_EQ(answer["host_key"], MakeKey().public_line);
  EXPECT_EQ(answer["ssh_port"], 2222);
  for (const char* step : {"rng", "clock", "hostname", "host_key", "accounts", "network", "sshd"}) {
    EXPECT_TRUE(answer["steps_ms"].contains(step)) << step;
  }
  EXPECT_EQ(system_.calls,
            (std::vector<std::string>{"entropy 64", "clock 1733400000000000000", "hostname sbx-1",
                                      "network /24", "sshd 2222"}));

  // The accounts: the next uid after endpoint's 1000, the same gid.
  EXPECT_THAT(Get("etc/passwd"), HasSubstr("\nalice:x:1001:1001::/home/alice:/bin/bash\n"));
  EXPECT_THAT(
      Get("etc/passwd"),
      HasSubstr("\nendpoint:x:1000:1000:ephemera endpoint:/home/endpoint:/usr/sbin/nologin\n"));
  EXPECT_THAT(Get("etc/passwd"), StartsWith("root:x:0:0:root:/root:/bin/bash\n"));
  EXPECT_THAT(Get("etc/shadow"),
              HasSubstr("\nalice:$6$salt$abcdefghijklmnopqrstuvwxyzABCDEFGHIJ./0123456789:20062:0:"
                        "99999:7:::\n"));
  EXPECT_THAT(Get("etc/shadow"), HasSubstr("\nendpoint:!:19000:0:99999:7:::\n"));
  EXPECT_THAT(Get("etc/group"), HasSubstr("\nalice:x:1001:\n"));
  EXPECT_THAT(Get("etc/gshadow"), HasSubstr("\nalice:!::\n"));
  // Modes and owners kept.
  EXPECT_EQ(Stat("etc/shadow").st_mode & 07777, 0640u);
  EXPECT_EQ(Stat("etc/shadow").st_gid, 42u);
  EXPECT_EQ(Stat("etc/gshadow").st_mode & 07777, 0640u);
  EXPECT_EQ(Stat("etc/passwd").st_mode & 07777, 0644u);

  struct stat home = Stat("home/alice");
  EXPECT_TRUE(S_ISDIR(home.st_mode));
  EXPECT_EQ(home.st_mode & 07777, 0750u);
  EXPECT_EQ(home.st_uid, 1001u);
  EXPECT_EQ(home.st_gid, 1001u);
  EXPECT_EQ(Stat("home/alice/.ssh").st_mode & 07777, 0700u);
  EXPECT_EQ(Stat("home/alice/.ssh").st_uid, 1001u);
  EXPECT_EQ(Get("home/alice/.ssh/authorized_keys"),
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOr alice@laptop\n");
  EXPECT_EQ(Stat("home/alice/.ssh/authorized_keys").st_mode & 07777, 0600u);
  EXPECT_EQ(Stat("home/alice/.ssh/authorized_keys").st_uid, 1001u);

  EXPECT_EQ(Get("etc/sudoers.d/alice"), "alice ALL=(ALL:ALL) ALL\n");
  EXPECT_EQ(Stat("etc/sudoers.d/alice").st_mode & 07777, 0440u);
  EXPECT_EQ(Stat("etc/sudoers.d/alice").st_uid, 0u);

  // The endpoint is retired.
  EXPECT_FALSE(fs::exists(root_ / "home/endpoint/.ssh/authorized_keys"));
  EXPECT_TRUE(fs::exists(root_ / "etc/ephemera/endpoint-retired"));

  // sshd: the client's port and user, every other line kept.
  std::string config = Get("etc/ssh/sshd_config");
  EXPECT_THAT(config, HasSubstr("\nPort 2222\nAllowUsers alice\n"));
  EXPECT_THAT(config, Not(HasSubstr("Port 22\n")));
  EXPECT_THAT(config, Not(HasSubstr("endpoint\n")));
  EXPECT_THAT(config, HasSubstr("\nHostKey /etc/ssh/ssh_host_ed25519_key\n"));
  EXPECT_THAT(config, HasSubstr("\nPidFile /run/sshd.pid\n"));
  std::string original = ReadFile(std::string(AGENT_TEST_IMAGE_ROOTFS) + "/etc/ssh/sshd_config");
  EXPECT_EQ(std::count(config.begin(), config.end(), '\n'),
            std::count(original.begin(), original.end(), '\n'));

  // Host key, hostname, resolver.
  EXPECT_EQ(Get("etc/ssh/ssh_host_ed25519_key"), MakeKey().private_text);
  EXPECT_EQ(Stat("etc/ssh/ssh_host_ed25519_key").st_mode & 07777, 0600u);
  EXPECT_EQ(Get("etc/ssh/ssh_host_ed25519_key.pub"), MakeKey().public_line + "\n");
  EXPECT_EQ(Get("etc/hostname"), "sbx-1\n");
  EXPECT_THAT(Get("etc/hosts"), HasSubstr("127.0.1.1\tsbx-1\n"));
  EXPECT_THAT(Get("etc/hosts"), HasSubstr("127.0.0.1\tlocalhost\n"));
  EXPECT_THAT(Get("etc/resolv.conf"), HasSubstr("\nnameserver 10.0.0.1\n"));

  // Nothing staged is left behind.
  for (const auto& entry : fs::recursive_directory_iterator(root_)) {
    EXPECT_THAT(entry.path().string(), Not(HasSubstr(".ephemera-new")));
  }

  // The clock again (a resumed machine): any number of times.
  system_.calls.clear();
  EXPECT_EQ(Ask(session, json{{"id", 7}, {"op", "clock"}, {"time_ns", 42}})["ok"], true);
  EXPECT_EQ(system_.calls, std::vector<std::string>{"clock 42"});

  // Once per machine, also on a new connection.
  session.HostDisconnected();
  json again = ValidIdentity();
  again["user"] = "bob";
  answer = Ask(session, again);
  EXPECT_EQ(answer["ok"], false);
  EXPECT_EQ(answer["error"], "identity already applied");
  EXPECT_THAT(Get("etc/passwd"), Not(HasSubstr("bob")));
}

TEST_F(AgentTreeTest, WithoutNetworkTheNicAsksDhcpAfterSshdStarts) {
  GuestMachine machine(Root(root_.string()), system_);
  Session session(kToken, machine);
  json request = ValidIdentity();
  request.erase("network");
  request.erase("authorized_keys");
  json answer = Ask(session, request);
  ASSERT_EQ(answer["ok"], true) << answer.dump();
  EXPECT_EQ(system_.calls,
            (std::vector<std::string>{"entropy 64", "clock 1733400000000000000", "hostname sbx-1",
                                      "dhcp", "sshd 2222", "dhcp done"}));
  EXPECT_FALSE(fs::exists(root_ / "home/alice/.ssh"));
  EXPECT_EQ(Get("etc/resolv.conf"),
            ReadFile(std::string(AGENT_TEST_IMAGE_ROOTFS) + "/etc/resolv.conf"));
}

// A template's preparation: port 2222 (ValidIdentity's), a throwaway key.
json Preparation(const std::string& allow_users) {
  const TestKey throwaway = MakeKey('t');
  return json{{"id", 2},
              {"op", "prepare"},
              {"ssh_host_key", throwaway.private_text},
              {"ssh_host_key_public", throwaway.public_line},
              {"ssh_port", 2222},
              {"allow_users", allow_users}};
}

// A snapshot template: sshd started before any identity, so that a clone's
// identity for a user it admits neither starts nor reloads it.
TEST_F(AgentTreeTest, APreparedSshdServesTheIdentityWithoutARestart) {
  GuestMachine machine(Root(root_.string()), system_);
  Session session(kToken, machine);
  json prepare = Preparation("al*");
  json answer = Ask(session, prepare);
  ASSERT_EQ(answer["ok"], true) << answer.dump();
  EXPECT_EQ(system_.calls, std::vector<std::string>{"sshd 2222"});
  EXPECT_THAT(Get("etc/ssh/sshd_config"), HasSubstr("\nAllowUsers al*\n"));
  EXPECT_EQ(Get("etc/ssh/ssh_host_ed25519_key.pub"), MakeKey('t').public_line + "\n");
  EXPECT_EQ(Ask(session, prepare)["error"], "already prepared");

  json identity = ValidIdentity();  // user alice, port 2222
  answer = Ask(session, identity);
  ASSERT_EQ(answer["ok"], true) << answer.dump();
  EXPECT_EQ(std::count(system_.calls.begin(), system_.calls.end(), "sshd 2222"), 1);
  EXPECT_THAT(Get("etc/ssh/sshd_config"), HasSubstr("\nAllowUsers al*\n"));
  EXPECT_EQ(Get("etc/ssh/ssh_host_ed25519_key.pub"),
            identity["ssh_host_key_public"].get<std::string>() + "\n");
  EXPECT_EQ(Ask(session, prepare)["error"], "identity already applied");
}

TEST_F(AgentTreeTest, AnIdentityThePreparedSshdDoesNotAdmitReloadsIt) {
  GuestMachine machine(Root(root_.string()), system_);
  Session session(kToken, machine);
  ASSERT_EQ(Ask(session, Preparation("user_*"))["ok"], true);
  json answer = Ask(session, ValidIdentity());
  ASSERT_EQ(answer["ok"], true) << answer.dump();
  EXPECT_EQ(std::count(system_.calls.begin(), system_.calls.end(), "sshd 2222"), 2);
  EXPECT_THAT(Get("etc/ssh/sshd_config"), HasSubstr("\nAllowUsers alice\n"));
}

TEST(AgentProtocolTest, APreparationIsChecked) {
  json request = Preparation("user_*");
  EXPECT_EQ(ParsePreparation(request).allow_users, "user_*");
  for (const char* bad : {"", "user name", "*,root", "ROOT"}) {
    request["allow_users"] = bad;
    EXPECT_THROW(ParsePreparation(request), FieldError) << bad;
  }
  request["allow_users"] = "user_*";
  request["user"] = "x";
  EXPECT_THROW(ParsePreparation(request), FieldError);
}

TEST_F(AgentTreeTest, ExistingUsersAndGroupsAreRefusedBeforeAnyChange) {
  GuestMachine machine(Root(root_.string()), system_);
  Session session(kToken, machine);
  std::string passwd = Get("etc/passwd");
  for (const char* taken : {"root", "endpoint", "sshd", "nobody", "sudo", "shadow"}) {
    json request = ValidIdentity();
    request["user"] = taken;
    json answer = Ask(session, request);
    EXPECT_EQ(answer["ok"], false) << taken;
    EXPECT_THAT(answer["error"].get<std::string>(), StartsWith("user: ")) << taken;
  }
  EXPECT_TRUE(system_.calls.empty());
  EXPECT_EQ(Get("etc/passwd"), passwd);
  EXPECT_EQ(Get("etc/hostname"), "ephemera\n");
  // Refused before any change: a corrected identity still goes through.
  EXPECT_EQ(Ask(session, ValidIdentity())["ok"], true);
}

TEST_F(AgentTreeTest, AFailedStepIsNamedAndTheIdentityStaysUsed) {
  system_.sshd_fails = true;
  GuestMachine machine(Root(root_.string()), system_);
  Session session(kToken, machine);
  json answer = Ask(session, ValidIdentity());
  EXPECT_EQ(answer["ok"], false);
  EXPECT_EQ(answer["error"], "sshd: exited with status 255");
  EXPECT_THAT(Get("etc/passwd"), HasSubstr("alice"));  // what was done stays done
  EXPECT_EQ(Ask(session, ValidIdentity())["error"], "identity already applied");
}

TEST_F(AgentTreeTest, NextIdsSkipATakenGid) {
  test::WriteBytes(root_ / "etc/group", Get("etc/group") + "docker:x:1001:\nbig:x:1500:\n");
  AccountFiles files = ReadAccountFiles(Root(root_.string()));
  AccountIds ids = NextIds(files);
  EXPECT_EQ(ids.uid, 1001u);
  EXPECT_EQ(ids.gid, 1501u);
}

// A machine that only the clock request may reach.
class ClockOnlyMachine : public Machine {
 public:
  nlohmann::ordered_json ApplyIdentity(const Identity&) override {
    ADD_FAILURE() << "identity applied";
    return {};
  }
  void SetClock(int64_t ns) override { clock_ns = ns; }
  int64_t clock_ns = 0;
};

json AnswerOf(Session& session, const std::string& line) {
  return json::parse(session.Answer(line));
}

void SayHello(Session& session) {
  EXPECT_EQ(AnswerOf(session, json{{"id", 1}, {"op", "hello"}, {"token", kToken}}.dump())["ok"],
            true);
}

TEST(AgentSessionTest, HelloWithTheTokenComesFirst) {
  ClockOnlyMachine machine;
  Session session(kToken, machine);
  for (const char* op : {"ping", "identity", "clock", "reboot"}) {
    json answer = AnswerOf(session, json{{"id", 5}, {"op", op}}.dump());
    EXPECT_EQ(answer, (json{{"id", 5}, {"ok", false}, {"error", "not authenticated"}})) << op;
  }
  std::string wrong = kToken;
  wrong[63] = '0';
  for (json token : {json(wrong), json(std::string(kToken).substr(1)), json(5), json()}) {
    json hello{{"id", 6}, {"op", "hello"}};
    if (!token.is_null()) hello["token"] = token;
    json answer = AnswerOf(session, hello.dump());
    EXPECT_EQ(answer["ok"], false) << token;
    EXPECT_EQ(answer["error"], "not authenticated");
    EXPECT_FALSE(session.authenticated());
  }
  EXPECT_EQ(AnswerOf(session, json{{"id", 7}, {"op", "hello"}, {"token", kToken}}.dump()),
            (json{{"id", 7}, {"ok", true}, {"protocol", 3}}));
  EXPECT_EQ(AnswerOf(session, R"({"id":8,"op":"ping"})"), (json{{"id", 8}, {"ok", true}}));
  EXPECT_EQ(AnswerOf(session, R"({"id":9,"op":"reboot"})")["error"],
            "op: unknown operation \"reboot\"");
  // The host went away: the next connection says hello again.
  session.HostDisconnected();
  EXPECT_EQ(AnswerOf(session, R"({"id":10,"op":"ping"})")["error"], "not authenticated");
  // A failed hello ends an authenticated connection's rights, too.
  AnswerOf(session, json{{"id", 11}, {"op", "hello"}, {"token", kToken}}.dump());
  AnswerOf(session, json{{"id", 12}, {"op", "hello"}, {"token", wrong}}.dump());
  EXPECT_EQ(AnswerOf(session, R"({"id":13,"op":"ping"})")["error"], "not authenticated");
}

TEST(AgentSessionTest, ClockIsSetAgainAfterAResume) {
  ClockOnlyMachine machine;
  Session session(kToken, machine);
  SayHello(session);
  EXPECT_EQ(AnswerOf(session, R"({"id":2,"op":"clock","time_ns":1733400000123456789})"),
            (json{{"id", 2}, {"ok", true}}));
  EXPECT_EQ(machine.clock_ns, 1733400000123456789);
  EXPECT_EQ(AnswerOf(session, R"({"id":3,"op":"clock","time_ns":0})")["error"],
            "time_ns: must be from 1 to 9223372036854775807");
  EXPECT_EQ(AnswerOf(session, R"({"id":4,"op":"clock"})")["error"], "time_ns: missing");
  EXPECT_EQ(AnswerOf(session, R"({"id":5,"op":"clock","time_ns":5,"zone":"UTC"})")["error"],
            "zone: unknown field");
  EXPECT_EQ(machine.clock_ns, 1733400000123456789);
}

TEST(AgentSessionTest, MalformedRequestsAreAnsweredWithoutId) {
  ClockOnlyMachine machine;
  Session session(kToken, machine);
  EXPECT_EQ(AnswerOf(session, "{\"id\":1,\"op\":\"pi"),
            (json{{"id", nullptr}, {"ok", false}, {"error", "request: not valid JSON"}}));
  EXPECT_EQ(AnswerOf(session, "[1,2]")["error"], "request: must be a JSON object");
  EXPECT_EQ(AnswerOf(session, R"({"op":"ping"})")["error"], "id: must be an unsigned integer");
  EXPECT_EQ(AnswerOf(session, R"({"id":-1,"op":"ping"})")["id"], nullptr);
  EXPECT_EQ(AnswerOf(session, R"({"id":"1","op":"ping"})")["id"], nullptr);
  EXPECT_EQ(AnswerOf(session, R"({"id":4})"),
            (json{{"id", 4}, {"ok", false}, {"error", "op: must be a string"}}));
  // The answers keep the spec's order: id, ok, then the rest.
  EXPECT_EQ(session.Answer(R"({"id":4,"op":"ping"})"),
            R"({"id":4,"ok":false,"error":"not authenticated"})");
}

// A clone restored from a snapshot was booted with its template's token.
class IdentityOnlyMachine : public Machine {
 public:
  nlohmann::ordered_json ApplyIdentity(const Identity&) override { return {{"applied", true}}; }
  void SetClock(int64_t) override {}
};

TEST(AgentSessionTest, AnIdentityMayReplaceTheTokenForEveryLaterConnection) {
  IdentityOnlyMachine machine;
  Session session(kToken, machine);
  SayHello(session);
  json request = ValidIdentity();
  request["id"] = 2;
  request["agent_token"] = "ABC";
  EXPECT_EQ(AnswerOf(session, request.dump())["error"],
            "agent_token: must be 64 lowercase hex characters");
  const std::string own(64, 'e');
  request["agent_token"] = own;
  EXPECT_EQ(AnswerOf(session, request.dump())["ok"], true);
  session.HostDisconnected();
  EXPECT_EQ(AnswerOf(session, json{{"id", 3}, {"op", "hello"}, {"token", kToken}}.dump())["error"],
            "not authenticated");
  EXPECT_EQ(AnswerOf(session, json{{"id", 4}, {"op", "hello"}, {"token", own}}.dump())["ok"], true);
}

TEST(AgentSessionTest, AnInvalidIdentityChangesNothingAndMayBeSentAgain) {
  ClockOnlyMachine machine;
  Session session(kToken, machine);
  SayHello(session);
  json request = ValidIdentity();
  request["ssh_port"] = 0;
  EXPECT_EQ(AnswerOf(session, request.dump()), (json{{"id", 3},
                                                     {"ok", false},
                                                     {"error", "ssh_port: must be from 1 to 65535"},
                                                     {"code", "invalid"}}));
  request["user"] = "ROOT";
  EXPECT_EQ(AnswerOf(session, request.dump())["error"],
            "user: must match ^[a-z_][a-z0-9_-]{0,31}$");
}

TEST(AgentTextTest, SshdConfigKeepsEveryOtherLine) {
  EXPECT_EQ(RewriteSshdConfig("# Port 1\nPort 22\n  Port 23\nX11Forwarding no\n", 2222, "bob"),
            "# Port 1\nPort 2222\nX11Forwarding no\nAllowUsers bob\n");
  EXPECT_EQ(RewriteSshdConfig("AllowUsers a b\nPorts 1\n", 22, "bob"),
            "AllowUsers bob\nPorts 1\nPort 22\n");
}

TEST(AgentTextTest, HostsNamesTheMachine) {
  EXPECT_EQ(RewriteHosts("127.0.0.1\tlocalhost\n127.0.1.1\told\n127.0.1.10 other\n", "new"),
            "127.0.0.1\tlocalhost\n127.0.1.1\tnew\n127.0.1.10 other\n");
  EXPECT_EQ(RewriteHosts("127.0.0.1 localhost", "new"), "127.0.0.1 localhost\n127.0.1.1\tnew\n");
}

TEST(AgentTextTest, ListeningSocketsOnAPort) {
  constexpr char kTcp[] =
      "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  "
      "timeout inode\n"
      "   0: 00000000:08AE 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        "
      "0 4242 1 0000000000000000 100 0 0 10 0\n"
      "   1: 0100007F:08AE 0100007F:D3C2 01 00000000:00000000 00:00000000 00000000     0        "
      "0 4343 1 0000000000000000 20 4 30 10 -1\n"
      "   2: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        "
      "0 4444 1 0000000000000000 100 0 0 10 0\n";
  EXPECT_EQ(ListeningInodes(kTcp, 2222), (std::set<uint64_t>{4242}));
  EXPECT_EQ(ListeningInodes(kTcp, 22), (std::set<uint64_t>{4444}));
  EXPECT_TRUE(ListeningInodes(kTcp, 2223).empty());
}

class AgentSshdTest : public ::testing::Test {
 protected:
  void SetUp() override {
    options_.proc_net = dir_.path().string();
    options_.pid_file = (dir_.path() / "sshd.pid").string();
    options_.privsep_dir = (dir_.path() / "privsep").string();
    options_.binary = (dir_.path() / "sshd").string();
    options_.timeout = std::chrono::milliseconds(300);
    test::WriteBytes(dir_.path() / "tcp", "header\n");
  }
  void FakeSshd(const std::string& script) {
    test::WriteBytes(options_.binary, "#!/bin/sh\n" + script);
    ::chmod(options_.binary.c_str(), 0755);
  }
  std::string Error() {
    try {
      StartSshd(2222, options_);
    } catch (const std::exception& e) {
      return e.what();
    }
    return "";
  }
  test::TempDir dir_;
  SshdOptions options_;
};

TEST_F(AgentSshdTest, ReturnsOnceANewSocketListens) {
  // Like sshd: the launcher returns, the daemon listens a moment later.
  FakeSshd("(sleep 0.1; printf 'h\\n 0: 00000000:08AE 00000000:0000 0A 0:0 0:0 0 0 0 77 1\\n' >" +
           options_.proc_net + "/tcp) &\n");
  EXPECT_EQ(Error(), "");
  EXPECT_TRUE(fs::is_directory(options_.privsep_dir));
}

TEST_F(AgentSshdTest, ALauncherThatFailsIsReportedWithItsLastLine) {
  FakeSshd("echo 'starting' >&2\necho 'sshd: no hostkeys available -- exiting.' >&2\nexit 1\n");
  EXPECT_EQ(Error(),
            options_.binary + " exited with status 1: sshd: no hostkeys available -- exiting.");
}

TEST_F(AgentSshdTest, NoListenerInTimeIsAnError) {
  FakeSshd("exit 0\n");
  EXPECT_THAT(Error(), StartsWith("not listening on port 2222 after 0 s"));
}

TEST(AgentChannelTest, FindsThePortByName) {
  test::TempDir dir;
  for (const auto& [port, name] : {std::pair{"vport0p1", "org.qemu.guest_agent.0\n"},
                                   std::pair{"vport0p2", "org.ephemera.agent.0\n"}}) {
    fs::create_directories(dir.path() / port);
    test::WriteBytes(dir.path() / port / "name", name);
  }
  EXPECT_EQ(FindPort(kChannelName, dir.path().string()), "/dev/vport0p2");
  EXPECT_EQ(FindPort("org.other", dir.path().string()), "");
  EXPECT_EQ(FindPort(kChannelName, (dir.path() / "absent").string()), "");
}

TEST(AgentFilesTest, ReplaceKeepsModeAndOwnerOfTheOriginal) {
  test::TempDir dir;
  std::string path = (dir.path() / "f").string();
  test::WriteBytes(path, "old");
  ::chmod(path.c_str(), 0604);
  ReplaceFile(path, "new", {0600, ::geteuid(), ::getegid()});
  EXPECT_EQ(ReadFile(path), "new");
  struct stat st {};
  ::stat(path.c_str(), &st);
  EXPECT_EQ(st.st_mode & 07777, 0604u);
  ReplaceFile(path, "forced", {0600, ::geteuid(), ::getegid()}, Keep::kNone);
  ::stat(path.c_str(), &st);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  EXPECT_EQ(Root("/x/")("/etc/passwd"), "/x/etc/passwd");
  EXPECT_EQ(Root("/")("/etc/passwd"), "/etc/passwd");
}

// Runs `body` in a child process with its own network and mount namespaces
// (sysfs mounted again, so that /sys/class/net shows that network). The
// child's answer: "" for success, "SKIP ..." when the namespaces cannot be
// made, or what went wrong.
std::string InPrivateNetwork(const std::function<std::string(const std::string&)>& body) {
  test::TempDir dir;
  int fds[2];
  if (::pipe(fds) != 0) return "pipe failed";
  pid_t pid = ::fork();
  if (pid == 0) {
    ::close(fds[0]);
    std::string result;
    std::string sys = (dir.path() / "sys").string();
    if (::unshare(CLONE_NEWNET | CLONE_NEWNS) != 0 ||
        ::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0 ||
        ::mkdir(sys.c_str(), 0755) != 0 ||
        ::mount("sysfs", sys.c_str(), "sysfs", 0, nullptr) != 0) {
      result = std::string("SKIP no private network namespace: ") + std::strerror(errno);
    } else {
      try {
        result = body(sys + "/class/net");
      } catch (const std::exception& e) {
        result = e.what();
      }
    }
    [[maybe_unused]] ssize_t n = ::write(fds[1], result.data(), result.size());
    ::_exit(0);
  }
  ::close(fds[1]);
  std::string result;
  char buffer[1024];
  for (ssize_t n; (n = ::read(fds[0], buffer, sizeof buffer)) > 0;) result.append(buffer, n);
  ::close(fds[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? result : "child died";
}

// The interface's IPv4 configuration as the kernel reports it.
std::string Describe(const std::string& name) {
  int sock = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  ifreq request{};
  std::strncpy(request.ifr_name, name.c_str(), IFNAMSIZ - 1);
  std::string out;
  char text[INET_ADDRSTRLEN];
  if (::ioctl(sock, SIOCGIFFLAGS, &request) == 0) {
    out += (request.ifr_flags & IFF_UP) ? "up" : "down";
  }
  if (::ioctl(sock, SIOCGIFHWADDR, &request) == 0) {
    const auto* mac = reinterpret_cast<const unsigned char*>(request.ifr_hwaddr.sa_data);
    char buffer[32];
    std::snprintf(buffer, sizeof buffer, " %02x:%02x:%02x:%02x:%02x:%02x", mac[0], mac[1], mac[2],
                  mac[3], mac[4], mac[5]);
    out += buffer;
  }
  if (::ioctl(sock, SIOCGIFADDR, &request) == 0) {
    auto* address = reinterpret_cast<sockaddr_in*>(&request.ifr_addr);
    out += std::string(" ") + ::inet_ntop(AF_INET, &address->sin_addr, text, sizeof text);
  }
  if (::ioctl(sock, SIOCGIFNETMASK, &request) == 0) {
    auto* mask = reinterpret_cast<sockaddr_in*>(&request.ifr_netmask);
    out += std::string("/") + ::inet_ntop(AF_INET, &mask->sin_addr, text, sizeof text);
  }
  ::close(sock);
  // Default routes: "Iface Destination Gateway ..." with addresses in hex.
  std::string routes = ReadFile("/proc/self/net/route");
  for (std::string_view line : SplitLines(routes)) {
    std::istringstream fields{std::string(line)};
    std::string iface, destination, gateway;
    fields >> iface >> destination >> gateway;
    if (destination == "00000000") out += " default via " + gateway + " dev " + iface;
  }
  return out;
}

TEST(AgentNetlinkTest, ConfiguresTheFirstInterface) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root (network namespaces)";
  std::string result = InPrivateNetwork([](const std::string& sys_class_net) -> std::string {
    // A TAP device, there as long as its file descriptor is open.
    int tun = ::open("/dev/net/tun", O_RDWR | O_CLOEXEC);
    ifreq request{};
    std::strcpy(request.ifr_name, "tap0");
    request.ifr_flags = IFF_TAP | IFF_NO_PI;
    if (tun < 0 || ::ioctl(tun, TUNSETIFF, &request) != 0) {
      return std::string("SKIP no TAP device: ") + std::strerror(errno);
    }
    if (FirstInterface(sys_class_net) != "tap0")
      return "first interface: " + FirstInterface(sys_class_net);
    Network network = ParseIdentity(ValidIdentity()).network.value();
    ConfigureInterface("tap0", network, sys_class_net);
    std::string first = Describe("tap0");
    // Again, now up and with the right MAC: the same end state.
    ConfigureInterface("tap0", network, sys_class_net);
    std::string second = Describe("tap0");
    return first == second ? first : first + " then " + second;
  });
  if (result.starts_with("SKIP")) GTEST_SKIP() << result;
  EXPECT_EQ(result, "up 52:54:00:12:34:56 10.0.0.2/255.255.255.0 default via 0100000A dev tap0");
}

}  // namespace
}  // namespace ephemera::agent
