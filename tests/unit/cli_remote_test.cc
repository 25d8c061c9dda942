// The remote side of the CLI: URL and duration parsing, the pin store, and
// the http/https/unix transport against small servers on loopback.
#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <sys/stat.h>

#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <condition_variable>
#include <fstream>
#include <memory>
#include <mutex>
#include <thread>

#include "cli/transport.h"
#include "unit/test_files.h"

namespace ephemera::cli {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;
using namespace std::chrono_literals;

// ---- parsing ----

TEST(ServerUrlTest, AcceptsHostsAddressesAndPorts) {
  ServerUrl url = ParseServerUrl("https://VM.Example.org:8443");
  EXPECT_TRUE(url.tls);
  EXPECT_EQ(url.host, "vm.example.org");
  EXPECT_EQ(url.port, 8443);
  EXPECT_EQ(url.str(), "https://vm.example.org:8443");
  EXPECT_FALSE(url.host_is_address());

  EXPECT_EQ(ParseServerUrl("HTTP://127.0.0.1:80/").str(), "http://127.0.0.1:80");
  EXPECT_TRUE(ParseServerUrl("http://127.0.0.1:80/").host_is_address());
  EXPECT_EQ(ParseServerUrl("https://example.org").port, 443);
  EXPECT_EQ(ParseServerUrl("http://example.org").port, 80);
  ServerUrl v6 = ParseServerUrl("https://[::1]:9443");
  EXPECT_EQ(v6.host, "::1");
  EXPECT_TRUE(v6.host_is_address());
  EXPECT_EQ(v6.authority(), "[::1]:9443");
  EXPECT_EQ(v6.str(), "https://[::1]:9443");
}

TEST(ServerUrlTest, RefusesWhatIsNotAServer) {
  for (const char* bad :
       {"", "example.org:8443", "ftp://example.org", "https://", "https://:8443",
        "https://example.org:", "https://example.org:0", "https://example.org:65536",
        "https://example.org:84x3", "https://example.org/v1", "https://example.org?a=b",
        "https://user:pw@example.org", "https://exa mple.org", "https://-bad.org", "https://[::1",
        "https://[zz]:1", "https://[::1]x", "https://a..b"}) {
    EXPECT_THROW(ParseServerUrl(bad), std::invalid_argument) << bad;
  }
  try {
    ParseServerUrl("ftp://example.org");
    FAIL();
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("https or http"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("https://HOST:PORT"), std::string::npos) << e.what();
  }
}

TEST(DurationTest, SecondsOrAUnit) {
  EXPECT_EQ(ParseDuration("3600"), 3600);
  EXPECT_EQ(ParseDuration("90s"), 90);
  EXPECT_EQ(ParseDuration("90m"), 5400);
  EXPECT_EQ(ParseDuration("12h"), 43200);
  EXPECT_EQ(ParseDuration("7d"), 604800);
  for (const char* bad :
       {"", "0", "0m", "-5", "5y", "m", "1.5h", " 5", "5 m", "1h30m", "99999999999", "30000d"}) {
    EXPECT_THROW(ParseDuration(bad), std::invalid_argument) << bad;
  }
}

TEST(FingerprintTest, HexWithOrWithoutColonsAndPrefix) {
  std::string hex(64, 'a');
  hex.replace(0, 2, "0F");
  std::string expected = "0f" + std::string(62, 'a');
  EXPECT_EQ(NormalizeFingerprint(hex), expected);
  std::string colons;
  for (std::size_t i = 0; i < hex.size(); i += 2) colons += (i ? ":" : "") + hex.substr(i, 2);
  EXPECT_EQ(NormalizeFingerprint(colons), expected);
  EXPECT_EQ(NormalizeFingerprint("SHA256:" + hex), expected);
  EXPECT_THROW(NormalizeFingerprint(hex.substr(2)), std::invalid_argument);
  EXPECT_THROW(NormalizeFingerprint(hex.substr(2) + "zz"), std::invalid_argument);
}

// ---- the pin store ----

TEST(ServerStoreTest, FirstUsePinsThenTheSamePassesAndAnotherIsRefused) {
  test::TempDir dir;
  ServerStore store(dir.path() / "ephemera" / "servers.json");
  const std::string a(64, 'a'), b(64, 'b'), url = "https://example.org:8443";
  EXPECT_FALSE(store.Get(url));
  EXPECT_EQ(store.PinIfUnpinned(url, a), a);
  EXPECT_EQ(store.PinIfUnpinned(url, a), a);
  EXPECT_EQ(store.PinIfUnpinned(url, b), a);  // the first pin stays
  ASSERT_TRUE(store.Get(url));
  EXPECT_EQ(store.Get(url)->certificate_sha256, a);
  EXPECT_TRUE(store.Get(url)->pinned_at);

  store.SetToken(url, "secret");
  EXPECT_EQ(store.Get(url)->token, "secret");
  EXPECT_EQ(store.Get(url)->certificate_sha256, a);

  struct stat st {};
  ASSERT_EQ(::stat(store.file().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  ASSERT_EQ(::stat(store.file().parent_path().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);

  EXPECT_TRUE(store.Forget(url));
  EXPECT_FALSE(store.Forget(url));
  EXPECT_EQ(store.PinIfUnpinned(url, b), b);
}

TEST(ServerStoreTest, ConcurrentFirstContactsAgreeOnOnePin) {
  test::TempDir dir;
  auto file = dir.path() / "servers.json";
  std::vector<std::thread> threads;
  std::vector<std::string> pinned(8);
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&, i] {
      pinned[i] =
          ServerStore(file).PinIfUnpinned("https://h:1", std::string(64, "0123456789abcdef"[i]));
    });
  }
  for (auto& t : threads) t.join();
  for (const auto& p : pinned) EXPECT_EQ(p, pinned[0]);
  EXPECT_EQ(ServerStore(file).Get("https://h:1")->certificate_sha256, pinned[0]);
}

TEST(ServerStoreTest, ACorruptFileIsAClearErrorNeverAnEmptyStore) {
  test::TempDir dir;
  auto file = dir.path() / "servers.json";
  for (const char* text :
       {"{not json", "[1,2]", R"({"servers": 5})", R"({"servers": {"https://h:1": 5}})",
        R"({"servers": {"https://h:1": {"certificate_sha256": "abc"}}})",
        R"({"servers": {"https://h:1": {"token": 7}}})"}) {
    test::WriteBytes(file, text);
    ServerStore store(file);
    try {
      store.Get("https://h:1");
      FAIL() << text;
    } catch (const std::runtime_error& e) {
      std::string message = e.what();
      EXPECT_NE(message.find(file.string()), std::string::npos) << message;
      EXPECT_NE(message.find("corrupt"), std::string::npos) << message;
    }
    EXPECT_THROW(store.PinIfUnpinned("https://h:1", std::string(64, 'a')), std::runtime_error);
  }
}

// ---- loopback servers ----

struct Certificate {
  std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)> key{nullptr, EVP_PKEY_free};
  std::unique_ptr<X509, decltype(&X509_free)> x509{nullptr, X509_free};
  std::string sha256;  // of the DER encoding, computed independently of the client
};

// A self-signed ECDSA P-256 certificate, like the daemon generates.
Certificate MakeCertificate(long serial) {
  Certificate c;
  c.key.reset(EVP_EC_gen("P-256"));
  c.x509.reset(X509_new());
  if (!c.key || !c.x509) throw std::runtime_error("openssl: cannot make a key");
  X509* x = c.x509.get();
  X509_set_version(x, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(x), serial);
  X509_gmtime_adj(X509_getm_notBefore(x), -3600);
  X509_gmtime_adj(X509_getm_notAfter(x), 86400);
  X509_set_pubkey(x, c.key.get());
  X509_NAME* name = X509_get_subject_name(x);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>("localhost"), -1, -1, 0);
  X509_set_issuer_name(x, name);
  if (X509_sign(x, c.key.get(), EVP_sha256()) == 0) throw std::runtime_error("cannot sign");
  unsigned char* der = nullptr;
  int size = i2d_X509(x, &der);
  unsigned char digest[32];
  unsigned digest_size = 0;
  EVP_Digest(der, static_cast<std::size_t>(size), digest, &digest_size, EVP_sha256(), nullptr);
  OPENSSL_free(der);
  c.sha256 = Hex(digest, digest_size);
  return c;
}

