// Anweddol clients against ephemerad, end to end: the classic protocol
// through a client written apart from the server (its own framing, OpenSSL
// directly) and the web protocol through curl. CREATE answers what the
// Anweddol client checks, the credentials log in over SSH, STAT, DESTROY
// needs the client token, and bad or silent clients do not disturb others.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <regex>

#include "core/fs.h"
#include "e2e/daemon_fixture.h"
#include "e2e/http_client.h"
#include "guest/ssh_session.h"
#include "support/anweddol_classic_client.h"

namespace ephemera {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;
using test::AnweddolClassicConnection;
using test::AnweddolClassicRequest;
using test::AnweddolClientKey;
using test::AnweddolClientOptions;
using test::Curl;
using ::testing::HasSubstr;
using ::testing::StartsWith;

constexpr std::uint16_t kClassicPort = 6150;
constexpr char kWeb[] = "http://127.0.0.1:8080";

class AnweddolTest : public test::DaemonTest {
 protected:
  std::string ExtraConfig() const override { return "remote: {deny: [127.0.0.2/32]}\n"; }
  std::vector<std::string> ExtraArgs() const override {
    return {"--anweddol-listen", "127.0.0.1:6150", "--anweddol-web-listen", "127.0.0.1:8080"};
  }

  static void SetUpTestSuite() { client_key_ = AnweddolClientKey::GenerateRsa(4096); }

  std::string AddToken() {
    test::CurlResult r = Curl({"--unix-socket", socket_.string(), "-X", "POST", "--data-binary",
                               "{}", "http://localhost/v1/tokens"});
    EXPECT_EQ(r.status, 201) << r.body;
    return r.Json()["token"];
  }

  json Classic(const json& request) {
    AnweddolClientOptions options;
    options.key = client_key_;
    options.timeout = 180s;  // a CREATE boots a VM
    return AnweddolClassicRequest("127.0.0.1", kClassicPort, request, options);
  }

  json Web(const std::string& verb, const json& parameters) {
    test::CurlResult r =
        Curl({"-X", "POST", "--data-binary", parameters.dump(), std::string(kWeb) + "/" + verb});
    EXPECT_EQ(r.status, 200) << r.body;
    return r.Json();
  }

  // What the Anweddol client verifies in a CREATE answer, or it rejects it.
  static void ExpectAnweddolCreateData(const json& data) {
    EXPECT_TRUE(std::regex_match(data["container_username"].get<std::string>(),
                                 std::regex("user_[0-9]{5}")));
    EXPECT_TRUE(std::regex_match(data["container_password"].get<std::string>(),
                                 std::regex("[0-9a-zA-Z]{120}")));
    EXPECT_TRUE(std::regex_match(data["client_token"].get<std::string>(),
                                 std::regex("[0-9a-zA-Z_-]{255}")));
    EXPECT_TRUE(std::regex_match(
        data["container_uuid"].get<std::string>(),
        std::regex("[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")));
    EXPECT_TRUE(std::regex_match(data["container_iso_sha256"].get<std::string>(),
                                 std::regex("[0-9a-f]{64}")));
    EXPECT_TRUE(data["container_listen_port"].is_number_integer());
  }

  static void ExpectLogin(const json& data) {
    SshSession client("127.0.0.1", data["container_listen_port"].get<std::uint16_t>(),
                      data["container_username"], 30s);
    ASSERT_TRUE(client.AuthenticateWithPassword(data["container_password"]));
    EXPECT_EQ(client.Execute("id -un", 30s).out,
              data["container_username"].get<std::string>() + "\n");
  }

