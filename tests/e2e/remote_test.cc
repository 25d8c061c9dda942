// The HTTPS /v1 front door end to end, with curl as the client: access
// tokens (missing, wrong, disabled, expired, deleted), the IP filter, the
// rate limit, bad bodies, a per-token cap, and a remote create, SSH login
// and destroy that needs the sandbox's client token.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <thread>

#include <signal.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "core/base64.h"
#include "core/fs.h"
#include "core/subprocess.h"
#include "e2e/daemon_fixture.h"
#include "e2e/http_client.h"
#include "guest/ssh_session.h"
#include "unit/loopback_server.h"

namespace ephemera {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;
using test::Curl;
using test::CurlResult;
using ::testing::HasSubstr;

constexpr char kBase[] = "https://127.0.0.1:8443";

class RemoteTest : public test::DaemonTest {
 protected:
  std::string ExtraConfig() const override {
    return "remote: {deny: [127.0.0.2/32], rate_limit_per_minute: 6000, rate_limit_burst: 600}\n";
  }
  std::vector<std::string> ExtraArgs() const override { return {"--listen", "127.0.0.1:8443"}; }

  // Verifies the daemon's self-signed certificate for real: it names 127.0.0.1.
  std::vector<std::string> Tls() const {
    return {"--cacert", (state_.path() / "state" / "tls" / "cert.pem").string()};
  }

  CurlResult Remote(const std::string& method, const std::string& path, const std::string& token,
                    const std::string& body = "", std::vector<std::string> extra = {}) {
    std::vector<std::string> args = Tls();
    args.insert(args.end(), {"-X", method});
    if (!token.empty()) args.insert(args.end(), {"-H", "Authorization: Bearer " + token});
    if (!body.empty()) args.insert(args.end(), {"--data-binary", body});
    args.insert(args.end(), extra.begin(), extra.end());
    args.push_back(std::string(kBase) + path);
    return Curl(args);
  }

  // Token management is the local socket's.
  CurlResult Local(const std::string& method, const std::string& path,
                   const std::string& body = "") {
    std::vector<std::string> args = {"--unix-socket", socket_.string(), "-X", method};
    if (!body.empty()) args.insert(args.end(), {"--data-binary", body});
    args.push_back("http://localhost" + path);
    return Curl(args);
  }

