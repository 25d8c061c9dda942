// The registry client's pieces: base64, WWW-Authenticate challenges,
// credential files, URLs, and HTTP transfers against scripted servers on
// loopback (a body that stalls or stops early, redirects, the Bearer token
// flow). A real registry is pulled from in integration/registry_pull_test.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <future>
#include <mutex>

#include "core/base64.h"
#include "core/error.h"
#include "core/fs.h"
#include "core/sha256.h"
#include "image/oci/http_fetch.h"
#include "image/oci/importer.h"
#include "image/oci/registry.h"
#include "unit/error_of.h"
#include "unit/loopback_server.h"
#include "unit/test_files.h"

namespace ephemera::oci {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using ::testing::HasSubstr;

using test::ErrorOf;

TEST(Base64Test, RoundTripsAndRefusesWhatIsNotCanonical) {
  for (const std::string& s : std::vector<std::string>{"", "a", "ab", "abc", "user:p@ss w0rd",
                                                       std::string("\0\xff\x10", 3)}) {
    EXPECT_EQ(Base64Decode(Base64Encode(s)), s);
  }
  EXPECT_EQ(Base64Encode("user:password"), "dXNlcjpwYXNzd29yZA==");
  for (const char* bad : {"abc", "ab=c", "a===", "dXNl cjpw", "dXNlcjpwYXNzd29yZA=a", "YR=="}) {
    EXPECT_FALSE(Base64Decode(bad).has_value()) << bad;
  }
}

TEST(AuthChallengeTest, ParsesBearerAndBasicAndRefusesMalformedOnes) {
  auto one = [](std::string_view header) {
    std::vector<AuthChallenge> all = ParseAuthChallenges(header);
    EXPECT_EQ(all.size(), 1u) << header;
    return all.front();
  };
  AuthChallenge c = one(
      R"(Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull")");
  EXPECT_EQ(c.scheme, "bearer");
  EXPECT_EQ(c.params["realm"], "https://auth.example/token");
  EXPECT_EQ(c.params["service"], "registry.example");
  EXPECT_EQ(c.params["scope"], "repository:a/b:pull");
  c = one(R"(Basic realm="a \"quoted\" realm")");
  EXPECT_EQ(c.scheme, "basic");
  EXPECT_EQ(c.params["realm"], R"(a "quoted" realm)");
  EXPECT_EQ(one("BASIC Realm=token68").params["realm"], "token68");
  for (const char* bad : {"", R"(Bearer realm="open)", "Bearer realm", R"(Bearer a="1" b="2")",
                          R"(Bearer a="1",a="2")", R"(Basic realm="r",, Bearer)"}) {
    EXPECT_EQ(ErrorOf([&] { ParseAuthChallenges(bad); }).code(), ErrorCode::kInvalidArgument)
        << bad;
  }
}

TEST(AuthChallengeTest, SeveralChallengesInOneHeaderAreEachParsed) {
  // As a registry behind a proxy, or two header lines joined, send them.
  std::vector<AuthChallenge> all = ParseAuthChallenges(
      R"(Basic realm="Registry", Bearer realm="https://auth.example/token",service="r.example", Negotiate)");
  ASSERT_EQ(all.size(), 3u);
  EXPECT_EQ(all[0].scheme, "basic");
  EXPECT_EQ(all[0].params["realm"], "Registry");
  EXPECT_EQ(all[1].scheme, "bearer");
  EXPECT_EQ(all[1].params["realm"], "https://auth.example/token");
  EXPECT_EQ(all[1].params["service"], "r.example");
  EXPECT_EQ(all[2].scheme, "negotiate");
  EXPECT_TRUE(all[2].params.empty());
  all = ParseAuthChallenges("Negotiate, Basic realm=x");
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[1].params["realm"], "x");
}