  static std::shared_ptr<const AnweddolClientKey> client_key_;
};

std::shared_ptr<const AnweddolClientKey> AnweddolTest::client_key_;

TEST_F(AnweddolTest, ClassicCreateLoginStatDestroy) {
  const std::string token = AddToken();
  // The server key is the persistent one that `ephemera status` shows.
  json status = json::parse(Output(Cli({"status", "--json"})));
  const std::string fingerprint = status["front_doors"]["anweddol_classic"]["rsa_key_sha256"];
  ASSERT_EQ(fingerprint.size(), 64u);

  json created = Classic({{"verb", "CREATE"}, {"parameters", {{"access_token", token}}}});
  ASSERT_TRUE(created["success"].get<bool>()) << created.dump() << DaemonLog();
  EXPECT_EQ(created["message"], "OK");
  const json data = created["data"];
  ExpectAnweddolCreateData(data);
  ExpectLogin(data);

  json stat = Classic({{"verb", "STAT"}, {"parameters", {{"access_token", token}}}});
  ASSERT_TRUE(stat["success"].get<bool>()) << stat.dump();
  EXPECT_TRUE(stat["data"]["version"].is_string());
  EXPECT_TRUE(stat["data"]["uptime"].is_number_integer());
  EXPECT_EQ(stat["data"]["available"], 15);
  EXPECT_FALSE(stat["data"].contains("container"));

  // With the container's credentials, STAT adds what Anweddol's container
  // object holds; a wrong token learns nothing of it.
  json mine = Classic({{"verb", "STAT"},
                       {"parameters",
                        {{"access_token", token},
                         {"container_uuid", data["container_uuid"]},
                         {"client_token", data["client_token"]}}}});
  ASSERT_TRUE(mine["success"].get<bool>()) << mine.dump();
  const json container = mine["data"]["container"];
  EXPECT_EQ(container["container_uuid"], data["container_uuid"]);
  EXPECT_EQ(container["driver"], "qemu");
  EXPECT_EQ(container["running"], true);
  EXPECT_EQ(container["container_iso_sha256"], data["container_iso_sha256"]);
  EXPECT_EQ(container["container_listen_port"], data["container_listen_port"]);
  EXPECT_THAT(container["mac"].get<std::string>(), StartsWith("52:54:00:"));
  EXPECT_FALSE(container["network"].get<std::string>().empty());
  std::string wrong_stat = data["client_token"];
  wrong_stat[3] = wrong_stat[3] == 'x' ? 'y' : 'x';
  json theirs = Classic({{"verb", "STAT"},
                         {"parameters",
                          {{"access_token", token},
                           {"container_uuid", data["container_uuid"]},
                           {"client_token", wrong_stat}}}});
  EXPECT_FALSE(theirs["success"].get<bool>());
  EXPECT_THAT(theirs["message"].get<std::string>(), StartsWith("Bad authentication"));
  EXPECT_FALSE(theirs["data"].contains("container"));

  // A well-formed but wrong client token destroys nothing.
  std::string wrong = data["client_token"];
  wrong[10] = wrong[10] == 'x' ? 'y' : 'x';
  json refused = Classic({{"verb", "DESTROY"},
                          {"parameters",
                           {{"access_token", token},
                            {"container_uuid", data["container_uuid"]},
                            {"client_token", wrong}}}});
  EXPECT_FALSE(refused["success"].get<bool>());
  EXPECT_THAT(refused["message"].get<std::string>(), StartsWith("Bad authentication"));
  ASSERT_EQ(List().size(), 1u);

  json destroyed = Classic({{"verb", "DESTROY"},
                            {"parameters",
                             {{"access_token", token},
                              {"container_uuid", data["container_uuid"]},
                              {"client_token", data["client_token"]}}}});
  EXPECT_TRUE(destroyed["success"].get<bool>()) << destroyed.dump();
  ExpectNothingLeft();

  AnweddolClientOptions options;
  options.key = client_key_;
  auto result = test::AnweddolClassicExchange(
      "127.0.0.1", kClassicPort, {{"verb", "STAT"}, {"parameters", {{"access_token", token}}}},
      options);
  EXPECT_EQ(result.server_key_sha256, fingerprint);
}

TEST_F(AnweddolTest, ClassicRefusesBadTokensAndBadRequests) {
  json r = Classic({{"verb", "STAT"}, {"parameters", json::object()}});
  EXPECT_FALSE(r["success"].get<bool>());
  EXPECT_EQ(r["message"], "Bad request (Access token is required)");
  r = Classic({{"verb", "STAT"}, {"parameters", {{"access_token", "nope"}}}});
  EXPECT_THAT(r["message"].get<std::string>(), StartsWith("Bad authentication"));
  const std::string token = AddToken();
  r = Classic({{"verb", "DESTROY"},
               {"parameters", {{"access_token", token}, {"container_uuid", "not-a-uuid"}}}});
  EXPECT_THAT(r["message"].get<std::string>(), StartsWith("Bad request"));
  r = Classic({{"verb", "LAUNCH"}, {"parameters", {{"access_token", token}}}});
  EXPECT_THAT(r["message"].get<std::string>(), StartsWith("Bad request"));
  r = Classic({{"parameters", {{"access_token", token}}}});
  EXPECT_THAT(r["message"].get<std::string>(), StartsWith("Bad request"));
}

TEST_F(AnweddolTest, ASilentClientDoesNotDelayOthersAndATruncatedFrameIsDropped) {
  const std::string token = AddToken();
  // Connects and says nothing.
  AnweddolClassicConnection silent("127.0.0.1", kClassicPort, 30s);
  // Stops in the middle of its key's PEM.
  AnweddolClassicConnection truncated("127.0.0.1", kClassicPort, 30s);
  truncated.SendRaw("800=====");
  truncated.ExpectAck("length");
  truncated.SendRaw(client_key_->public_pem().substr(0, 100));
  truncated.ShutdownWrite();
  EXPECT_TRUE(truncated.WaitClosed(15s));

  auto started = std::chrono::steady_clock::now();
  json stat = Classic({{"verb", "STAT"}, {"parameters", {{"access_token", token}}}});
  EXPECT_TRUE(stat["success"].get<bool>());
  EXPECT_LT(std::chrono::steady_clock::now() - started, 5s);
  EXPECT_FALSE(silent.WaitClosed(10ms));  // still waiting, harmlessly
}

TEST_F(AnweddolTest, ADeniedAddressIsClosedBeforeAnyCrypto) {
  // The classic door drops the connection before any key exchange.
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in local{AF_INET, 0, {htonl(0x7f000002)}, {}};
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&local), sizeof local), 0);
  sockaddr_in server{AF_INET, htons(kClassicPort), {htonl(0x7f000001)}, {}};
  ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&server), sizeof server), 0);
  timeval timeout{5, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  char byte = 0;
  EXPECT_LE(::recv(fd, &byte, 1, 0), 0);  // closed (0) or reset (-1), not a timeout
  EXPECT_NE(errno, EAGAIN);
  ::close(fd);

  // The web door drops it at accept too.
  EXPECT_EQ(Curl({"--interface", "127.0.0.2", std::string(kWeb) + "/stat"}).status, 0);
  EXPECT_TRUE(Web("stat", {{"access_token", AddToken()}})["success"].get<bool>());
}