  json AddToken(const json& request) {
    CurlResult r = Local("POST", "/v1/tokens", request.is_null() ? "{}" : request.dump());
    EXPECT_EQ(r.status, 201) << r.body;
    return r.Json();
  }
};

TEST_F(RemoteTest, EveryRemoteRequestNeedsAValidEnabledUnexpiredToken) {
  CurlResult r = Remote("GET", "/v1/status", "");
  EXPECT_EQ(r.status, 401);
  EXPECT_EQ(r.headers["www-authenticate"], "Bearer");
  EXPECT_THAT(r.body, HasSubstr("an access token is required"));
  r = Remote("GET", "/v1/status", "not-a-token");
  EXPECT_EQ(r.status, 401);
  EXPECT_THAT(r.body, HasSubstr("unknown access token"));

  json token = AddToken({{"name", "ci"}});
  const std::string secret = token["token"];
  EXPECT_EQ(secret.size(), 64u);
  r = Remote("GET", "/v1/status", secret);
  ASSERT_EQ(r.status, 200) << r.body;
  // The status names the certificate the client just verified.
  EXPECT_EQ(r.Json()["front_doors"]["https"]["certificate_sha256"].get<std::string>().size(), 64u);

  // The secret is never listed; the list shows it was used.
  CurlResult listed = Local("GET", "/v1/tokens");
  EXPECT_THAT(listed.body, ::testing::Not(HasSubstr(secret)));
  EXPECT_FALSE(listed.Json()["tokens"][0]["last_used_at"].is_null());

  const std::string id = token["id"];
  ASSERT_EQ(Local("PATCH", "/v1/tokens/" + id, R"({"enabled": false})").status, 200);
  r = Remote("GET", "/v1/status", secret);
  EXPECT_EQ(r.status, 401);
  EXPECT_THAT(r.body, HasSubstr("is disabled"));
  ASSERT_EQ(Local("PATCH", "/v1/tokens/" + id, R"({"enabled": true})").status, 200);
  EXPECT_EQ(Remote("GET", "/v1/status", secret).status, 200);
  ASSERT_EQ(Local("DELETE", "/v1/tokens/" + id).status, 200);
  r = Remote("GET", "/v1/status", secret);
  EXPECT_EQ(r.status, 401);
  EXPECT_THAT(r.body, HasSubstr("unknown access token"));
  EXPECT_EQ(Local("DELETE", "/v1/tokens/" + id).status, 404);

  json short_lived = AddToken({{"expires_in_seconds", 1}});
  std::this_thread::sleep_for(2100ms);
  r = Remote("GET", "/v1/status", short_lived["token"]);
  EXPECT_EQ(r.status, 401);
  EXPECT_THAT(r.body, HasSubstr("has expired"));

  // Tokens cannot manage tokens remotely.
  json other = AddToken({});
  r = Remote("POST", "/v1/tokens", other["token"], "{}");
  EXPECT_EQ(r.status, 403);
  // Bad management requests get errors naming the field.
  r = Local("POST", "/v1/tokens", R"({"max_sandboxes": 0})");
  EXPECT_EQ(r.status, 400);
  EXPECT_THAT(r.body, HasSubstr("max_sandboxes"));
  r = Local("POST", "/v1/tokens", R"({"colour": "red"})");
  EXPECT_THAT(r.body, HasSubstr("unknown field 'colour'"));
}

TEST_F(RemoteTest, ADeniedAddressIsRefusedAndPlainHttpIsNotSpoken) {
  json token = AddToken({});
  // Dropped at accept: no TLS handshake, no HTTP answer, no slot held.
  CurlResult r = Remote("GET", "/v1/status", token["token"], "", {"--interface", "127.0.0.2"});
  EXPECT_EQ(r.status, 0);
  EXPECT_EQ(Remote("GET", "/v1/status", token["token"]).status, 200);
  // Plain HTTP to the TLS port gets no HTTP answer.
  EXPECT_EQ(Curl({"http://127.0.0.1:8443/v1/status"}).status, 0);
}

TEST_F(RemoteTest, TheRateLimitAnswers429WithRetryAfter) {
  json token = AddToken({{"rate_per_minute", 3}});
  for (int i = 0; i < 3; ++i) ASSERT_EQ(Remote("GET", "/v1/status", token["token"]).status, 200);
  CurlResult r = Remote("GET", "/v1/status", token["token"]);
  EXPECT_EQ(r.status, 429);
  ASSERT_TRUE(r.headers.count("retry-after"));
  EXPECT_GE(std::stoi(r.headers["retry-after"]), 1);
  EXPECT_LE(std::stoi(r.headers["retry-after"]), 20);
  // Another token is not slowed down by this one.
  EXPECT_EQ(Remote("GET", "/v1/status", AddToken({})["token"]).status, 200);
}

TEST_F(RemoteTest, MalformedAndOversizedBodiesGetClearErrors) {
  const std::string token = AddToken({})["token"];
  CurlResult r = Remote("POST", "/v1/sandboxes", token, "{not json");
  EXPECT_EQ(r.status, 400);
  EXPECT_THAT(r.body, HasSubstr("not valid JSON"));
  r = Remote("POST", "/v1/sandboxes", token, R"({"memory_mib": "lots"})");
  EXPECT_EQ(r.status, 400);
  EXPECT_THAT(r.body, HasSubstr("'memory_mib' must be an integer"));
  test::WriteBytes(state_.path() / "big.json", std::string(100 * 1024, ' '));
  r = Remote("POST", "/v1/sandboxes", token, "@" + (state_.path() / "big.json").string());
  EXPECT_EQ(r.status, 413);
  r = Remote("GET", "/v1/sandboxes/not-an-id", token);
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(Remote("GET", "/v1/status", token).status, 200);
  EXPECT_TRUE(List().empty());
}

TEST_F(RemoteTest, RemoteCreateLoginExtendAndDestroyNeedTheClientToken) {
  json owner = AddToken({{"name", "owner"}, {"max_sandboxes", 1}});
  json stranger = AddToken({{"name", "stranger"}});
  CurlResult r = Remote("POST", "/v1/sandboxes", owner["token"], R"({"ttl_seconds": 600})");
  ASSERT_EQ(r.status, 201) << r.body << DaemonLog();
  json s = r.Json();
  const std::string id = s["id"];
  EXPECT_EQ(r.headers["location"], "/v1/sandboxes/" + id);

  // The per-token cap holds; the stranger sees nothing of it.
  r = Remote("POST", "/v1/sandboxes", owner["token"], "{}");
  EXPECT_EQ(r.status, 429);
  EXPECT_THAT(r.body, HasSubstr("limit of 1 sandboxes"));
  EXPECT_TRUE(Remote("GET", "/v1/sandboxes", stranger["token"]).Json()["sandboxes"].empty());
  EXPECT_EQ(Remote("GET", "/v1/sandboxes/" + id, stranger["token"]).status, 404);
  EXPECT_EQ(Remote("GET", "/v1/sandboxes", owner["token"]).Json()["sandboxes"].size(), 1u);

  SshSession client(s["host"], s["port"].get<std::uint16_t>(), s["username"], 30s);
  EXPECT_EQ(client.HostKeyFingerprint(), s["host_key_fingerprint"]);
  ASSERT_TRUE(client.AuthenticateWithPassword(s["password"]));
  EXPECT_EQ(client.Execute("id -un", 30s).out, s["username"].get<std::string>() + "\n");

  // Its time to live, set anew with the client token: longer, then shorter.
  const std::vector<std::string> with_token = {
      "-H", "X-Ephemera-Token: " + s["token"].get<std::string>()};
  const std::string created_expiry = s["expires_at"];
  r = Remote("PATCH", "/v1/sandboxes/" + id, owner["token"], R"({"ttl_seconds": 900})");
  EXPECT_EQ(r.status, 403) << r.body;
  EXPECT_THAT(r.body, HasSubstr("changing its time to live needs the sandbox's client token"));
  r = Remote("PATCH", "/v1/sandboxes/" + id, stranger["token"], R"({"ttl_seconds": 900})",
             with_token);
  EXPECT_EQ(r.status, 404);
  r = Remote("PATCH", "/v1/sandboxes/" + id, owner["token"], R"({"ttl_seconds": "long"})",
             with_token);
  EXPECT_EQ(r.status, 400);
  EXPECT_THAT(r.body, HasSubstr("'ttl_seconds' must be an integer"));
  r = Remote("PATCH", "/v1/sandboxes/" + id, owner["token"], R"({"ttl_seconds": 0})", with_token);
  EXPECT_EQ(r.status, 400);
  EXPECT_THAT(r.body, HasSubstr("ttl_seconds 0 is out of range"));
  r = Remote("PATCH", "/v1/sandboxes/" + id, owner["token"], R"({"ttl": 5})", with_token);
  EXPECT_EQ(r.status, 400);
  EXPECT_THAT(r.body, HasSubstr("unknown field 'ttl'"));
  EXPECT_EQ(Remote("GET", "/v1/sandboxes/" + id, owner["token"]).Json()["expires_at"],
            created_expiry);
  r = Remote("PATCH", "/v1/sandboxes/" + id, owner["token"], R"({"ttl_seconds": 900})", with_token);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_GT(r.Json()["expires_at"].get<std::string>(), created_expiry);
  r = Remote("PATCH", "/v1/sandboxes/" + id, owner["token"], R"({"ttl_seconds": 300})", with_token);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_LT(r.Json()["expires_at"].get<std::string>(), created_expiry);
  EXPECT_EQ(Remote("GET", "/v1/sandboxes/" + id, owner["token"]).Json()["expires_at"],
            r.Json()["expires_at"]);

  // Programs and files: the client token's, over the remote door too.
  const std::string exec_body = R"({"argv": ["id", "-un"]})";
  r = Remote("POST", "/v1/sandboxes/" + id + "/exec", owner["token"], exec_body);
  EXPECT_EQ(r.status, 403) << r.body;
  r = Remote("POST", "/v1/sandboxes/" + id + "/exec", stranger["token"], exec_body, with_token);
  EXPECT_EQ(r.status, 404) << r.body;
  r = Remote("GET", "/v1/sandboxes/" + id + "/files?path=/etc/hostname", stranger["token"], "",
             with_token);
  EXPECT_EQ(r.status, 404) << r.body;
  r = Remote("PUT", "/v1/sandboxes/" + id + "/files?path=/tmp/x", stranger["token"], "data",
             with_token);
  EXPECT_EQ(r.status, 404) << r.body;
  r = Remote("POST", "/v1/sandboxes/" + id + "/exec", owner["token"], exec_body, with_token);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_THAT(r.body, HasSubstr(R"({"stdout":")" +
                                Base64Encode(s["username"].get<std::string>() + "\n") + "\"}"));
  EXPECT_THAT(r.body, HasSubstr(R"({"exit":{"code":0,"timed_out":false}})"));
  r = Remote("PUT", "/v1/sandboxes/" + id + "/files?path=/tmp/remote.txt", owner["token"],
             "sent remotely", with_token);
  ASSERT_EQ(r.status, 200) << r.body;
  r = Remote("GET", "/v1/sandboxes/" + id + "/files?path=/tmp/remote.txt", owner["token"], "",
             with_token);
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "sent remotely");

  // Without the client token, or with a wrong one, nothing is destroyed.
  r = Remote("DELETE", "/v1/sandboxes/" + id, owner["token"]);
  EXPECT_EQ(r.status, 403);
  std::string wrong = s["token"];
  wrong[0] = wrong[0] == 'a' ? 'b' : 'a';
  r = Remote("DELETE", "/v1/sandboxes/" + id, owner["token"], "",
             {"-H", "X-Ephemera-Token: " + wrong});
  EXPECT_EQ(r.status, 403);
  // Another owner learns nothing, not even that it exists: the same 404 as
  // for an id nobody has, with the wrong token or the right one.
  for (const std::string& presented : {wrong, s["token"].get<std::string>()}) {
    r = Remote("DELETE", "/v1/sandboxes/" + id, stranger["token"], "",
               {"-H", "X-Ephemera-Token: " + presented});
    EXPECT_EQ(r.status, 404);
  }
  CurlResult unknown = Remote("DELETE", "/v1/sandboxes/123e4567-e89b-42d3-a456-426614174000",
                              stranger["token"], "", {"-H", "X-Ephemera-Token: " + wrong});
  EXPECT_EQ(unknown.status, 404);
  EXPECT_EQ(unknown.Json()["error"]["code"], r.Json()["error"]["code"]);
  ASSERT_EQ(List().size(), 1u);
  r = Remote("DELETE", "/v1/sandboxes/" + id, owner["token"], "",
             {"-H", "X-Ephemera-Token: " + s["token"].get<std::string>()});
  EXPECT_EQ(r.status, 200) << r.body;
  ExpectNothingLeft();
}