TEST(CredentialsTest, ReadsAuthJsonAsLoginToolsWriteIt) {
  test::TempDir dir;
  const fs::path file = dir.path() / "auth.json";
  test::WriteBytes(file, R"({"auths":{
      "reg.example:5000":{"auth":")" +
                             Base64Encode("alice:s3cr:et") + R"("},
      "https://index.example/v1/":{"username":"bob","password":"pw"}}})");
  auto alice = LoadCredentials(file, "reg.example:5000");
  ASSERT_TRUE(alice);
  EXPECT_EQ(alice->username, "alice");
  EXPECT_EQ(alice->password, "s3cr:et");  // the first colon separates
  auto bob = LoadCredentials(file, "index.example");
  ASSERT_TRUE(bob);
  EXPECT_EQ(bob->username, "bob");
  EXPECT_FALSE(LoadCredentials(file, "other.example"));
  EXPECT_FALSE(LoadCredentials(file, "reg.example"));  // another port is another registry

  test::WriteBytes(file, R"({"auths":{"h":{"auth":"not base64!"}}})");
  Error e = ErrorOf([&] { LoadCredentials(file, "h"); });
  EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
  EXPECT_THAT(e.what(), HasSubstr(file.string()));
  EXPECT_THAT(e.what(), HasSubstr("not base64"));
  test::WriteBytes(file, R"({"auths":{"h":{"auth":")" + Base64Encode("nocolon") + R"("}}})");
  EXPECT_THAT(ErrorOf([&] { LoadCredentials(file, "h"); }).what(), HasSubstr("USER:PASSWORD"));
  test::WriteBytes(file, "[1,2]");
  EXPECT_THAT(ErrorOf([&] { LoadCredentials(file, "h"); }).what(), HasSubstr("not a JSON object"));
  EXPECT_EQ(ErrorOf([&] { LoadCredentials(dir.path() / "missing.json", "h"); }).code(),
            ErrorCode::kNotFound);
}