// What the server received of one request.
struct Seen {
  std::string method, target, authorization, client_token, host, body;
};

// One thread serving connections one at a time: http, https (with the
// certificate currently set) or a unix socket.
class TestServer {
 public:
  enum class Kind { kHttp, kHttps, kUnix };

  explicit TestServer(Kind kind, std::filesystem::path socket = {})
      : kind_(kind), tcp_acceptor_(io_), unix_acceptor_(io_), socket_(std::move(socket)) {
    if (kind_ == Kind::kUnix) {
      unix_acceptor_.open();
      unix_acceptor_.bind(asio::local::stream_protocol::endpoint(socket_.string()));
      unix_acceptor_.listen();
    } else {
      tcp_acceptor_.open(tcp::v4());
      tcp_acceptor_.set_option(tcp::acceptor::reuse_address(true));
      tcp_acceptor_.bind(tcp::endpoint(asio::ip::address_v4::loopback(), 0));
      tcp_acceptor_.listen();
      port_ = tcp_acceptor_.local_endpoint().port();
    }
    thread_ = std::thread([this] { Run(); });
  }

  ~TestServer() {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    changed_.notify_all();
    // Wakes the blocking accept.
    beast::error_code ignored;
    asio::io_context io;
    if (kind_ == Kind::kUnix) {
      asio::local::stream_protocol::socket s(io);
      s.connect(asio::local::stream_protocol::endpoint(socket_.string()), ignored);
    } else {
      tcp::socket s(io);
      s.connect(tcp::endpoint(asio::ip::address_v4::loopback(), port_), ignored);
    }
    thread_.join();
  }