// Sends `text` on a fresh connection to the forwarded port and reads the
// echo back; "" when nothing listens or nothing comes back.
std::string EchoThrough(std::uint16_t port, const std::string& text) {
  UniqueFd fd = test::ConnectLoopback(port);
  if (!fd) return "";
  timeval timeout{20, 0};
  ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  if (::write(fd.get(), text.data(), text.size()) != static_cast<ssize_t>(text.size())) return "";
  std::string got;
  char buffer[256];
  while (got.size() < text.size()) {
    ssize_t n = ::read(fd.get(), buffer, sizeof buffer);
    if (n <= 0) break;
    got.append(buffer, static_cast<std::size_t>(n));
  }
  return got;
}

TEST_F(RemoteTest, AnExposedGuestPortIsForwardedUntilClosedOrDestroyed) {
  json owner = AddToken({{"name", "owner"}});
  json stranger = AddToken({{"name", "stranger"}});
  CurlResult r = Remote("POST", "/v1/sandboxes", owner["token"], R"({"ttl_seconds": 600})");
  ASSERT_EQ(r.status, 201) << r.body << DaemonLog();
  json s = r.Json();
  const std::string id = s["id"];
  const std::string ports = "/v1/sandboxes/" + id + "/ports";
  const std::vector<std::string> with_token = {
      "-H", "X-Ephemera-Token: " + s["token"].get<std::string>()};

  // A real service in the guest: busybox nc echoing every connection.
  SshSession client(s["host"], s["port"].get<std::uint16_t>(), s["username"], 30s);
  ASSERT_TRUE(client.AuthenticateWithPassword(s["password"]));
  auto started = client.Execute(
      "setsid busybox nc -ll -p 8080 -e /bin/cat </dev/null >/dev/null 2>&1 & echo started", 30s);
  ASSERT_EQ(started.out, "started\n") << started.err;

  // Refused: no client token, another owner, a bad body, SSH's own port.
  EXPECT_EQ(Remote("POST", ports, owner["token"], R"({"guest_port": 8080})").status, 403);
  EXPECT_EQ(Remote("POST", ports, stranger["token"], R"({"guest_port": 8080})", with_token).status,
            404);
  r = Remote("POST", ports, owner["token"], R"({"guest_port": 70000})", with_token);
  EXPECT_EQ(r.status, 400);
  EXPECT_THAT(r.body, HasSubstr("'guest_port' must be between 1 and 65535"));
  r = Remote("POST", ports, owner["token"], R"({"guest_port": 22})", with_token);
  EXPECT_EQ(r.status, 409) << r.body;

  r = Remote("POST", ports, owner["token"], R"({"guest_port": 8080})", with_token);
  ASSERT_EQ(r.status, 201) << r.body << DaemonLog();
  EXPECT_EQ(r.headers["location"], ports + "/8080");
  const std::uint16_t host_port = r.Json()["host_port"].get<std::uint16_t>();
  EXPECT_NE(host_port, s["port"].get<std::uint16_t>());
  // nc may take a moment to listen after the SSH command returned.
  std::string echoed;
  for (int i = 0; i < 50 && echoed.empty(); ++i) {
    echoed = EchoThrough(host_port, "through the forward\n");
    if (echoed.empty()) std::this_thread::sleep_for(200ms);
  }
  EXPECT_EQ(echoed, "through the forward\n");
  EXPECT_EQ(Remote("POST", ports, owner["token"], R"({"guest_port": 8080})", with_token).status,
            409);

  json listed = Remote("GET", ports, owner["token"]).Json()["ports"];
  ASSERT_EQ(listed.size(), 2u) << listed.dump();
  EXPECT_EQ(listed[0]["guest_port"], 22);
  EXPECT_EQ(listed[0]["host_port"], s["port"]);
  EXPECT_EQ(listed[1]["guest_port"], 8080);
  EXPECT_EQ(listed[1]["host_port"], host_port);
  EXPECT_EQ(Remote("GET", ports, stranger["token"]).status, 404);

  // Closed: the host port is gone, SSH's stays.
  EXPECT_EQ(Remote("DELETE", ports + "/8080", owner["token"]).status, 403);
  EXPECT_EQ(Remote("DELETE", ports + "/8080", stranger["token"], "", with_token).status, 404);
  EXPECT_EQ(Remote("DELETE", ports + "/22", owner["token"], "", with_token).status, 409);
  EXPECT_EQ(Remote("DELETE", ports + "/80x", owner["token"], "", with_token).status, 400);
  r = Remote("DELETE", ports + "/8080", owner["token"], "", with_token);
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_FALSE(test::ConnectLoopback(host_port));
  EXPECT_EQ(Remote("DELETE", ports + "/8080", owner["token"], "", with_token).status, 404);
  EXPECT_EQ(client.Execute("id -un", 30s).out, s["username"].get<std::string>() + "\n");

  // Exposed again, then the sandbox goes: so does the forward.
  r = Remote("POST", ports, owner["token"], R"({"guest_port": 8080})", with_token);
  ASSERT_EQ(r.status, 201) << r.body;
  const std::uint16_t again = r.Json()["host_port"].get<std::uint16_t>();
  EXPECT_EQ(EchoThrough(again, "again\n"), "again\n");
  r = Remote("DELETE", "/v1/sandboxes/" + id, owner["token"], "", with_token);
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_FALSE(test::ConnectLoopback(again));
  ExpectNothingLeft();
}