TEST_F(AnweddolTest, WebCreateLoginStatDestroy) {
  const std::string token = AddToken();
  json r = Curl({std::string(kWeb) + "/stat"}).Json();
  EXPECT_EQ(r["message"], "Bad request (Access token is required)");
  r = Web("stat", {{"access_token", token}});
  ASSERT_TRUE(r["success"].get<bool>()) << r.dump();
  EXPECT_TRUE(r["data"]["uptime"].is_number_integer());

  json created = Web("create", {{"access_token", token}});
  ASSERT_TRUE(created["success"].get<bool>()) << created.dump() << DaemonLog();
  ExpectAnweddolCreateData(created["data"]);
  ExpectLogin(created["data"]);

  const json& data = created["data"];
  std::string wrong = data["client_token"];
  wrong[0] = wrong[0] == 'a' ? 'b' : 'a';
  r = Web("DESTROY", {{"access_token", token},
                      {"container_uuid", data["container_uuid"]},
                      {"client_token", wrong}});
  EXPECT_THAT(r["message"].get<std::string>(), StartsWith("Bad authentication"));
  ASSERT_EQ(List().size(), 1u);
  r = Web("destroy", {{"access_token", token},
                      {"container_uuid", data["container_uuid"]},
                      {"client_token", data["client_token"]}});
  EXPECT_TRUE(r["success"].get<bool>()) << r.dump();
  ExpectNothingLeft();

  // Malformed JSON, an unknown verb, a nested path.
  test::CurlResult bad =
      Curl({"-X", "POST", "--data-binary", "{oops", std::string(kWeb) + "/stat"});
  EXPECT_EQ(bad.status, 200);
  EXPECT_THAT(bad.Json()["message"].get<std::string>(), StartsWith("Bad request"));
  EXPECT_THAT(Web("launch", {{"access_token", token}})["message"].get<std::string>(),
              StartsWith("Bad request"));
  EXPECT_THAT(Curl({std::string(kWeb) + "/a/b"}).Json()["message"].get<std::string>(),
              StartsWith("Bad request"));
}