TEST(HttpUrlTest, ParsesAndResolvesRedirects) {
  HttpUrl u = HttpUrl::Parse("https://reg.example:5000/v2/a/manifests/1?x=y");
  EXPECT_TRUE(u.tls);
  EXPECT_EQ(u.host, "reg.example");
  EXPECT_EQ(u.port, 5000);
  EXPECT_EQ(u.target, "/v2/a/manifests/1?x=y");
  EXPECT_EQ(u.authority(), "reg.example:5000");
  EXPECT_EQ(HttpUrl::Parse("http://h").str(), "http://h/");
  EXPECT_EQ(HttpUrl::Parse("https://[::1]:8443/t").host, "[::1]");
  EXPECT_EQ(u.Resolve("/blobs/x").str(), "https://reg.example:5000/blobs/x");
  EXPECT_EQ(u.Resolve("http://s3.example/b?sig=1").str(), "http://s3.example/b?sig=1");
  for (const char* bad : {"ftp://h/", "https://", "https://u:p@h/", "https://h:0/",
                          "https://h:99999/", "https://h:x/", "https://h/a b"}) {
    EXPECT_EQ(ErrorOf([&] { HttpUrl::Parse(bad); }).code(), ErrorCode::kInvalidArgument) << bad;
  }
  EXPECT_EQ(ErrorOf([&] { u.Resolve("relative/path"); }).code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(ErrorOf([&] { u.Resolve("//other.example/x"); }).code(), ErrorCode::kInvalidArgument);
}

// A scripted HTTP server: each request's head is answered by `respond`
// with raw bytes. Requests are recorded as "METHOD TARGET | Authorization".
class ScriptedServer {
 public:
  using Respond = std::function<std::string(const std::string& target, const std::string& auth)>;
  // A request for `hold_open` gets its answer and then silence (no EOF).
  explicit ScriptedServer(Respond respond, std::string hold_open = "")
      : respond_(std::move(respond)),
        hold_open_(std::move(hold_open)),
        server_([this](int fd) { Serve(fd); }) {}
  ~ScriptedServer() {
    // Every handler returns before the server goes (they read to EOF).
    std::unique_lock lock(mutex_);
    idle_.wait_for(lock, 30s, [&] { return active_ == 0; });
  }
  std::uint16_t port() const { return server_.port(); }
  std::string base() const { return "http://127.0.0.1:" + std::to_string(port()); }
  std::vector<std::string> requests() {
    std::lock_guard lock(mutex_);
    return requests_;
  }

 private:
  void Serve(int fd) {
    {
      std::lock_guard lock(mutex_);
      ++active_;
    }
    std::string head;
    char c;
    while (head.find("\r\n\r\n") == std::string::npos && ::read(fd, &c, 1) == 1) head += c;
    std::string target, auth;
    if (auto sp = head.find(' '); sp != std::string::npos) {
      target = head.substr(sp + 1, head.find(' ', sp + 1) - sp - 1);
    }
    for (const char* name : {"\r\nAuthorization: ", "\r\nauthorization: "}) {
      if (auto at = head.find(name); at != std::string::npos) {
        at += std::strlen(name);
        auth = head.substr(at, head.find("\r\n", at) - at);
      }
    }
    {
      std::lock_guard lock(mutex_);
      requests_.push_back(target + " | " + auth);
    }
    const std::string answer = respond_(target, auth);
    if (::write(fd, answer.data(), answer.size()) < 0) {
      // the client went: nothing to do
    }
    // Wait for the client to close (it has read or given up).
    if (target != hold_open_) ::shutdown(fd, SHUT_WR);
    while (::read(fd, &c, 1) > 0) {
    }
    std::lock_guard lock(mutex_);
    --active_;
    idle_.notify_all();
  }

  Respond respond_;
  std::string hold_open_;
  std::mutex mutex_;
  std::condition_variable idle_;
  int active_ = 0;
  std::vector<std::string> requests_;
  test::LoopbackServer server_;
};

std::string Answer(int status, const std::string& body, const std::string& headers = "") {
  return "HTTP/1.1 " + std::to_string(status) +
         " X\r\nContent-Length: " + std::to_string(body.size()) + "\r\n" + headers + "\r\n" + body;
}

HttpOptions Quick() {
  HttpOptions o;
  o.connect_timeout = 2s;
  o.stall_timeout = 1s;
  return o;
}

TEST(HttpGetTest, StreamsABodyAndFailsClearlyWhenItStallsOrStopsEarly) {
  const std::string big(300000, 'x');
  ScriptedServer server(
      [&](const std::string& target, const std::string&) {
        if (target == "/whole") return Answer(200, big);
        // Promises 1000 bytes, sends 10, then keeps the connection open.
        if (target == "/stall")
          return std::string("HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789");
        return Answer(404, "{}");
      },
      "/stall");
  std::string received;
  HttpResponse r = HttpGet(HttpUrl::Parse(server.base() + "/whole"), {}, Quick(),
                           [&](const char* d, std::size_t n) { received.append(d, n); });
  EXPECT_EQ(r.status, 200u);
  EXPECT_EQ(received.size(), big.size());
  EXPECT_TRUE(r.body.empty());  // the sink took it
  // An error answer is kept, not streamed.
  r = HttpGet(HttpUrl::Parse(server.base() + "/nothing"), {}, Quick(),
              [&](const char*, std::size_t) { ADD_FAILURE() << "a 404 body reached the sink"; });
  EXPECT_EQ(r.status, 404u);
  EXPECT_EQ(r.body, "{}");

  const auto started = std::chrono::steady_clock::now();
  Error e = ErrorOf([&] {
    HttpGet(HttpUrl::Parse(server.base() + "/stall"), {}, Quick(), [](const char*, std::size_t) {});
  });
  EXPECT_EQ(e.code(), ErrorCode::kUnavailable);
  EXPECT_THAT(e.what(), HasSubstr("/stall: the body stopped after 10 bytes: timed out after 1 s"));
  EXPECT_LT(std::chrono::steady_clock::now() - started, 10s);
  // Too big to keep.
  e = ErrorOf([&] { HttpGet(HttpUrl::Parse(server.base() + "/whole"), {}, Quick(), {}, 1000); });
  EXPECT_THAT(e.what(), HasSubstr("over 1000 bytes"));
}

TEST(HttpGetTest, AConnectionClosedMidBodyIsAnError) {
  test::LoopbackServer server([](int fd) {
    char c;
    std::string head;
    while (head.find("\r\n\r\n") == std::string::npos && ::read(fd, &c, 1) == 1) head += c;
    const std::string partial = "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this";
    if (::write(fd, partial.data(), partial.size()) < 0) return;
  });
  Error e = ErrorOf([&] {
    HttpGet(HttpUrl::Parse("http://127.0.0.1:" + std::to_string(server.port()) + "/blob"), {},
            Quick(), [](const char*, std::size_t) {});
  });
  EXPECT_EQ(e.code(), ErrorCode::kUnavailable);
  EXPECT_THAT(e.what(), HasSubstr("stopped after 9 bytes: the connection closed early"));
}

TEST(HttpGetTest, RedirectsKeepCredentialsToTheirServer) {
  ScriptedServer storage(
      [](const std::string&, const std::string&) { return Answer(200, "blob"); });
  ScriptedServer registry([&](const std::string& target, const std::string&) {
    if (target == "/same") return Answer(307, "", "Location: /final\r\n");
    if (target == "/final") return Answer(200, "here");
    if (target == "/loop") return Answer(302, "", "Location: /loop\r\n");
    return Answer(307, "", "Location: " + storage.base() + "/signed?sig=1\r\n");
  });
  const HttpHeaders auth = {{"Authorization", "Bearer secret"}};
  EXPECT_EQ(HttpGet(HttpUrl::Parse(registry.base() + "/same"), auth, Quick()).body, "here");
  EXPECT_EQ(registry.requests().back(), "/final | Bearer secret");
  HttpResponse r = HttpGet(HttpUrl::Parse(registry.base() + "/elsewhere"), auth, Quick());
  EXPECT_EQ(r.body, "blob");
  EXPECT_EQ(r.url.port, storage.port());
  EXPECT_EQ(storage.requests(), std::vector<std::string>{"/signed?sig=1 | "});
  EXPECT_THAT(
      ErrorOf([&] { HttpGet(HttpUrl::Parse(registry.base() + "/loop"), {}, Quick()); }).what(),
      HasSubstr("more than 5 redirects"));
}

// A registry of one image (one layer), behind the token flow, scripted:
// what the distribution API and a token server answer.
struct ScriptedRegistry {
  std::string layer = std::string(5000, 'L');
  std::string config = R"({"architecture":"amd64","os":"linux","rootfs":{"type":"layers"}})";
  std::string manifest, index;
  std::string token_credentials;  // the Basic header the token server wants
  std::string realm;              // where the challenge sends for tokens (default: here)
  bool corrupt_layer = false;
  bool basic_challenge_too = false;  // a Basic challenge line before the Bearer one
  std::unique_ptr<ScriptedServer> server;

  ScriptedRegistry() {
    auto desc = [](const char* type, const std::string& blob) {
      return R"({"mediaType":")" + std::string(type) + R"(","digest":"sha256:)" + Sha256Hex(blob) +
             R"(","size":)" + std::to_string(blob.size()) + "}";
    };
    manifest =
        R"({"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":)" +
        desc("application/vnd.oci.image.config.v1+json", config) + R"(,"layers":[)" +
        desc("application/vnd.oci.image.layer.v1.tar", layer) + "]}";
    std::string platform = desc("application/vnd.oci.image.manifest.v1+json", manifest);
    platform.insert(platform.size() - 1, R"(,"platform":{"os":"linux","architecture":"amd64"})");
    index =
        R"({"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[)" +
        platform + "]}";
    server = std::make_unique<ScriptedServer>(
        [this](const std::string& target, const std::string& auth) {
          return Respond(target, auth);
        });
  }
  std::string host() const { return "127.0.0.1:" + std::to_string(server->port()); }

  std::string Respond(const std::string& target, const std::string& auth) {
    if (target.starts_with("/token?")) {
      if (target != "/token?service=test-registry&scope=repository%3Aa%2Fb%3Apull") {
        return Answer(400, "bad query");
      }
      if (auth != token_credentials) return Answer(401, R"({"errors":[{"code":"DENIED"}]})");
      return Answer(200, R"({"token":"tok-123","expires_in":300})");
    }
    if (auth != "Bearer tok-123") {
      return Answer(
          401, R"({"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]})",
          std::string(basic_challenge_too ? "WWW-Authenticate: Basic realm=\"Registry\"\r\n" : "") +
              "WWW-Authenticate: Bearer realm=\"" +
              (realm.empty() ? "http://" + host() + "/token" : realm) +
              "\",service=\"test-registry\",scope=\"repository:a/b:pull\"\r\n");
    }
    const std::string v2 = "/v2/a/b/";
    if (target == v2 + "manifests/1") {
      return Answer(200, index, "Content-Type: application/vnd.oci.image.index.v1+json\r\n");
    }
    if (target == v2 + "manifests/sha256:" + Sha256Hex(manifest)) {
      return Answer(200, manifest, "Content-Type: application/vnd.oci.image.manifest.v1+json\r\n");
    }
    if (target == v2 + "blobs/sha256:" + Sha256Hex(config)) return Answer(200, config);
    if (target == v2 + "blobs/sha256:" + Sha256Hex(layer)) {
      std::string sent = layer;
      if (corrupt_layer) sent[100] ^= 1;
      return Answer(200, sent);
    }
    return Answer(404, R"({"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]})");
  }
};