TEST_F(RemoteTest, TheRemoteCliPinsTheCertificateAndRemembersItsSandboxes) {
  const std::string token = AddToken({{"name", "laptop"}})["token"];
  auto remote = [&](std::vector<std::string> args) {
    args.insert(args.begin(), {EPHEMERA_CLI, "--remote", kBase});
    return args;
  };
  // First use pins the certificate (and remembers the token for this server).
  ProcessResult r = RunProcess(remote({"--token", token, "status", "--json"}), 30s);
  ASSERT_TRUE(r.ok()) << r.err;
  json status = json::parse(r.out);
  EXPECT_THAT(r.err,
              HasSubstr(status["front_doors"]["https"]["certificate_sha256"].get<std::string>()));

  r = RunProcess(remote({"create", "--json", "--ttl", "600"}), 180s);
  ASSERT_TRUE(r.ok()) << r.err << DaemonLog();
  json s = json::parse(r.out);
  // ssh, extend and destroy need nothing but the id: the client remembers the rest.
  r = RunProcess({EPHEMERA_CLI, "ssh", s["id"], "--", "id", "-un"}, 60s);
  EXPECT_EQ(r.out, s["username"].get<std::string>() + "\n") << r.err;
  r = RunProcess({EPHEMERA_CLI, "extend", s["id"], "--ttl", "1200", "--json"}, 60s);
  ASSERT_TRUE(r.ok()) << r.err;
  EXPECT_GT(json::parse(r.out)["expires_at"].get<std::string>(),
            s["expires_at"].get<std::string>());
  r = RunProcess({EPHEMERA_CLI, "port", "add", s["id"], "8080", "--json"}, 60s);
  ASSERT_TRUE(r.ok()) << r.err;
  const json added = json::parse(r.out);
  r = RunProcess({EPHEMERA_CLI, "port", "list", s["id"], "--json"}, 60s);
  ASSERT_TRUE(r.ok()) << r.err;
  EXPECT_EQ(
      json::parse(r.out),
      json::array({{{"guest_port", 22}, {"host_port", s["port"]}, {"host", s["host"]}}, added}));
  r = RunProcess({EPHEMERA_CLI, "port", "rm", s["id"], "8080"}, 60s);
  EXPECT_TRUE(r.ok()) << r.err;
  EXPECT_EQ(r.out, "closed port 8080 of " + s["id"].get<std::string>() + "\n");
  r = RunProcess({EPHEMERA_CLI, "destroy", s["id"]}, 60s);
  EXPECT_TRUE(r.ok()) << r.err;
  ExpectNothingLeft();

  // A new certificate (the daemon regenerates a missing one) is refused
  // before the token is sent.
  StopDaemon(SIGTERM);
  RemoveAll(state_.path() / "state" / "tls");
  StartDaemon();
  r = RunProcess(remote({"status"}), 30s);
  EXPECT_FALSE(r.ok());
  EXPECT_THAT(r.err, HasSubstr("certificate has changed"));
  EXPECT_THAT(r.err, HasSubstr("Nothing was sent"));
}