  std::uint16_t port() const { return port_; }
  std::string url() const {
    return (kind_ == Kind::kHttps ? "https://127.0.0.1:" : "http://127.0.0.1:") +
           std::to_string(port_);
  }

  void UseCertificate(const Certificate& c) {
    std::lock_guard lock(mutex_);
    certificate_ = &c;
  }
  void Respond(unsigned status, std::string body) {
    std::lock_guard lock(mutex_);
    status_ = status;
    body_ = std::move(body);
  }
  void Stall() {
    std::lock_guard lock(mutex_);
    stall_ = true;
  }

  std::vector<Seen> seen() {
    std::lock_guard lock(mutex_);
    return seen_;
  }
  std::string server_name() {
    std::lock_guard lock(mutex_);
    return server_name_;
  }
  // Waits until `n` connections have been handled (answered or failed).
  bool WaitForConnections(int n) {
    std::unique_lock lock(mutex_);
    return changed_.wait_for(lock, 10s, [&] { return connections_ >= n; });
  }

 private:
  void Run() {
    for (;;) {
      beast::error_code ec;
      if (kind_ == Kind::kUnix) {
        asio::local::stream_protocol::socket socket(io_);
        unix_acceptor_.accept(socket, ec);
        if (Stopping()) return;
        if (!ec) Serve(socket);
      } else {
        tcp::socket socket(io_);
        tcp_acceptor_.accept(socket, ec);
        if (Stopping()) return;
        if (ec) continue;
        if (kind_ == Kind::kHttp) {
          Serve(socket);
        } else {
          ssl::context context(ssl::context::tls_server);
          {
            std::lock_guard lock(mutex_);
            SSL_CTX_use_certificate(context.native_handle(), certificate_->x509.get());
            SSL_CTX_use_PrivateKey(context.native_handle(), certificate_->key.get());
          }
          ssl::stream<tcp::socket> stream(std::move(socket), context);
          stream.handshake(ssl::stream_base::server, ec);
          if (const char* name =
                  SSL_get_servername(stream.native_handle(), TLSEXT_NAMETYPE_host_name)) {
            std::lock_guard lock(mutex_);
            server_name_ = name;
          }
          if (!ec) Serve(stream);
        }
      }
      std::lock_guard lock(mutex_);
      ++connections_;
      changed_.notify_all();
    }
  }

