// The daemon's side of the guest agent protocol, against a scripted agent
// on a unix socket and an SSH banner on loopback.
#include <crypt.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <functional>
#include <thread>

#include "core/base64.h"
#include "core/error.h"
#include "core/unix_socket.h"
#include "guest/agent_client.h"
#include "guest/agent_provision.h"
#include "unit/error_of.h"
#include "unit/loopback_server.h"
#include "unit/test_files.h"

namespace ephemera {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;
using ::testing::HasSubstr;
using Clock = std::chrono::steady_clock;
using test::ErrorOf;

// Accepts one connection and answers each request line with `answer`.
class ScriptedAgent {
 public:
  using Answer = std::function<std::string(const json& request)>;
  ScriptedAgent(const std::filesystem::path& path, Answer answer)
      : listener_(ListenUnix(path)), thread_([this, answer] {
          UniqueFd fd(::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC));
          std::string buffer;
          char chunk[4096];
          for (;;) {
            ssize_t n = ::read(fd.get(), chunk, sizeof chunk);
            if (n <= 0) return;
            buffer.append(chunk, static_cast<std::size_t>(n));
            for (auto nl = buffer.find('\n'); nl != std::string::npos; nl = buffer.find('\n')) {
              json request = json::parse(buffer.substr(0, nl));
              buffer.erase(0, nl + 1);
              requests.push_back(request);
              std::string reply = answer(request);
              if (reply.empty()) return;  // hang up
              (void)!::write(fd.get(), reply.data(), reply.size());
            }
          }
        }) {}
  ~ScriptedAgent() {
    ::shutdown(listener_.get(), SHUT_RDWR);
    thread_.join();
  }
  std::vector<json> requests;

 private:
  UniqueFd listener_;
  std::thread thread_;
};

std::string Ok(const json& request, json extra = json::object()) {
  extra["id"] = request["id"];
  extra["ok"] = true;
  return extra.dump() + "\n";
}

class AgentClientTest : public ::testing::Test {
 protected:
  std::filesystem::path socket() const { return dir_.path() / "agent.sock"; }
  test::TempDir dir_;
};

TEST_F(AgentClientTest, HelloCarriesTheTokenAndAnswersAreMatchedById) {
  ScriptedAgent agent(socket(), [](const json& r) {
    if (r["op"] == "hello") {
      // An answer to an abandoned request first: skipped by id.
      return std::string(R"({"id":999,"ok":true})"
                         "\n") +
             Ok(r, {{"protocol", 1}});
    }
    return Ok(r, {{"echo", r["op"]}});
  });
  auto deadline = Clock::now() + 5s;
  AgentClient client = AgentClient::Connect(socket(), deadline);
  client.Hello("ab12", deadline);
  json answer = client.Call({{"op", "ping"}}, deadline);
  EXPECT_EQ(answer["echo"], "ping");
  ASSERT_EQ(agent.requests.size(), 2u);
  EXPECT_EQ(agent.requests[0]["token"], "ab12");
  EXPECT_NE(agent.requests[0]["id"], agent.requests[1]["id"]);
}

TEST_F(AgentClientTest, HelloSaysWhichProtocolAndRefusesAnUnknownOne) {
  int protocol = 3;
  ScriptedAgent agent(socket(), [&](const json& r) { return Ok(r, {{"protocol", protocol++}}); });
  auto deadline = Clock::now() + 5s;
  AgentClient client = AgentClient::Connect(socket(), deadline);
  EXPECT_EQ(client.Hello("ab12", deadline), 3u);
  try {
    client.Hello("ab12", deadline);
    ADD_FAILURE() << "protocol 4 accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kFailedPrecondition);
    EXPECT_THAT(e.what(), ::testing::HasSubstr("another protocol"));
  }
}

TEST_F(AgentClientTest, RefusalsTimeoutsGarbageAndHangupsAreNamed) {
  ScriptedAgent agent(socket(), [](const json& r) -> std::string {
    if (r["op"] == "refuse") {
      return json{{"id", r["id"]}, {"ok", false}, {"error", "user: already exists"}}.dump() + "\n";
    }
    if (r["op"] == "garbage") return "this is not json\n";
    if (r["op"] == "unreadable") {
      return std::string(R"({"id":null,"ok":false,"error":"line too long"})") + "\n";
    }
    if (r["op"] == "slow") return " ";  // no newline: never a whole answer
    return "";
  });
  auto deadline = Clock::now() + 5s;
  AgentClient client = AgentClient::Connect(socket(), deadline);
  try {
    client.Call({{"op", "refuse"}}, deadline);
    ADD_FAILURE() << "a refusal passed";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kFailedPrecondition);
    EXPECT_THAT(e.what(), HasSubstr("refused 'refuse': user: already exists"));
  }
  EXPECT_THAT(ErrorOf([&] {
                client.Call({{"op", "garbage"}}, deadline);
              }).what(),
              HasSubstr("something else than JSON"));
  // An answer the agent could not tie to a request fails at once, not at
  // the deadline.
  const auto before = Clock::now();
  EXPECT_THAT(ErrorOf([&] {
                client.Call({{"op", "unreadable"}}, Clock::now() + 5s);
              }).what(),
              HasSubstr("line too long"));
  EXPECT_LT(Clock::now() - before, 2s);
  try {
    client.Call({{"op", "slow"}}, Clock::now() + 200ms);
    ADD_FAILURE() << "no answer passed";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kTimeout);
  }
  try {
    client.Call({{"op", "hangup"}}, deadline);
    ADD_FAILURE() << "a closed channel passed";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kUnavailable);
  }
}