TEST(RegistryPullTest, OfSeveralChallengesTheTokenFlowIsTaken) {
  ScriptedRegistry registry;
  registry.basic_challenge_too = true;
  test::TempDir dir;
  RegistryOptions options;
  options.registries.push_back({registry.host(), true, {}, {}});
  options.stall_timeout = 2s;
  LocalImage image =
      PullRegistryImage(ImageReference::Parse("docker://" + registry.host() + "/a/b:1"), options,
                        dir.path() / "blobs");
  ASSERT_EQ(image.layers.size(), 1u);
  auto requests = registry.server->requests();
  EXPECT_EQ(std::count_if(requests.begin(), requests.end(),
                          [](const std::string& r) { return r.starts_with("/token?"); }),
            1);
}

TEST(RegistryPullTest, TheTokenFlowIndexAndBlobsOfAScriptedRegistry) {
  ScriptedRegistry registry;
  test::TempDir dir;
  const fs::path creds = dir.path() / "auth.json";
  test::WriteBytes(creds, R"({"auths":{")" + registry.host() + R"(":{"auth":")" +
                              Base64Encode("ci:pw") + R"("}}})");
  registry.token_credentials = "Basic " + Base64Encode("ci:pw");
  RegistryOptions options;
  options.registries.push_back({registry.host(), true, {}, creds});
  options.stall_timeout = 2s;
  std::vector<PullProgress> seen;
  LocalImage image =
      PullRegistryImage(ImageReference::Parse("docker://" + registry.host() + "/a/b:1"), options,
                        dir.path() / "blobs", [&](const PullProgress& p) { seen.push_back(p); });
  EXPECT_EQ(image.manifest_digest.hex, Sha256Hex(registry.manifest));
  ASSERT_EQ(image.layers.size(), 1u);
  EXPECT_EQ(ReadFile(image.layers[0].path), registry.layer);
  EXPECT_EQ(image.layers[0].path, BlobStorePath(dir.path() / "blobs", image.layers[0].digest));
  // The config is a blob of the store too, named for the image folder to keep.
  ASSERT_TRUE(image.config_blob);
  EXPECT_EQ(ReadFile(BlobStorePath(dir.path() / "blobs", *image.config_blob)), image.config);
  ASSERT_FALSE(seen.empty());
  EXPECT_EQ(seen.back().layer, 1u);
  EXPECT_EQ(seen.back().bytes, registry.layer.size());
  EXPECT_FALSE(seen.back().cached);
  // The token was fetched once and sent from then on.
  auto requests = registry.server->requests();
  EXPECT_EQ(std::count_if(requests.begin(), requests.end(),
                          [](const std::string& r) { return r.starts_with("/token?"); }),
            1);
  EXPECT_EQ(requests.back(),
            "/v2/a/b/blobs/sha256:" + Sha256Hex(registry.layer) + " | Bearer tok-123");

  // Again: the blobs are in the store, only manifests travel.
  seen.clear();
  PullRegistryImage(ImageReference::Parse("docker://" + registry.host() + "/a/b:1"), options,
                    dir.path() / "blobs", [&](const PullProgress& p) { seen.push_back(p); });
  EXPECT_TRUE(seen.back().cached);

  // Wrong credentials: the token server says no, and the error says who.
  registry.token_credentials = "Basic " + Base64Encode("ci:other");
  Error e = ErrorOf([&] {
    PullRegistryImage(ImageReference::Parse("docker://" + registry.host() + "/a/b:1"), options,
                      dir.path() / "blobs2");
  });
  EXPECT_EQ(e.code(), ErrorCode::kUnauthenticated);
  EXPECT_THAT(e.what(), HasSubstr("docker://" + registry.host() + "/a/b:1"));
  EXPECT_THAT(e.what(), HasSubstr("refused the credentials of 'ci' from " + creds.string()));

  // A layer that does not hash to its digest never enters the store.
  registry.token_credentials = "Basic " + Base64Encode("ci:pw");
  registry.corrupt_layer = true;
  e = ErrorOf([&] {
    PullRegistryImage(ImageReference::Parse("docker://" + registry.host() + "/a/b:1"), options,
                      dir.path() / "blobs3");
  });
  EXPECT_EQ(e.code(), ErrorCode::kFailedPrecondition);
  EXPECT_THAT(e.what(), HasSubstr("layer 1"));
  const fs::path layer_dir = dir.path() / "blobs3" / "sha256";
  for (const auto& entry : fs::directory_iterator(layer_dir)) {
    EXPECT_NE(entry.path().filename().string(), Sha256Hex(registry.layer));
    EXPECT_EQ(entry.path().filename().string().find(".partial"), std::string::npos);
  }
  // An unknown tag.
  e = ErrorOf([&] {
    PullRegistryImage(ImageReference::Parse("docker://" + registry.host() + "/a/b:2"), options,
                      dir.path() / "blobs");
  });
  EXPECT_EQ(e.code(), ErrorCode::kNotFound);
  EXPECT_THAT(e.what(), HasSubstr("manifest unknown"));
}

