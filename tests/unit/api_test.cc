// The api part's pieces that stand alone: the IP filter, the rate limiter,
// bearer tokens, the token wire format, the TLS identity, and the HTTP
// server on TCP with and without TLS.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <utility>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>

#include "api/access.h"
#include "api/http_server.h"
#include "api/ip_filter.h"
#include "api/peer_limits.h"
#include "api/rate_limiter.h"
#include "api/router.h"
#include "api/tls.h"
#include "api/wire.h"
#include "core/fs.h"
#include "unit/test_files.h"

namespace ephemera {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using namespace std::chrono_literals;
using ::testing::HasSubstr;

asio::ip::address Address(const char* text) { return asio::ip::make_address(text); }

template <typename F>
void ExpectError(F f, ErrorCode code, const std::string& needle) {
  try {
    f();
    ADD_FAILURE() << "no error; expected one containing: " << needle;
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), code) << e.what();
    EXPECT_THAT(e.what(), HasSubstr(needle));
  }
}

TEST(IpFilterTest, DenyWinsThenAllowDecidesAndEmptyAllowsAny) {
  IpFilter any;
  EXPECT_TRUE(any.Admits(Address("203.0.113.9")));
  IpFilter filter({"10.0.0.0/8", "fd00::/8", "192.0.2.7"}, {"10.1.0.0/16"});
  EXPECT_TRUE(filter.Admits(Address("10.2.3.4")));
  EXPECT_FALSE(filter.Admits(Address("10.1.3.4")));
  EXPECT_TRUE(filter.Admits(Address("192.0.2.7")));
  EXPECT_FALSE(filter.Admits(Address("192.0.2.8")));
  EXPECT_TRUE(filter.Admits(Address("fd12::1")));
  EXPECT_FALSE(filter.Admits(Address("fe80::1")));
  // An IPv4 peer on a dual-stack socket arrives IPv4-mapped.
  EXPECT_TRUE(filter.Admits(Address("::ffff:10.2.3.4")));
  EXPECT_FALSE(filter.Admits(Address("::ffff:10.1.3.4")));
  IpFilter deny_all({"any"}, {"any"});
  EXPECT_FALSE(deny_all.Admits(Address("127.0.0.1")));
  IpFilter odd_prefix({"172.16.0.0/12"}, {});
  EXPECT_TRUE(odd_prefix.Admits(Address("172.31.255.255")));
  EXPECT_FALSE(odd_prefix.Admits(Address("172.32.0.0")));
}

TEST(IpFilterTest, BadEntriesNameTheListAndTheEntry) {
  ExpectError([] { IpFilter({"10.0.0.0/33"}, {}); }, ErrorCode::kInvalidArgument,
              "allow: '10.0.0.0/33' has a bad prefix");
  ExpectError([] { IpFilter({}, {"example.com"}); }, ErrorCode::kInvalidArgument,
              "deny: 'example.com' is not an IP address");
  ExpectError([] { IpFilter({"10.1.2.3/8"}, {}); }, ErrorCode::kInvalidArgument, "host bits");
  ExpectError([] { IpFilter({"10.0.0.0/"}, {}); }, ErrorCode::kInvalidArgument, "bad prefix");
}

TEST(RateLimiterTest, BurstThenSteadyRateWithRetryAfter) {
  RateLimiter limiter;
  auto t0 = RateLimiter::Clock::now();
  for (int i = 0; i < 3; ++i) EXPECT_FALSE(limiter.Take("a", 60, 3, t0));
  auto wait = limiter.Take("a", 60, 3, t0);
  ASSERT_TRUE(wait);
  EXPECT_EQ(wait->count(), 1);                 // 60/min: one more after a second
  EXPECT_FALSE(limiter.Take("b", 60, 3, t0));  // callers are independent
  EXPECT_FALSE(limiter.Take("a", 60, 3, t0 + 1s));
  EXPECT_TRUE(limiter.Take("a", 60, 3, t0 + 1s));
  // A slow rate asks for a longer wait.
  EXPECT_FALSE(limiter.Take("slow", 2, 1, t0));
  auto slow = limiter.Take("slow", 2, 1, t0);
  ASSERT_TRUE(slow);
  EXPECT_EQ(slow->count(), 30);
}