  bool Stopping() {
    std::lock_guard lock(mutex_);
    return stopping_;
  }

  template <typename Stream>
  void Serve(Stream& stream) {
    beast::error_code ec;
    beast::flat_buffer buffer;
    http::request<http::string_body> request;
    http::read(stream, buffer, request, ec);
    if (ec) return;
    http::response<http::string_body> response;
    {
      std::unique_lock lock(mutex_);
      auto header = [&](auto field) { return std::string(request[field]); };
      seen_.push_back({std::string(request.method_string()), std::string(request.target()),
                       header(http::field::authorization), header("X-Ephemera-Token"),
                       header(http::field::host), request.body()});
      changed_.notify_all();
      if (stall_) {
        changed_.wait(lock, [&] { return stopping_; });
        return;
      }
      response.result(status_);
      response.body() = body_;
    }
    response.version(11);
    response.set(http::field::content_type, "application/json");
    response.keep_alive(false);
    response.prepare_payload();
    http::write(stream, response, ec);
  }

  Kind kind_;
  asio::io_context io_;
  tcp::acceptor tcp_acceptor_;
  asio::local::stream_protocol::acceptor unix_acceptor_;
  std::filesystem::path socket_;
  std::uint16_t port_ = 0;
  std::thread thread_;

  std::mutex mutex_;
  std::condition_variable changed_;
  bool stopping_ = false;
  const Certificate* certificate_ = nullptr;
  unsigned status_ = 200;
  std::string body_ = R"({"ok": true})";
  bool stall_ = false;
  std::vector<Seen> seen_;
  std::string server_name_;
  int connections_ = 0;
};

class RemoteTest : public ::testing::Test {
 protected:
  ClientOptions Options(const std::string& url) {
    ClientOptions o;
    o.server = ParseServerUrl(url);
    o.servers_file = dir_.path() / "ephemera" / "servers.json";
    o.timeouts = {.connect = 5s, .write = 5s, .response = 5s};
    o.notice = [this](const std::string& message) { notices_.push_back(message); };
    return o;
  }
  ServerStore Store() { return ServerStore(dir_.path() / "ephemera" / "servers.json"); }

  test::TempDir dir_;
  std::vector<std::string> notices_;
  Certificate a_ = MakeCertificate(1), b_ = MakeCertificate(2);
};