TEST(RegistryPullTest, CredentialsNeverGoToAPlainHttpTokenServerElsewhere) {
  ScriptedRegistry registry;
  std::string seen_auth = "(no request)";
  ScriptedServer token_server([&](const std::string&, const std::string& auth) {
    seen_auth = auth;
    return Answer(401, R"({"errors":[{"code":"UNAUTHORIZED"}]})");
  });
  registry.realm = token_server.base() + "/token";
  test::TempDir dir;
  const fs::path creds = dir.path() / "auth.json";
  test::WriteBytes(creds, R"({"auths":{")" + registry.host() + R"(":{"auth":")" +
                              Base64Encode("ci:pw") + R"("}}})");
  RegistryOptions options;
  options.registries.push_back({registry.host(), true, {}, creds});
  Error e = ErrorOf([&] {
    PullRegistryImage(ImageReference::Parse("docker://" + registry.host() + "/a/b:1"), options,
                      dir.path() / "blobs");
  });
  EXPECT_EQ(seen_auth, "");  // asked, but without the password
  EXPECT_EQ(e.code(), ErrorCode::kUnauthenticated);
  EXPECT_THAT(e.what(), HasSubstr("refused anonymous access"));
}

TEST(ImageReferenceTest, RegistryTagsAndRepositoriesFollowTheDistributionGrammar) {
  EXPECT_EQ(ImageReference::Parse("docker://h:5000/a/b-c_d.e:v1.2-rc_3").reference, "v1.2-rc_3");
  EXPECT_EQ(ImageReference::Parse("docker://h/a").reference, "latest");
  for (const char* bad : {"docker://h/a:", "docker://h/a:-x", "docker://h/a:x?y=1",
                          "docker://h/a:x%0d", "docker://h/a/../b:1", "docker://h/a//b",
                          "docker://h/a/", "docker://h/A:1", "docker://h/a@sha256:12"}) {
    EXPECT_EQ(ErrorOf([&] { ImageReference::Parse(bad); }).code(), ErrorCode::kInvalidArgument)
        << bad;
  }
}