TEST(RateLimiterTest, MemoryStaysBounded) {
  RateLimiter limiter(100);
  auto t0 = RateLimiter::Clock::now();
  for (int i = 0; i < 1000; ++i) limiter.Take("caller" + std::to_string(i), 60, 10, t0);
  EXPECT_LE(limiter.size(), 100u);
  for (int i = 0; i < 50; ++i) limiter.Take("later" + std::to_string(i), 60, 10, t0 + 60s);
  EXPECT_EQ(limiter.size(), 100u);
}

TEST(RateLimiterTest, ABusyCallerIsNeverTheOneForgotten) {
  // At the table's limit the least recently seen caller goes, never one
  // that keeps asking: its empty bucket must not be reset by a flood of
  // new keys.
  RateLimiter limiter(4);
  auto t0 = RateLimiter::Clock::now();
  EXPECT_FALSE(limiter.Take("busy", 1, 1, t0));
  for (int i = 0; i < 200; ++i) {
    limiter.Take("new" + std::to_string(i), 60, 10, t0);
    ASSERT_TRUE(limiter.Take("busy", 1, 1, t0)) << "reset after " << i << " new callers";
  }
  EXPECT_EQ(limiter.size(), 4u);
}

TEST(PeerKeyTest, IPv6CountsByItsSlash64AndMappedIPv4AsIPv4) {
  EXPECT_EQ(PeerKey(Address("192.0.2.7")), "192.0.2.7");
  EXPECT_EQ(PeerKey(Address("::ffff:192.0.2.7")), "192.0.2.7");
  EXPECT_EQ(PeerKey(Address("2001:db8:1:2:aaaa::1")), "2001:db8:1:2::/64");
  EXPECT_EQ(PeerKey(Address("2001:db8:1:2:bbbb::9")), PeerKey(Address("2001:db8:1:2::1")));
  EXPECT_NE(PeerKey(Address("2001:db8:1:3::1")), PeerKey(Address("2001:db8:1:2::1")));
  PeerSlots slots(2);
  EXPECT_TRUE(slots.Take("a"));
  EXPECT_TRUE(slots.Take("a"));
  EXPECT_FALSE(slots.Take("a"));
  EXPECT_TRUE(slots.Take("b"));
  slots.Release("a");
  EXPECT_TRUE(slots.Take("a"));
  EXPECT_EQ(slots.Held("a"), 2u);
}

TEST(BearerTokenTest, ParsesTheSchemeCaseInsensitively) {
  HttpRequest request;
  EXPECT_FALSE(BearerToken(request));
  request.set(http::field::authorization, "Bearer abc-123");
  EXPECT_EQ(BearerToken(request), "abc-123");
  request.set(http::field::authorization, "bearer  xyz");
  EXPECT_EQ(BearerToken(request), "xyz");
  request.set(http::field::authorization, "Basic dXNlcjpwdw==");
  EXPECT_FALSE(BearerToken(request));
  request.set(http::field::authorization, "Bearer");
  EXPECT_FALSE(BearerToken(request));
}