class TrustedNetworkTest : public test::DaemonTest {
 protected:
  std::vector<std::string> ExtraArgs() const override {
    return {"--listen", "127.0.0.1:8080", "--insecure-http", "--no-access-tokens"};
  }
};

TEST_F(TrustedNetworkTest, PlainHttpWithoutTokensWhenAskedFor) {
  CurlResult r = Curl({"http://127.0.0.1:8080/v1/status"});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_FALSE(r.Json()["front_doors"]["https"]["tls"].get<bool>());
  EXPECT_THAT(DaemonLog(), HasSubstr("without access tokens"));
}

TEST(RemoteStartTest, ABadCertificateOrKeyFileStopsTheStartWithItsName) {
  test::TempDir dir;
  test::WriteBytes(dir.path() / "cert.pem", "not a certificate\n");
  test::WriteBytes(dir.path() / "config.yaml",
                   "state_dir: " + (dir.path() / "state").string() +
                       "\nsocket: " + (dir.path() / "api.sock").string() +
                       "\nremote: {listen: '127.0.0.1:8443', tls_certificate: " +
                       (dir.path() / "cert.pem").string() +
                       ", tls_key: " + (dir.path() / "missing-key.pem").string() + "}\n");
  ProcessResult r = RunProcess({EPHEMERAD, "--config", (dir.path() / "config.yaml").string()}, 60s);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("cert.pem is not a PEM certificate"));
  EXPECT_FALSE(std::filesystem::exists(dir.path() / "api.sock"));
}

}  // namespace
}  // namespace ephemera