TEST_F(RemoteTest, HttpsRequestCarriesTheBearerTokenAndPinsOnFirstUse) {
  TestServer server(TestServer::Kind::kHttps);
  server.UseCertificate(a_);
  server.Respond(200, R"({"version": "0.1.0"})");
  auto options = Options(server.url());
  options.token = "access-secret";
  ApiClient client(options);

  EXPECT_EQ(client.Request("GET", "/v1/status")["version"], "0.1.0");
  ASSERT_EQ(server.seen().size(), 1u);
  EXPECT_EQ(server.seen()[0].authorization, "Bearer access-secret");
  EXPECT_EQ(server.seen()[0].host, "127.0.0.1:" + std::to_string(server.port()));
  EXPECT_EQ(server.server_name(), "");  // no SNI for an address
  ASSERT_EQ(notices_.size(), 1u);
  EXPECT_NE(notices_[0].find("first contact with " + server.url()), std::string::npos);
  EXPECT_NE(notices_[0].find(a_.sha256), std::string::npos) << notices_[0];
  ASSERT_TRUE(Store().Get(server.url()));
  EXPECT_EQ(Store().Get(server.url())->certificate_sha256, a_.sha256);
  EXPECT_FALSE(Store().Get(server.url())->token);  // not asked to remember it

  // The same certificate passes quietly, also for a new client.
  ApiClient again(options);
  again.Request("DELETE", "/v1/sandboxes/x", "", {{"X-Ephemera-Token", "client-secret"}});
  ASSERT_EQ(server.seen().size(), 2u);
  EXPECT_EQ(server.seen()[1].method, "DELETE");
  EXPECT_EQ(server.seen()[1].client_token, "client-secret");
  EXPECT_EQ(notices_.size(), 1u);

  struct stat st {};
  ASSERT_EQ(::stat(options.servers_file.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
}

TEST_F(RemoteTest, AChangedCertificateIsRefusedBeforeAnyRequestByte) {
  TestServer server(TestServer::Kind::kHttps);
  server.UseCertificate(a_);
  auto options = Options(server.url());
  options.token = "access-secret";
  ApiClient(options).Request("GET", "/v1/status");
  ASSERT_EQ(server.seen().size(), 1u);

  server.UseCertificate(b_);
  try {
    ApiClient(options).Request("POST", "/v1/sandboxes", "{}");
    FAIL() << "a changed certificate was accepted";
  } catch (const CertificateRejected& e) {
    std::string message = e.what();
    EXPECT_EQ(e.status(), 0u);
    EXPECT_NE(message.find(server.url()), std::string::npos) << message;
    EXPECT_NE(message.find("pinned:    sha256 " + a_.sha256), std::string::npos) << message;
    EXPECT_NE(message.find("presented: sha256 " + b_.sha256), std::string::npos) << message;
    EXPECT_NE(message.find("ephemera server forget " + server.url()), std::string::npos);
  }
  ASSERT_TRUE(server.WaitForConnections(2));
  EXPECT_EQ(server.seen().size(), 1u);  // the refused connection carried no request
  EXPECT_EQ(Store().Get(server.url())->certificate_sha256, a_.sha256);

  // Forgetting the pin trusts the new certificate on next contact.
  EXPECT_TRUE(Store().Forget(server.url()));
  ApiClient(options).Request("GET", "/v1/status");
  EXPECT_EQ(server.seen().size(), 2u);
  EXPECT_EQ(Store().Get(server.url())->certificate_sha256, b_.sha256);
}

TEST_F(RemoteTest, APinnedServerPresentingAnotherCertificateSeesNothing) {
  TestServer server(TestServer::Kind::kHttps);
  server.UseCertificate(b_);
  Store().PinIfUnpinned(server.url(), a_.sha256);
  auto options = Options(server.url());
  options.token = "access-secret";
  EXPECT_THROW(ApiClient(options).Request("GET", "/v1/status"), CertificateRejected);
  ASSERT_TRUE(server.WaitForConnections(1));
  EXPECT_TRUE(server.seen().empty());
  EXPECT_TRUE(notices_.empty());
}

TEST_F(RemoteTest, PinOptionDemandsThatFingerprint) {
  TestServer server(TestServer::Kind::kHttps);
  server.UseCertificate(a_);
  auto options = Options(server.url());
  options.pin = b_.sha256;
  try {
    ApiClient(options).Request("GET", "/v1/status");
    FAIL() << "a certificate other than --pin was accepted";
  } catch (const CertificateRejected& e) {
    std::string message = e.what();
    EXPECT_NE(message.find("--pin"), std::string::npos) << message;
    EXPECT_NE(message.find("demanded:  sha256 " + b_.sha256), std::string::npos) << message;
    EXPECT_NE(message.find("presented: sha256 " + a_.sha256), std::string::npos) << message;
  }
  ASSERT_TRUE(server.WaitForConnections(1));
  EXPECT_TRUE(server.seen().empty());
  EXPECT_FALSE(Store().Get(server.url()));  // nothing trusted on first use

  // A matching --pin passes and becomes the pin, even over an older one.
  Store().PinIfUnpinned(server.url(), b_.sha256);
  options.pin = a_.sha256;
  ApiClient(options).Request("GET", "/v1/status");
  EXPECT_EQ(server.seen().size(), 1u);
  EXPECT_EQ(Store().Get(server.url())->certificate_sha256, a_.sha256);
}

TEST_F(RemoteTest, SendsTheHostNameAsSni) {
  TestServer server(TestServer::Kind::kHttps);
  server.UseCertificate(a_);
  ApiClient(Options("https://localhost:" + std::to_string(server.port())))
      .Request("GET", "/v1/status");
  EXPECT_EQ(server.server_name(), "localhost");
}

TEST_F(RemoteTest, ACorruptPinStoreStopsTheRequestBeforeConnecting) {
  TestServer server(TestServer::Kind::kHttps);
  server.UseCertificate(a_);
  auto options = Options(server.url());
  std::filesystem::create_directories(options.servers_file.parent_path());
  test::WriteBytes(options.servers_file, "{garbage");
  EXPECT_THROW(ApiClient(options).Request("GET", "/v1/status"), std::runtime_error);
  EXPECT_TRUE(server.seen().empty());
}

TEST_F(RemoteTest, ServerErrorsKeepTheirMessageAndStatus) {
  TestServer server(TestServer::Kind::kHttps);
  server.UseCertificate(a_);
  server.Respond(
      403,
      R"({"error": {"code": "permission_denied", "message": "access tokens are managed on the local socket"}})");
  auto options = Options(server.url());
  options.token = "access-secret";
  options.remember_token = true;
  try {
    ApiClient(options).Request("GET", "/v1/tokens");
    FAIL();
  } catch (const ApiError& e) {
    EXPECT_EQ(e.status(), 403u);
    EXPECT_STREQ(e.what(), "access tokens are managed on the local socket");
  }
  EXPECT_FALSE(Store().Get(server.url())->token);  // a refused token is not remembered

  server.Respond(201, R"({"id": "x"})");
  ApiClient(options).Request("POST", "/v1/sandboxes", "{}");
  EXPECT_EQ(Store().Get(server.url())->token, "access-secret");
}

TEST_F(RemoteTest, PlainHttpCarriesTheBearerToken) {
  TestServer server(TestServer::Kind::kHttp);
  auto options = Options(server.url());
  options.token = "access-secret";
  EXPECT_EQ(ApiClient(options).Request("POST", "/v1/sandboxes", R"({"image":"x"})")["ok"], true);
  ASSERT_EQ(server.seen().size(), 1u);
  EXPECT_EQ(server.seen()[0].authorization, "Bearer access-secret");
  EXPECT_EQ(server.seen()[0].body, R"({"image":"x"})");
  EXPECT_FALSE(Store().Get(server.url()));  // nothing to pin over http
}

TEST_F(RemoteTest, UnreachableAndSilentServersAreStatusZero) {
  std::uint16_t closed;
  {
    TestServer server(TestServer::Kind::kHttp);
    closed = server.port();
  }
  try {
    ApiClient(Options("http://127.0.0.1:" + std::to_string(closed))).Request("GET", "/v1/status");
    FAIL();
  } catch (const ApiError& e) {
    EXPECT_EQ(e.status(), 0u);
    EXPECT_NE(std::string(e.what()).find("cannot reach"), std::string::npos) << e.what();
  }

  TestServer silent(TestServer::Kind::kHttps);
  silent.UseCertificate(a_);
  silent.Stall();
  auto options = Options(silent.url());
  options.timeouts.response = 300ms;
  auto start = std::chrono::steady_clock::now();
  try {
    ApiClient(options).Request("GET", "/v1/status");
    FAIL();
  } catch (const ApiError& e) {
    EXPECT_EQ(e.status(), 0u);
    EXPECT_NE(std::string(e.what()).find("timed out"), std::string::npos) << e.what();
  }
  EXPECT_LT(std::chrono::steady_clock::now() - start, 5s);
}

TEST_F(RemoteTest, TheUnixSocketStillWorksAndSendsNoToken) {
  auto socket = dir_.path() / "api.sock";
  TestServer server(TestServer::Kind::kUnix, socket);
  ClientOptions options;
  options.socket = socket;
  options.token = "access-secret";  // ignored: the socket's file mode is the authority
  options.servers_file = dir_.path() / "servers.json";
  EXPECT_EQ(ApiClient(options).Request("GET", "/v1/sandboxes")["ok"], true);
  ASSERT_EQ(server.seen().size(), 1u);
  EXPECT_EQ(server.seen()[0].authorization, "");
  EXPECT_EQ(server.seen()[0].host, "localhost");

  try {
    ApiClient(dir_.path() / "missing.sock").Request("GET", "/v1/status");
    FAIL();
  } catch (const ApiError& e) {
    EXPECT_EQ(e.status(), 0u);
  }
}

}  // namespace
}  // namespace ephemera::cli