TEST(BlobStoreTest, PruneKeepsWhatImagesCameFromAndWhatAPullMayBeWriting) {
  test::TempDir dir;
  const fs::path store = BlobStoreOf(dir.path()) / "sha256";
  fs::create_directories(store);
  fs::create_directories(dir.path() / "img-0123456789ab");
  const std::string used(64, 'a'), unused(64, 'b'), young(64, 'c');
  test::WriteBytes(dir.path() / "img-0123456789ab/manifest.json",
                   R"({"name":"img","blobs":["sha256:)" + used + R"("]})");
  const auto old = fs::file_time_type::clock::now() - std::chrono::hours(2);
  for (const std::string& name : {used, unused, young, "." + unused + ".partial-x1Y2z3"}) {
    test::WriteBytes(store / name, "blob");
    if (name != young) fs::last_write_time(store / name, old);
  }
  EXPECT_EQ(
      PruneBlobStore(dir.path(), std::chrono::hours(1)),
      (std::vector<std::string>{"sha256:." + unused + ".partial-x1Y2z3", "sha256:" + unused}));
  EXPECT_TRUE(fs::exists(store / used));
  EXPECT_TRUE(fs::exists(store / young));
  EXPECT_FALSE(fs::exists(store / unused));
}

}  // namespace
}  // namespace ephemera::oci