// anweddol.kind: the Anweddol doors hand out containers, to clients that
// know nothing of kinds.
class AnweddolContainerTest : public AnweddolTest {
 protected:
  void SetUp() override {
    // The runtime reaches the rootfs as the container's root.
    std::filesystem::permissions(state_.path(), std::filesystem::perms::others_exec,
                                 std::filesystem::perm_options::add);
    AnweddolTest::SetUp();
  }
  std::string ExtraConfig() const override {
    return AnweddolTest::ExtraConfig() + "anweddol: {kind: container}\n";
  }
};

TEST_F(AnweddolContainerTest, ClassicCreateGivesAContainerThatLogsIn) {
  const std::string token = AddToken();
  json created = Classic({{"verb", "CREATE"}, {"parameters", {{"access_token", token}}}});
  ASSERT_TRUE(created["success"].get<bool>()) << created.dump() << DaemonLog();
  const json data = created["data"];
  ExpectAnweddolCreateData(data);
  ExpectLogin(data);
  json mine = Classic({{"verb", "STAT"},
                       {"parameters",
                        {{"access_token", token},
                         {"container_uuid", data["container_uuid"]},
                         {"client_token", data["client_token"]}}}});
  ASSERT_TRUE(mine["success"].get<bool>()) << mine.dump();
  EXPECT_EQ(mine["data"]["container"]["driver"], "container");
  EXPECT_EQ(mine["data"]["container"]["running"], true);
  json listed = List();
  ASSERT_EQ(listed.size(), 1u);
  EXPECT_EQ(listed[0]["kind"], "container");
  json destroyed = Classic({{"verb", "DESTROY"},
                            {"parameters",
                             {{"access_token", token},
                              {"container_uuid", data["container_uuid"]},
                              {"client_token", data["client_token"]}}}});
  EXPECT_TRUE(destroyed["success"].get<bool>()) << destroyed.dump();
  ExpectNothingLeft();
}

class AnweddolWebTlsTest : public test::DaemonTest {
 protected:
  std::string ExtraConfig() const override {
    return "anweddol: {web_listen: '127.0.0.1:4443', web_tls: true}\n"
           "remote: {access_tokens: false}\n";
  }
};

TEST_F(AnweddolWebTlsTest, TheWebProtocolOverTlsWithoutTokensOnATrustedNetwork) {
  // The generated certificate names 127.0.0.1, so curl verifies it for real.
  const std::string ca = (state_.path() / "state" / "tls" / "cert.pem").string();
  test::CurlResult r = Curl({"--cacert", ca, "https://127.0.0.1:4443/stat"});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_TRUE(r.Json()["success"].get<bool>()) << r.body;
  EXPECT_TRUE(r.Json()["data"]["version"].is_string());
  EXPECT_EQ(Curl({"http://127.0.0.1:4443/stat"}).status, 0);  // no plain HTTP there
  json status = json::parse(Output(Cli({"status", "--json"})));
  EXPECT_TRUE(status["front_doors"]["anweddol_web"]["tls"].get<bool>());
}

}  // namespace
}  // namespace ephemera