TEST(WireTest, TokenRequestsAreStrict) {
  NewAccessToken t =
      ParseNewAccessToken(R"({"name":"ci","expires_in_seconds":60,"max_sandboxes":2})");
  EXPECT_EQ(t.name, "ci");
  EXPECT_EQ(t.expires_in_seconds, 60);
  EXPECT_EQ(t.max_sandboxes, 2);
  EXPECT_FALSE(t.rate_per_minute);
  EXPECT_EQ(ParseNewAccessToken("").name, "");
  ExpectError([] { ParseNewAccessToken(R"({"name": 5})"); }, ErrorCode::kInvalidArgument,
              "'name' must be a string");
  ExpectError([] { ParseNewAccessToken(R"({"secret": "x"})"); }, ErrorCode::kInvalidArgument,
              "unknown field 'secret'");
  ExpectError([] { ParseNewAccessToken("[1]"); }, ErrorCode::kInvalidArgument,
              "must be a JSON object");
  EXPECT_TRUE(ParseTokenEnabled(R"({"enabled": true})"));
  EXPECT_FALSE(ParseTokenEnabled(R"({"enabled": false})"));
  ExpectError([] { ParseTokenEnabled(R"({"enabled": "yes"})"); }, ErrorCode::kInvalidArgument,
              "'enabled' must be given as true or false");
  AccessToken record;
  record.id = "tok_1";
  record.token_sha256 = std::string(64, 'f');
  record.created_at = 0;
  auto j = AccessTokenToJson(record);
  EXPECT_EQ(j["created_at"], "1970-01-01T00:00:00Z");
  EXPECT_TRUE(j["expires_at"].is_null());
  EXPECT_FALSE(j.contains("token_sha256"));
  EXPECT_FALSE(j.contains("token"));
}

class TlsTest : public ::testing::Test {
 protected:
  test::TempDir dir_;
};