TEST_F(AgentClientTest, NobodyListeningIsUnavailableAtTheDeadline) {
  try {
    AgentClient::Connect(socket(), Clock::now() + 50ms);
    ADD_FAILURE() << "connected to nothing";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kUnavailable);
  }
}

TEST(AgentIdentityTest, CarriesAHashNeverThePasswordAndTheWholeIdentity) {
  SshKeyPair host_key = SshKeyPair::Generate();
  AgentProvisionRequest request;
  request.host_key = &host_key;
  request.hostname = "sandbox-12345678";
  request.ssh_port = 2222;
  request.network = GuestNetwork{
      "52:54:00:00:00:07", Subnet30{1, Ipv4::Parse("172.16.0.4")}, {Ipv4::Parse("172.16.0.5")}};
  request.authorized_keys = {host_key.PublicKeyLine() + " me@laptop"};
  ClientCredentials credentials = GenerateClientCredentials();
  json identity = BuildIdentity(request, credentials);
  EXPECT_EQ(identity["op"], "identity");
  EXPECT_EQ(identity["user"], credentials.username);
  EXPECT_EQ(identity.dump().find(credentials.password), std::string::npos);
  const std::string hash = identity["password_hash"];
  EXPECT_THAT(hash, ::testing::StartsWith("$6$"));
  struct crypt_data data {};
  EXPECT_EQ(std::string(crypt_r(credentials.password.c_str(), hash.c_str(), &data)), hash);
  // (Each export has fresh check bytes: the same key, not the same text.)
  EXPECT_THAT(identity["ssh_host_key"].get<std::string>(),
              ::testing::StartsWith("-----BEGIN OPENSSH PRIVATE KEY-----\n"));
  EXPECT_EQ(identity["ssh_host_key_public"], host_key.PublicKeyLine());
  EXPECT_EQ(identity["ssh_port"], 2222);
  EXPECT_EQ(identity["hostname"], "sandbox-12345678");
  EXPECT_EQ(Base64Decode(identity["entropy"].get<std::string>())->size(), 64u);
  EXPECT_NEAR(static_cast<double>(identity["time_ns"].get<std::int64_t>()) / 1e9,
              static_cast<double>(std::time(nullptr)), 5.0);
  EXPECT_EQ(identity["network"], json({{"mac", "52:54:00:00:00:07"},
                                       {"address", "172.16.0.6"},
                                       {"prefix", 30},
                                       {"gateway", "172.16.0.5"},
                                       {"dns", {"172.16.0.5"}}}));
  EXPECT_EQ(identity["authorized_keys"], json({request.authorized_keys[0]}));
  EXPECT_FALSE(identity.contains("agent_token"));  // booted with its own token
  request.new_token = std::string(64, 'c');        // a clone of a snapshot
  EXPECT_EQ(BuildIdentity(request, credentials)["agent_token"], request.new_token);
  request.new_token.clear();
  // Two identities never share entropy or salt.
  json again = BuildIdentity(request, credentials);
  EXPECT_NE(again["entropy"], identity["entropy"]);
  EXPECT_NE(again["password_hash"], identity["password_hash"]);
  request.authorized_keys = {"ssh-ed25519 AAAA' ; rm -rf /"};
  EXPECT_THROW(BuildIdentity(request, credentials), Error);
}

TEST(SshBannerTest, AnSshServerPassesAnotherServiceDoesNot) {
  test::LoopbackServer ssh([](int fd) {
    const std::string banner = "SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n";
    (void)!::write(fd, banner.data(), banner.size());
  });
  WaitForSshBanner("127.0.0.1", ssh.port(), Clock::now() + 5s);
  test::LoopbackServer http([](int fd) {
    const std::string banner = "HTTP/1.1 400 Bad Request\r\n";
    (void)!::write(fd, banner.data(), banner.size());
  });
  EXPECT_THAT(
      ErrorOf([&] { WaitForSshBanner("127.0.0.1", http.port(), Clock::now() + 300ms); }).what(),
      HasSubstr("not an SSH server"));
}

}  // namespace
}  // namespace ephemera