TEST_F(TlsTest, AGeneratedIdentityIsKeptAcrossStarts) {
  TlsIdentity first = EnsureTlsIdentity("", "", dir_.path() / "tls", "host.example");
  EXPECT_TRUE(first.generated);
  EXPECT_EQ(first.certificate_sha256.size(), 64u);
  EXPECT_EQ(std::filesystem::status(first.key).permissions() & std::filesystem::perms::all,
            std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
  TlsIdentity again = EnsureTlsIdentity("", "", dir_.path() / "tls", "host.example");
  EXPECT_EQ(again.certificate_sha256, first.certificate_sha256);
  // Configured files are used as they are.
  TlsIdentity configured =
      EnsureTlsIdentity(first.certificate, first.key, dir_.path() / "unused", "");
  EXPECT_FALSE(configured.generated);
  EXPECT_EQ(configured.certificate_sha256, first.certificate_sha256);
  EXPECT_FALSE(std::filesystem::exists(dir_.path() / "unused"));
}

TEST_F(TlsTest, BadCertificateOrKeyFilesAreNamed) {
  TlsIdentity a = EnsureTlsIdentity("", "", dir_.path() / "a", "a");
  TlsIdentity b = EnsureTlsIdentity("", "", dir_.path() / "b", "b");
  ExpectError([&] { EnsureTlsIdentity(a.certificate, b.key, dir_.path(), ""); },
              ErrorCode::kInvalidArgument, "does not match certificate");
  ExpectError([&] { EnsureTlsIdentity(dir_.path() / "missing.pem", a.key, dir_.path(), ""); },
              ErrorCode::kInvalidArgument, "missing.pem");
  test::WriteBytes(dir_.path() / "garbage.pem", "not a certificate");
  ExpectError([&] { EnsureTlsIdentity(dir_.path() / "garbage.pem", a.key, dir_.path(), ""); },
              ErrorCode::kInvalidArgument, "garbage.pem is not a PEM certificate");
  ExpectError([&] { EnsureTlsIdentity(a.certificate, "", dir_.path(), ""); },
              ErrorCode::kInvalidArgument, "both a certificate and a key");
}

// Requests over one kept-alive connection; returns the bodies.
template <typename Stream>
std::vector<std::string> Exchange(Stream& stream, int count) {
  std::vector<std::string> bodies;
  beast::flat_buffer buffer;
  for (int i = 0; i < count; ++i) {
    http::request<http::string_body> request{http::verb::get, "/who", 11};
    request.set(http::field::host, "localhost");
    request.keep_alive(true);
    http::write(stream, request);
    http::response<http::string_body> response;
    http::read(stream, buffer, response);
    bodies.push_back(response.body());
  }
  return bodies;
}

HttpHandler Echo() {
  return [](const HttpRequest& request, const Peer& peer) {
    HttpResponse response{http::status::ok, 11};
    response.body() = std::string(request.target()) + " from " + peer.ToString();
    return response;
  };
}

TEST(HttpServerTest, PlainTcpKeepsConnectionsAliveAndKnowsThePeer) {
  HttpServer server(HttpListener::Tcp({Address("127.0.0.1"), 0}, nullptr), {}, Echo());
  ASSERT_NE(server.port(), 0);
  EXPECT_EQ(server.address(), "127.0.0.1:" + std::to_string(server.port()));
  asio::io_context io;
  beast::tcp_stream stream(io);
  stream.connect({Address("127.0.0.1"), server.port()});
  EXPECT_THAT(Exchange(stream, 3), ::testing::Each(std::string("/who from 127.0.0.1")));
}

TEST(HttpServerTest, TlsServesTheIdentitysCertificate) {
  test::TempDir dir;
  TlsIdentity identity = EnsureTlsIdentity("", "", dir.path(), "localhost");
  HttpServer server(HttpListener::Tcp({Address("127.0.0.1"), 0}, MakeServerTlsContext(identity)),
                    {}, Echo());
  asio::io_context io;
  asio::ssl::context client_tls(asio::ssl::context::tls_client);
  client_tls.load_verify_file(identity.certificate.string());
  client_tls.set_verify_mode(asio::ssl::verify_peer);
  beast::ssl_stream<beast::tcp_stream> stream(io, client_tls);
  beast::get_lowest_layer(stream).connect({Address("127.0.0.1"), server.port()});
  stream.handshake(asio::ssl::stream_base::client);  // verifies against the generated cert
  EXPECT_THAT(Exchange(stream, 2), ::testing::Each(std::string("/who from 127.0.0.1")));
}

TEST(HttpServerTest, AnAddressInUseIsAClearError) {
  HttpServer first(HttpListener::Tcp({Address("127.0.0.1"), 0}, nullptr), {}, Echo());
  ExpectError(
      [&] {
        HttpServer second(HttpListener::Tcp({Address("127.0.0.1"), first.port()}, nullptr), {},
                          Echo());
      },
      ErrorCode::kUnavailable, "cannot listen on 127.0.0.1:" + std::to_string(first.port()));
}

TEST(HttpServerTest, OnePeerCannotTakeEveryConnection) {
  HttpServerOptions options;
  options.max_connections_per_address = 2;
  HttpServer server(HttpListener::Tcp({Address("127.0.0.1"), 0}, nullptr), options, Echo());
  asio::io_context io;
  auto connect_from = [&](const char* source) {
    auto stream = std::make_unique<beast::tcp_stream>(io);
    stream->socket().open(asio::ip::tcp::v4());
    stream->socket().bind({Address(source), 0});
    stream->connect({Address("127.0.0.1"), server.port()});
    return stream;
  };
  auto a1 = connect_from("127.0.0.1");
  auto a2 = connect_from("127.0.0.1");
  EXPECT_EQ(Exchange(*a1, 1).size(), 1u);
  EXPECT_EQ(Exchange(*a2, 1).size(), 1u);
  auto a3 = connect_from("127.0.0.1");  // the third from the same address is closed
  char byte;
  beast::error_code ec;
  a3->socket().read_some(asio::buffer(&byte, 1), ec);
  EXPECT_TRUE(ec == asio::error::eof || ec == asio::error::connection_reset) << ec.message();
  auto b1 = connect_from("127.0.0.3");  // another address is served
  EXPECT_EQ(Exchange(*b1, 1), std::vector<std::string>{"/who from 127.0.0.3"});
  a1.reset();  // a closed connection frees its slot
  std::this_thread::sleep_for(50ms);
  auto a4 = connect_from("127.0.0.1");
  EXPECT_EQ(Exchange(*a4, 1).size(), 1u);
}

TEST(HttpServerTest, SlowRequestsNeverStallQuickOnes) {
  // Two quick workers; more blocked creates than that must not stop a
  // status request.
  HttpServerOptions options;
  options.workers = 2;
  options.slow_workers = 8;
  options.is_slow = [](const HttpRequest& r) { return r.target() == "/slow"; };
  std::mutex mu;
  std::condition_variable cv;
  bool release = false;
  std::atomic<int> blocked{0};
  HttpServer server(HttpListener::Tcp({Address("127.0.0.1"), 0}, nullptr), options,
                    [&](const HttpRequest& request, const Peer&) {
                      if (request.target() == "/slow") {
                        ++blocked;
                        std::unique_lock lock(mu);
                        cv.wait(lock, [&] { return release; });
                      }
                      HttpResponse response{http::status::ok, 11};
                      response.body() = std::string(request.target());
                      return response;
                    });
  auto get = [&](const char* target) {
    asio::io_context io;
    beast::tcp_stream stream(io);
    stream.connect({Address("127.0.0.1"), server.port()});
    http::request<http::string_body> request{http::verb::get, target, 11};
    http::write(stream, request);
    beast::flat_buffer buffer;
    http::response<http::string_body> response;
    http::read(stream, buffer, response);
    return response.body();
  };
  std::vector<std::thread> slow;
  for (int i = 0; i < 4; ++i) slow.emplace_back([&] { EXPECT_EQ(get("/slow"), "/slow"); });
  for (int i = 0; i < 500 && blocked.load() < 4; ++i) std::this_thread::sleep_for(10ms);
  ASSERT_EQ(blocked.load(), 4);
  auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(get("/status"), "/status");
  EXPECT_LT(std::chrono::steady_clock::now() - start, 2s);
  {
    std::lock_guard lock(mu);
    release = true;
  }
  cv.notify_all();
  for (auto& t : slow) t.join();
}

TEST(RouterTest, CreateAndDestroyAreSlowRequests) {
  HttpRequest create{http::verb::post, "/v1/sandboxes", 11};
  HttpRequest destroy{http::verb::delete_, "/v1/sandboxes/abc", 11};
  HttpRequest list{http::verb::get, "/v1/sandboxes", 11};
  HttpRequest status{http::verb::get, "/v1/status", 11};
  EXPECT_TRUE(IsSlowApiRequest(create));
  EXPECT_TRUE(IsSlowApiRequest(destroy));
  EXPECT_FALSE(IsSlowApiRequest(list));
  EXPECT_FALSE(IsSlowApiRequest(status));
}

TEST(HttpServerTest, ConnectionsOverTheLimitAreClosedAtAccept) {
  HttpServerOptions options;
  options.max_connections = 1;
  HttpServer server(HttpListener::Tcp({Address("127.0.0.1"), 0}, nullptr), options, Echo());
  asio::io_context io;
  beast::tcp_stream first(io);
  first.connect({Address("127.0.0.1"), server.port()});
  EXPECT_EQ(Exchange(first, 1).size(), 1u);  // the first is open and served
  beast::tcp_stream second(io);
  second.connect({Address("127.0.0.1"), server.port()});
  http::request<http::string_body> request{http::verb::get, "/who", 11};
  request.set(http::field::host, "localhost");
  beast::error_code ec;
  http::write(second, request, ec);
  beast::flat_buffer buffer;
  http::response<http::string_body> response;
  http::read(second, buffer, response, ec);
  EXPECT_TRUE(ec) << "the second connection was served";
}

TEST(HttpServerTest, AFilteredPeerIsClosedAtAcceptAndAThrowingHandlerIsA500) {
  HttpServer server(
      HttpListener::Tcp({Address("127.0.0.1"), 0}, nullptr,
                        [](const asio::ip::address& a) { return a != Address("127.0.0.2"); }),
      {},
      [](const HttpRequest&, const Peer&) -> HttpResponse { throw std::runtime_error("a bug"); });
  asio::io_context io;
  beast::tcp_stream denied(io);
  denied.socket().open(asio::ip::tcp::v4());
  denied.socket().bind({Address("127.0.0.2"), 0});
  denied.connect({Address("127.0.0.1"), server.port()});
  char byte;
  beast::error_code ec;
  denied.socket().read_some(asio::buffer(&byte, 1), ec);
  EXPECT_TRUE(ec == asio::error::eof || ec == asio::error::connection_reset) << ec.message();

  beast::tcp_stream allowed(io);
  allowed.connect({Address("127.0.0.1"), server.port()});
  http::request<http::string_body> request{http::verb::get, "/", 11};
  request.set(http::field::host, "localhost");
  http::write(allowed, request);
  beast::flat_buffer buffer;
  http::response<http::string_body> response;
  http::read(allowed, buffer, response);
  EXPECT_EQ(response.result(), http::status::internal_server_error);
}

TEST(HttpServerTest, DestroyingTheServerUnderLoadIsClean) {
  // Kept-alive clients keep sending while the server goes away; the
  // sanitizer build checks that no session outlives what it points at.
  auto server =
      std::make_unique<HttpServer>(HttpListener::Tcp({Address("127.0.0.1"), 0}, nullptr),
                                   HttpServerOptions{}, [](const HttpRequest&, const Peer&) {
                                     std::this_thread::sleep_for(2ms);
                                     return HttpResponse{http::status::ok, 11};
                                   });
  const std::uint16_t port = server->port();
  std::atomic<int> answered{0};
  std::vector<std::thread> clients;
  for (int i = 0; i < 6; ++i) {
    clients.emplace_back([&] {
      asio::io_context io;
      beast::tcp_stream stream(io);
      beast::error_code ec;
      stream.socket().connect({Address("127.0.0.1"), port}, ec);
      beast::flat_buffer buffer;
      while (!ec) {
        http::request<http::string_body> request{http::verb::get, "/", 11};
        request.set(http::field::host, "localhost");
        http::write(stream, request, ec);
        http::response<http::string_body> response;
        if (!ec) http::read(stream, buffer, response, ec);
        if (!ec) ++answered;
      }
    });
  }
  while (answered.load() < 50) std::this_thread::sleep_for(1ms);
  server.reset();
  for (auto& c : clients) c.join();  // every client sees its connection end
  EXPECT_GE(answered.load(), 50);
}

TEST(WireTest, BodiesAreBoundedInSizeAndDepth) {
  ExpectError([] { ParseJsonObject(std::string(kMaxRequestBody + 1, ' ')); },
              ErrorCode::kInvalidArgument, "exceeds");
  std::string deep = "{\"a\":" + std::string(10000, '[') + std::string(10000, ']') + "}";
  ExpectError([&] { ParseJsonObject(deep); }, ErrorCode::kInvalidArgument, "nests deeper");
  std::string fine = "{\"a\":" + std::string(20, '[') + std::string(20, ']') + "}";
  EXPECT_TRUE(ParseJsonObject(fine).is_object());
}

TEST(WireTest, RemoteCallersGetNoHostInternalsInErrors) {
  const Error leaky(
      ErrorCode::kFailedPrecondition,
      "QEMU failed to start VM x: /var/lib/ephemera/vms/x/disk.qcow2: Permission denied");
  ASSERT_TRUE(RevealsInternals(leaky.code()));
  Error shown = ForRemoteCaller(leaky);
  EXPECT_EQ(shown.code(), leaky.code());
  EXPECT_THAT(shown.what(), ::testing::Not(HasSubstr("/var/lib")));
  EXPECT_THAT(shown.what(), HasSubstr("log"));
  // Errors about the caller's own input keep their message.
  EXPECT_FALSE(RevealsInternals(ErrorCode::kInvalidArgument));
  EXPECT_FALSE(RevealsInternals(ErrorCode::kNotFound));
  EXPECT_EQ(HttpStatusFor(ErrorCode::kNoSpace), 507u);
}

TEST(RouterTest, InvalidUtf8InATargetGetsAnAnswerNotACrash) {
  ApiContext context;  // no engine: these requests never reach it
  HttpRequest request{http::verb::get, "/v1/\xff\xfe", 11};
  HttpResponse response = HandleApiRequest(context, request, Peer{true, {}, 0});
  EXPECT_EQ(response.result(), http::status::not_found);
  EXPECT_THAT(response.body(), HasSubstr("no such endpoint"));
  request.target("/v1/sandboxes/\xc3");
  EXPECT_EQ(HandleApiRequest(context, request, Peer{true, {}, 0}).result(),
            http::status::bad_request);
}

}  // namespace
}  // namespace ephemera

namespace ephemera {
namespace {

TEST(WireTest, CreateRequestsTakeEgressAsAModeOrAnAllowList) {
  EXPECT_FALSE(ParseCreateRequest("{}").egress);
  EXPECT_EQ(ParseCreateRequest(R"({"egress": "none"})").egress->mode, EgressMode::kNone);
  CreateRequest r = ParseCreateRequest(
      R"({"egress": {"mode": "allow", "allow": ["example.test", "203.0.113.0/24"]}})");
  ASSERT_TRUE(r.egress);
  EXPECT_EQ(r.egress->Text(), "allow 203.0.113.0/24 example.test");
  ExpectError([] { ParseCreateRequest(R"({"egress": "allow"})"); }, ErrorCode::kInvalidArgument,
              "at least one entry");
  ExpectError([] { ParseCreateRequest(R"({"egress": 3})"); }, ErrorCode::kInvalidArgument,
              "'egress' must be");
  ExpectError([] { ParseCreateRequest(R"({"egress": {"mode": "allow", "allow": "x.test"}})"); },
              ErrorCode::kInvalidArgument, "'egress.allow' must be an array");
  ExpectError([] { ParseCreateRequest(R"({"egress": {"mode": "allow", "allow": [7]}})"); },
              ErrorCode::kInvalidArgument, "must hold strings");
  ExpectError([] { ParseCreateRequest(R"({"egress": {"allow": ["x.test"]}})"); },
              ErrorCode::kInvalidArgument, "'egress.mode'");
  ExpectError([] { ParseCreateRequest(R"({"egress": {"mode": "all", "ports": [1]}})"); },
              ErrorCode::kInvalidArgument, "unknown field 'ports'");
  ExpectError([] { ParseCreateRequest(R"({"egress": {"mode": "allow", "allow": ["x"]}})"); },
              ErrorCode::kInvalidArgument, "egress allow entry 'x'");

  Sandbox s(SandboxId::Generate());
  s.spec.egress = *r.egress;
  nlohmann::json j = SandboxToJson(s, "h");
  EXPECT_EQ(j["egress"]["mode"], "allow");
  EXPECT_EQ(j["egress"]["allow"], nlohmann::json::array({"203.0.113.0/24", "example.test"}));
}

TEST(WireTest, CreateRequestsTakeAPairAndARunMachine) {
  CreateRequest r =
      ParseCreateRequest(R"({"kernel":"docker://r.example/k:1","rootfs":"docker://r.example/r:1",)"
                         R"("run_id":"run-7","name":"vm-a"})");
  EXPECT_EQ(r.kernel, "docker://r.example/k:1");
  EXPECT_EQ(r.rootfs, "docker://r.example/r:1");
  EXPECT_EQ(r.run_id, "run-7");
  EXPECT_EQ(r.machine, "vm-a");
  EXPECT_FALSE(r.image);
  ExpectError([] { ParseCreateRequest(R"({"run_id": 7})"); }, ErrorCode::kInvalidArgument,
              "'run_id' must be a string");
  ExpectError([] { ParseCreateRequest(R"({"machine": "x"})"); }, ErrorCode::kInvalidArgument,
              "unknown field 'machine'");

  Sandbox s(SandboxId::Generate());
  s.spec.run_id = "run-7";
  s.spec.machine = "vm-a";
  s.tap = "ephr0123456789";
  s.host_key = "ssh-ed25519 AAAA";
  nlohmann::json j = SandboxToJson(s, "127.0.0.1");
  EXPECT_EQ(j["run_id"], "run-7");
  EXPECT_EQ(j["name"], "vm-a");
  EXPECT_EQ(j["tap"], "ephr0123456789");
  EXPECT_EQ(j["host_key"], "ssh-ed25519 AAAA");
  EXPECT_FALSE(SandboxToJson(Sandbox(SandboxId::Generate()), "h").contains("run_id"));
}

}  // namespace
}  // namespace ephemera
