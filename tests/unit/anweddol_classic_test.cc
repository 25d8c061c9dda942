#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <spdlog/sinks/ringbuffer_sink.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <atomic>
#include <boost/asio/ip/address.hpp>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "api/anweddol_classic_channel.h"
#include "api/anweddol_classic_server.h"
#include "core/error.h"
#include "core/fs.h"
#include "core/sha256.h"
#include "support/anweddol_classic_client.h"
#include "unit/test_files.h"

namespace ephemera {
namespace {

namespace aw = anweddol;
using nlohmann::json;
using test::AnweddolClassicConnection;
using test::AnweddolClientError;
using test::AnweddolClientKey;
using Kind = AnweddolClientError::Kind;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

const json kBadRequest = {{"success", false}, {"message", "Bad request"}, {"data", json::object()}};

std::string Bytes(std::size_t n, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (char& c : s) c = static_cast<char>(rng());
  return s;
}

// Captures the log, debug level included, while it lives. Make it while no
// server runs: the default logger is swapped without a lock.
class LogCapture {
 public:
  LogCapture()
      : sink_(std::make_shared<spdlog::sinks::ringbuffer_sink_mt>(4096)),
        previous_(spdlog::default_logger()) {
    auto logger = std::make_shared<spdlog::logger>("anweddol-test-capture", sink_);
    logger->set_level(spdlog::level::debug);
    spdlog::set_default_logger(std::move(logger));
  }
  ~LogCapture() { spdlog::set_default_logger(previous_); }
  LogCapture(const LogCapture&) = delete;
  LogCapture& operator=(const LogCapture&) = delete;

  std::size_t Count(std::string_view text) {
    std::size_t n = 0;
    for (const std::string& line : sink_->last_formatted()) {
      if (line.find(text) != std::string::npos) ++n;
    }
    return n;
  }

  bool WaitFor(std::string_view text, std::chrono::milliseconds within) {
    for (auto deadline = Clock::now() + within; Clock::now() < deadline;
         std::this_thread::sleep_for(10ms)) {
      if (Count(text) > 0) return true;
    }
    return Count(text) > 0;
  }

 private:
  std::shared_ptr<spdlog::sinks::ringbuffer_sink_mt> sink_;
  std::shared_ptr<spdlog::logger> previous_;
};

constexpr std::string_view kWaitingForKey = "waiting for a one-time key";

// ---- The channel's pure functions ------------------------------------------

TEST(AnweddolChannelTest, LengthFieldIsPaddedWithEqualSigns) {
  EXPECT_EQ(aw::EncodeLengthField(800), "800=====");
  EXPECT_EQ(aw::EncodeLengthField(12345678), "12345678");
  EXPECT_THROW(aw::EncodeLengthField(123456789), Error);
  EXPECT_EQ(aw::ParseLengthField("800=====", 8192), 800u);
  EXPECT_EQ(aw::ParseLengthField("00000800", 8192), 800u);
  EXPECT_EQ(aw::ParseLengthField("8=======", 8192), 8u);
  for (std::string_view bad : {"abc=====", "========", "12=3====", "0=======", "-1======",
                               " 800====", "800 ====", "800=====9", "800====", "9000===="}) {
    try {
      aw::ParseLengthField(bad, 8192);
      ADD_FAILURE() << "accepted " << bad;
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument) << bad;
    }
  }
}

TEST(AnweddolChannelTest, DecimalLengthIsDigitsOnly) {
  EXPECT_EQ(aw::ParseDecimalLength("48"), 48u);
  EXPECT_EQ(aw::ParseDecimalLength("999999999999999"), 999999999999999u);
  for (std::string_view bad : {"", "+48", "4 8", "48\n", "0x30", "1000000000000000", "-1"}) {
    EXPECT_THROW(aw::ParseDecimalLength(bad), Error) << bad;
  }
}

TEST(AnweddolChannelTest, AesRoundTripAndBadPadding) {
  aw::SessionKey s = aw::SessionKey::Random();
  for (std::size_t n : {0u, 1u, 15u, 16u, 17u, 1000u}) {
    std::string plain = Bytes(n, static_cast<std::uint32_t>(n));
    std::string cipher = aw::AesCbcEncrypt(s.key, s.iv, plain);
    EXPECT_EQ(cipher.size(), (n / 16 + 1) * 16);
    EXPECT_EQ(aw::AesCbcDecrypt(s.key, s.iv, cipher), plain);
  }
  // The first block of a 16-byte plaintext ending in 0x00 decrypts to a
  // padding byte of 0: always invalid.
  std::string cipher = aw::AesCbcEncrypt(s.key, s.iv, std::string(15, 'a') + '\0');
  EXPECT_THROW(aw::AesCbcDecrypt(s.key, s.iv, cipher.substr(0, 16)), Error);
  EXPECT_THROW(aw::AesCbcDecrypt(s.key, s.iv, ""), Error);
  EXPECT_THROW(aw::AesCbcDecrypt(s.key, s.iv, cipher.substr(0, 15)), Error);
  EXPECT_THROW(aw::SessionKey::Parse(std::string(47, 'k')), Error);
  EXPECT_EQ(aw::SessionKey::Parse(s.Serialize()).Serialize(), s.Serialize());
}

TEST(AnweddolChannelTest, MessageEncodeDecodeAndMalformedFrames) {
  aw::SessionKey s = aw::SessionKey::Random();
  aw::AesIv next = aw::RandomIv();
  std::string text = R"({"verb":"STAT","parameters":{}})";
  aw::EncodedMessage m = aw::EncodeMessage(s.key, s.iv, text, next);
  ASSERT_EQ(m.header.size(), 16u);
  std::size_t length = aw::DecodeLengthHeader(s.key, s.iv, m.header, 64 * 1024);
  EXPECT_EQ(length, m.body.size());
  aw::DecodedBody body = aw::DecodeBody(s.key, s.iv, m.body);
  EXPECT_EQ(body.text, text);
  EXPECT_EQ(body.next_iv, next);

  EXPECT_THROW(aw::DecodeLengthHeader(s.key, s.iv, m.header, length - 16), Error);  // over max
  EXPECT_THROW(aw::DecodeLengthHeader(s.key, s.iv, m.header.substr(0, 15), 1 << 16), Error);
  EXPECT_THROW(aw::DecodeLengthHeader(s.key, next, m.header, 1 << 16), Error);  // wrong IV
  for (std::string_view text_length : {"17", "16", "0", "abc", "-48", ""}) {
    EXPECT_THROW(
        aw::DecodeLengthHeader(s.key, s.iv, aw::AesCbcEncrypt(s.key, s.iv, text_length), 1 << 16),
        Error)
        << text_length;
  }
  EXPECT_THROW(aw::DecodeBody(s.key, s.iv, m.body.substr(0, 16)), Error);  // too short
  EXPECT_THROW(aw::DecodeBody(s.key, s.iv, m.body.substr(1)), Error);      // not blocks
}

TEST(AnweddolChannelTest, FuzzEntryAcceptsArbitraryBytes) {
  std::mt19937 rng(42);
  for (int i = 0; i < 2000; ++i) {
    std::string input = Bytes(rng() % 200, static_cast<std::uint32_t>(i));
    aw::FuzzClassicDecoders(reinterpret_cast<const std::uint8_t*>(input.data()), input.size());
  }
  std::string pem = "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n";
  aw::FuzzClassicDecoders(reinterpret_cast<const std::uint8_t*>(pem.data()), pem.size());
}

// ---- The server, through the independent client -----------------------------

class AnweddolClassicTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new test::TempDir();
    key_file_ = new std::filesystem::path(dir_->path() / "server-key.pem");
    aw::RsaKey::Generate(4096).SavePrivate(*key_file_);
    client_key_ = AnweddolClientKey::GenerateRsa(2048);
  }
  static void TearDownTestSuite() {
    client_key_.reset();
    delete key_file_;
    delete dir_;
  }

  AnweddolClassicOptions Options() {
    AnweddolClassicOptions o;
    o.listen = {boost::asio::ip::make_address("127.0.0.1"), 0};
    o.key_file = *key_file_;
    o.workers = 2;
    o.io_timeout = 5s;
    // Every test connects from 127.0.0.1 many times; the per-peer budgets
    // have tests of their own.
    o.max_connections_per_peer = 64;
    o.handshake_burst = 1000;
    o.one_time_key_burst = 1000;
    return o;
  }

  // Records what it is given and answers OK with the request echoed.
  AnweddolRequestHandler Recorder() {
    return [this](std::string_view body, const boost::asio::ip::address& peer) {
      json request = json::parse(body, nullptr, false);
      if (!request.is_discarded() && request.value("verb", "") == "SLOW") {
        std::this_thread::sleep_for(1500ms);  // as a create booting a VM would
      }
      std::lock_guard lock(mu_);
      bodies_.emplace_back(body);
      peers_.push_back(peer);
      return json{{"success", true}, {"message", "OK"}, {"data", {{"echo", request}}}};
    };
  }

  std::size_t calls() {
    std::lock_guard lock(mu_);
    return bodies_.size();
  }
  std::vector<std::string> bodies() {
    std::lock_guard lock(mu_);
    return bodies_;
  }
  std::vector<boost::asio::ip::address> peers() {
    std::lock_guard lock(mu_);
    return peers_;
  }

  test::AnweddolClientOptions ClientOptions() { return {.key = client_key_, .timeout = 10s}; }

  AnweddolClassicOptions OneTimeKeyOptions(const test::TempDir& dir, std::size_t pool) {
    auto o = Options();
    o.one_time_keys = true;
    o.rsa_bits = 2048;
    o.one_time_key_pool = pool;
    o.key_file = dir.path() / "unused.pem";
    return o;
  }

  // Sends the client's key without waiting for the server's answer, which
  // comes once the server has a key of its own for this connection.
  void SendClientKeyOnly(AnweddolClassicConnection& c) {
    const std::string& pem = client_key_->public_pem();
    c.SendRaw(aw::EncodeLengthField(pem.size()));
    c.ExpectAck("client key length");
    c.SendRaw(pem);
  }

  json Stat(std::uint16_t port) {
    return test::AnweddolClassicRequest("127.0.0.1", port, {{"verb", "STAT"}, {"parameters", {}}},
                                        ClientOptions());
  }

  std::unique_ptr<AnweddolClassicConnection> Connect(std::uint16_t port,
                                                     std::chrono::milliseconds timeout = 10s) {
    return std::make_unique<AnweddolClassicConnection>("127.0.0.1", port, timeout);
  }

  std::unique_ptr<AnweddolClassicConnection> Handshaken(std::uint16_t port) {
    auto c = Connect(port);
    c->Handshake(*client_key_);
    return c;
  }

  static test::TempDir* dir_;
  static std::filesystem::path* key_file_;
  static std::shared_ptr<const AnweddolClientKey> client_key_;

  std::mutex mu_;
  std::vector<std::string> bodies_;
  std::vector<boost::asio::ip::address> peers_;
};

test::TempDir* AnweddolClassicTest::dir_ = nullptr;
std::filesystem::path* AnweddolClassicTest::key_file_ = nullptr;
std::shared_ptr<const AnweddolClientKey> AnweddolClassicTest::client_key_;

// Expects the next step to fail with `kind`.
template <typename F>
void ExpectClientError(F&& step, Kind kind) {
  try {
    step();
    ADD_FAILURE() << "step succeeded";
  } catch (const AnweddolClientError& e) {
    EXPECT_EQ(e.kind(), kind) << e.what();
  }
}

TEST_F(AnweddolClassicTest, RoundTripDeliversTheExactJsonAndTheResponse) {
  AnweddolClassicServer server(Options(), Recorder());
  json request = {{"verb", "CREATE"},
                  {"parameters", {{"access_token", "t0k3n"}, {"note", "caf\u00e9"}}}};
  test::AnweddolClassicResult result =
      test::AnweddolClassicExchange("127.0.0.1", server.port(), request, ClientOptions());
  ASSERT_EQ(calls(), 1u);
  EXPECT_EQ(bodies().at(0), request.dump());
  EXPECT_EQ(peers().at(0), boost::asio::ip::make_address("127.0.0.1"));
  EXPECT_EQ(result.response,
            (json{{"success", true}, {"message", "OK"}, {"data", {{"echo", request}}}}));
  // The fingerprint the client saw is the server's, and that of the key file.
  EXPECT_EQ(result.server_key_sha256, server.public_key_sha256());
  EXPECT_EQ(result.server_key_sha256, aw::RsaKey::LoadPrivate(*key_file_).PublicSha256());
  EXPECT_EQ(result.server_key_sha256.size(), 64u);

  // A large request exercises partial reads and writes on both ends.
  json big = {{"verb", "STAT"}, {"parameters", {{"blob", std::string(60000, 'x')}}}};
  EXPECT_EQ(test::AnweddolClassicRequest("127.0.0.1", server.port(), big,
                                         ClientOptions())["data"]["echo"],
            big);
  EXPECT_EQ(bodies().at(1), big.dump());
}

TEST_F(AnweddolClassicTest, WireFormatMatchesTheReference) {
  AnweddolClassicServer server(Options(), Recorder());
  auto c = Connect(server.port());
  c->SendPublicKeyPem(client_key_->public_pem());
  // A 4096-bit SubjectPublicKeyInfo PEM is 800 bytes: "800=====".
  EXPECT_EQ(c->ReceiveExactly(8), "800=====");
  c->SendRaw("1");
  std::string pem = c->ReceiveExactly(800);
  EXPECT_THAT(pem, ::testing::StartsWith("-----BEGIN PUBLIC KEY-----\n"));
  EXPECT_THAT(pem, ::testing::EndsWith("-----END PUBLIC KEY-----\n"));
  EXPECT_EQ(pem, aw::RsaKey::LoadPrivate(*key_file_).PublicPem());
}

TEST_F(AnweddolClassicTest, GeneratedKeyIsPrivateAndPersistsAcrossRestarts) {
  test::TempDir dir;
  auto options = Options();
  options.key_file = dir.path() / "sub" / "key.pem";
  options.rsa_bits = 2048;
  std::string first;
  {
    AnweddolClassicServer server(options, Recorder());
    first = server.public_key_sha256();
    struct stat st {};
    ASSERT_EQ(::stat(options.key_file.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0600u);
    EXPECT_EQ(test::AnweddolClassicExchange("127.0.0.1", server.port(),
                                            {{"verb", "STAT"}, {"parameters", {}}}, ClientOptions())
                  .server_key_sha256,
              first);
  }
  AnweddolClassicServer again(options, Recorder());
  EXPECT_EQ(again.public_key_sha256(), first);
  EXPECT_EQ(test::AnweddolClassicExchange("127.0.0.1", again.port(),
                                          {{"verb", "STAT"}, {"parameters", {}}}, ClientOptions())
                .server_key_sha256,
            first);
}

TEST_F(AnweddolClassicTest, OneTimeKeysDifferPerConnection) {
  test::TempDir dir;
  auto options = Options();
  options.one_time_keys = true;
  options.rsa_bits = 2048;
  options.key_file = dir.path() / "unused.pem";
  AnweddolClassicServer server(options, Recorder());
  EXPECT_EQ(server.public_key_sha256(), "");
  json stat = {{"verb", "STAT"}, {"parameters", {}}};
  auto a = test::AnweddolClassicExchange("127.0.0.1", server.port(), stat, ClientOptions());
  auto b = test::AnweddolClassicExchange("127.0.0.1", server.port(), stat, ClientOptions());
  EXPECT_EQ(a.response["success"], true);
  EXPECT_EQ(b.response["success"], true);
  EXPECT_EQ(a.server_key_sha256.size(), 64u);
  EXPECT_NE(a.server_key_sha256, b.server_key_sha256);
  EXPECT_FALSE(std::filesystem::exists(options.key_file));
}

TEST_F(AnweddolClassicTest, OneTimeKeyBurstWaitsForTheGeneratorAndNeverReusesAKey) {
  test::TempDir dir;
  auto options = OneTimeKeyOptions(dir, 2);
  options.io_timeout = 20s;  // the last connection waits for several keys on a busy machine
  LogCapture log;
  std::set<std::string> fingerprints;
  {
    AnweddolClassicServer server(options, Recorder());
    // All ask for a key at once: more than the pool holds.
    constexpr std::size_t kConnections = 8;
    std::vector<std::unique_ptr<AnweddolClassicConnection>> connections;
    for (std::size_t i = 0; i < kConnections; ++i) {
      connections.push_back(Connect(server.port(), 20s));
      SendClientKeyOnly(*connections.back());
    }
    for (std::size_t i = 0; i < kConnections; ++i) {
      auto& c = *connections[i];
      c.ExpectAck("client key");
      c.ReceiveServerKey();
      c.SendSessionKey();
      c.ReceiveSessionKey(*client_key_);
      json request = {{"verb", "STAT"}, {"parameters", {{"i", i}}}};
      c.SendRequest(request);
      EXPECT_EQ(c.ReceiveResponse()["data"]["echo"], request);
      EXPECT_EQ(c.server_key_sha256().size(), 64u);
      fingerprints.insert(c.server_key_sha256());
    }
    EXPECT_EQ(fingerprints.size(), kConnections);  // a key per connection
    EXPECT_EQ(calls(), kConnections);
    // And after the burst, the pool serves again.
    auto after = test::AnweddolClassicExchange(
        "127.0.0.1", server.port(), {{"verb", "STAT"}, {"parameters", {}}}, ClientOptions());
    EXPECT_EQ(after.response["success"], true);
    EXPECT_EQ(fingerprints.count(after.server_key_sha256), 0u);
  }
  EXPECT_GE(log.Count(kWaitingForKey), 1u);
}

TEST_F(AnweddolClassicTest, OneTimeKeysWithoutAPoolAreMadeOnDemand) {
  test::TempDir dir;
  AnweddolClassicServer server(OneTimeKeyOptions(dir, 0), Recorder());
  json stat = {{"verb", "STAT"}, {"parameters", {}}};
  auto a = test::AnweddolClassicExchange("127.0.0.1", server.port(), stat, ClientOptions());
  auto b = test::AnweddolClassicExchange("127.0.0.1", server.port(), stat, ClientOptions());
  EXPECT_EQ(a.response["success"], true);
  EXPECT_EQ(b.response["success"], true);
  EXPECT_NE(a.server_key_sha256, b.server_key_sha256);
}

TEST_F(AnweddolClassicTest, StoppingWhileConnectionsWaitForKeysIsClean) {
  test::TempDir dir;
  LogCapture log;
  auto server = std::make_unique<AnweddolClassicServer>(OneTimeKeyOptions(dir, 1), Recorder());
  std::vector<std::unique_ptr<AnweddolClassicConnection>> waiting;
  for (int i = 0; i < 10; ++i) {
    waiting.push_back(Connect(server->port()));
    SendClientKeyOnly(*waiting.back());
  }
  ASSERT_TRUE(log.WaitFor(kWaitingForKey, 5s));
  auto start = Clock::now();
  server.reset();
  EXPECT_LT(Clock::now() - start, 2s);
  for (auto& c : waiting) EXPECT_TRUE(c->WaitClosed(1s));
}

TEST_F(AnweddolClassicTest, ConnectionWaitingLongerThanIoTimeoutForAKeyIsClosed) {
  test::TempDir dir;
  auto options = OneTimeKeyOptions(dir, 1);
  // The first key of this size takes seconds to minutes to make, so the
  // connection surely waits; stopping then abandons it.
  options.rsa_bits = aw::kMaxPeerRsaBits;
  options.io_timeout = 300ms;
  LogCapture log;
  auto server = std::make_unique<AnweddolClassicServer>(options, Recorder());
  auto c = Connect(server->port());
  SendClientKeyOnly(*c);
  auto start = Clock::now();
  ExpectClientError([&] { c->ReceiveExactly(1); }, Kind::kClosed);  // not even the key's ack
  EXPECT_GE(Clock::now() - start, 250ms);
  EXPECT_LT(Clock::now() - start, 3s);
  EXPECT_EQ(log.Count(kWaitingForKey), 1u);
  EXPECT_EQ(log.Count("no one-time key within 300 ms"), 1u);
  start = Clock::now();
  server.reset();  // with a key half made
  EXPECT_LT(Clock::now() - start, 2s);
  EXPECT_EQ(calls(), 0u);
}

TEST_F(AnweddolClassicTest, OneTimeKeySizeIsCheckedAtStart) {
  test::TempDir dir;
  auto options = OneTimeKeyOptions(dir, 4);
  options.rsa_bits = 1024;
  try {
    AnweddolClassicServer server(options, Recorder());
    ADD_FAILURE() << "accepted RSA-1024 one-time keys";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
  }
}

TEST_F(AnweddolClassicTest, InvalidKeyFileIsNamed) {
  test::TempDir dir;
  auto options = Options();
  options.key_file = dir.path() / "broken.pem";
  test::WriteBytes(options.key_file,
                   "-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n");
  try {
    AnweddolClassicServer server(options, Recorder());
    ADD_FAILURE() << "accepted a broken key file";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
    EXPECT_THAT(e.what(), ::testing::HasSubstr(options.key_file.string()));
    EXPECT_THAT(e.what(), ::testing::HasSubstr("not a valid RSA private key"));
  }
  // A valid private key of another type is refused too, naming the file.
  EVP_PKEY* ec = EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256");
  ASSERT_NE(ec, nullptr);
  BIO* bio = BIO_new(BIO_s_mem());
  ASSERT_EQ(PEM_write_bio_PrivateKey(bio, ec, nullptr, nullptr, 0, nullptr, nullptr), 1);
  char* data = nullptr;
  long size = BIO_get_mem_data(bio, &data);
  test::WriteBytes(options.key_file, std::string(data, static_cast<std::size_t>(size)));
  BIO_free(bio);
  EVP_PKEY_free(ec);
  try {
    AnweddolClassicServer server(options, Recorder());
    ADD_FAILURE() << "accepted an EC key file";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), ::testing::HasSubstr(options.key_file.string()));
    EXPECT_THAT(e.what(), ::testing::HasSubstr("not an RSA key"));
  }
}

TEST_F(AnweddolClassicTest, BindFailureNamesTheAddress) {
  AnweddolClassicServer first(Options(), Recorder());
  auto options = Options();
  options.listen.port(first.port());
  try {
    AnweddolClassicServer second(options, Recorder());
    ADD_FAILURE() << "bound a port in use";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kUnavailable);
    EXPECT_THAT(e.what(), ::testing::HasSubstr("127.0.0.1:" + std::to_string(first.port())));
  }
}

TEST_F(AnweddolClassicTest, GarbageKeyLengthFieldGetsAckZeroAndClose) {
  AnweddolClassicServer server(Options(), Recorder());
  for (std::string_view field : {"abc=====", "12=3====", "0=======", "========", "99999999"}) {
    auto c = Connect(server.port());
    c->SendRaw(field);
    EXPECT_EQ(c->ReceiveAck(), '0') << field;
    EXPECT_TRUE(c->WaitClosed(3s)) << field;
  }
  EXPECT_EQ(Stat(server.port())["success"], true);  // still serving
}

TEST_F(AnweddolClassicTest, NonRsaOrSmallClientKeysAreRefused) {
  AnweddolClassicServer server(Options(), Recorder());
  auto ec = AnweddolClientKey::GenerateEc();
  auto small = AnweddolClientKey::GenerateRsa(1024);
  for (const std::string& pem : {ec->public_pem(), small->public_pem(), std::string("garbage!")}) {
    auto c = Connect(server.port());
    ExpectClientError([&] { c->SendPublicKeyPem(pem); }, Kind::kRefused);
    EXPECT_TRUE(c->WaitClosed(3s));
  }
  EXPECT_EQ(calls(), 0u);
  EXPECT_EQ(Stat(server.port())["success"], true);
}

TEST_F(AnweddolClassicTest, SessionKeyThatDoesNotDecryptIsRefused) {
  AnweddolClassicServer server(Options(), Recorder());
  auto c = Connect(server.port());
  c->SendPublicKeyPem(client_key_->public_pem());
  c->ReceiveServerKey();
  c->SendRaw(Bytes(512, 7));  // RSA-4096 ciphertext size, not a valid OAEP block
  EXPECT_EQ(c->ReceiveAck(), '0');
  EXPECT_TRUE(c->WaitClosed(3s));
  EXPECT_EQ(Stat(server.port())["success"], true);
}

TEST_F(AnweddolClassicTest, MalformedHeaderGetsAckZeroAndClose) {
  AnweddolClassicServer server(Options(), Recorder());
  {
    auto c = Handshaken(server.port());
    c->SendRaw(Bytes(16, 3));  // does not decrypt to a length
    EXPECT_EQ(c->ReceiveAck(), '0');
    EXPECT_TRUE(c->WaitClosed(3s));
  }
  for (std::string_view text : {"12a", "17", "0", "-32", " 48"}) {
    auto c = Handshaken(server.port());
    c->SendRaw(c->Encrypt(text));
    EXPECT_EQ(c->ReceiveAck(), '0') << text;
    EXPECT_TRUE(c->WaitClosed(3s)) << text;
  }
  EXPECT_EQ(calls(), 0u);
  EXPECT_EQ(Stat(server.port())["success"], true);
}

TEST_F(AnweddolClassicTest, OversizedMessageIsRefused) {
  auto options = Options();
  options.max_message_bytes = 1024;
  AnweddolClassicServer server(options, Recorder());
  {
    auto c = Handshaken(server.port());
    c->SendRaw(c->Encrypt(std::to_string(1040)));
    EXPECT_EQ(c->ReceiveAck(), '0');
    EXPECT_TRUE(c->WaitClosed(3s));
  }
  {
    auto c = Handshaken(server.port());
    ExpectClientError([&] { c->SendMessage(std::string(2000, 'x')); }, Kind::kRefused);
  }
  EXPECT_EQ(calls(), 0u);
  EXPECT_EQ(Stat(server.port())["success"], true);  // a small one passes
}

TEST_F(AnweddolClassicTest, BodyThatDoesNotDecryptGetsBadRequest) {
  AnweddolClassicServer server(Options(), Recorder());
  auto c = Handshaken(server.port());
  // One block whose plaintext ends in 0x00: an impossible PKCS7 padding.
  std::string bad = c->Encrypt(std::string(15, 'a') + '\0').substr(0, 16);
  c->SendRawBody(bad, {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16});
  EXPECT_EQ(c->ReceiveResponse(), kBadRequest);
  EXPECT_TRUE(c->WaitClosed(3s));
  EXPECT_EQ(calls(), 0u);
}

TEST_F(AnweddolClassicTest, TruncatedFramesCloseWithoutAnAnswer) {
  AnweddolClassicServer server(Options(), Recorder());
  {
    auto c = Handshaken(server.port());
    c->SendRaw(c->Encrypt("64").substr(0, 10));  // part of a header
    c->ShutdownWrite();
    EXPECT_TRUE(c->WaitClosed(3s));
  }
  {
    auto c = Handshaken(server.port());
    c->SendRaw(c->Encrypt("64"));
    c->ExpectAck("header");
    c->SendRaw(Bytes(20, 9));  // 20 of 64 body bytes
    c->ShutdownWrite();
    EXPECT_TRUE(c->WaitClosed(3s));
  }
  {
    auto c = Connect(server.port());
    c->SendRaw("800=====");
    c->ExpectAck("key length");
    c->SendRaw(client_key_->public_pem().substr(0, 100));  // part of a key
    c->ShutdownWrite();
    EXPECT_TRUE(c->WaitClosed(3s));
  }
  EXPECT_EQ(calls(), 0u);
  EXPECT_EQ(Stat(server.port())["success"], true);
}

TEST_F(AnweddolClassicTest, HandlerExceptionGivesInternalError) {
  AnweddolClassicServer server(Options(), [](std::string_view, const auto&) -> json {
    throw std::runtime_error("engine exploded");
  });
  EXPECT_EQ(Stat(server.port()),
            (json{{"success", false}, {"message", "Internal error"}, {"data", json::object()}}));
}

TEST_F(AnweddolClassicTest, SilentClientsDoNotDelayOthers) {
  AnweddolClassicServer server(Options(), Recorder());  // io_timeout 5 s
  std::vector<std::unique_ptr<AnweddolClassicConnection>> silent;
  for (int i = 0; i < 3; ++i) silent.push_back(Connect(server.port()));
  silent.push_back(Connect(server.port()));
  silent.back()->SendRaw("80");           // part of a length field, then nothing
  auto half = Handshaken(server.port());  // and one that stops after the handshake

  auto start = Clock::now();
  EXPECT_EQ(Stat(server.port())["success"], true);
  EXPECT_LT(Clock::now() - start, 3s);
  for (auto& c : silent) EXPECT_FALSE(c->WaitClosed(0ms));  // still waiting, not dropped
  EXPECT_FALSE(half->WaitClosed(0ms));
}

TEST_F(AnweddolClassicTest, SlowHandlerDoesNotBlockOtherRequests) {
  AnweddolClassicServer server(Options(), Recorder());  // 2 workers
  std::thread slow([&] {
    auto r = test::AnweddolClassicRequest("127.0.0.1", server.port(),
                                          {{"verb", "SLOW"}, {"parameters", {}}}, ClientOptions());
    EXPECT_EQ(r["success"], true);
  });
  std::this_thread::sleep_for(300ms);  // the slow one is in its handler by now
  auto start = Clock::now();
  EXPECT_EQ(Stat(server.port())["success"], true);
  EXPECT_LT(Clock::now() - start, 1200ms);
  slow.join();
}

TEST_F(AnweddolClassicTest, StalledClientIsDroppedAfterIoTimeout) {
  auto options = Options();
  options.io_timeout = 300ms;
  AnweddolClassicServer server(options, Recorder());
  {
    auto c = Connect(server.port());
    auto start = Clock::now();
    EXPECT_TRUE(c->WaitClosed(5s));
    EXPECT_GE(Clock::now() - start, 250ms);
  }
  {
    // Stalls in the middle of the key exchange.
    auto c = Connect(server.port());
    c->SendPublicKeyPem(client_key_->public_pem());
    c->ReceiveServerKey();
    auto start = Clock::now();
    EXPECT_TRUE(c->WaitClosed(5s));
    EXPECT_GE(Clock::now() - start, 250ms);
  }
  {
    // Announces a body and sends only part of it.
    auto c = Handshaken(server.port());
    c->SendRaw(c->Encrypt("64"));
    c->ExpectAck("header");
    c->SendRaw(Bytes(20, 1));
    EXPECT_TRUE(c->WaitClosed(5s));
  }
  EXPECT_EQ(calls(), 0u);
}

TEST_F(AnweddolClassicTest, DeniedPeerIsClosedWithoutAHandshake) {
  std::atomic<int> asked{0};
  std::optional<boost::asio::ip::address> seen;
  std::mutex seen_mu;
  AnweddolClassicServer server(Options(), Recorder(), [&](const boost::asio::ip::address& a) {
    ++asked;
    std::lock_guard lock(seen_mu);
    seen = a;
    return false;
  });
  auto c = Connect(server.port());
  // Nothing at all comes back: not an ack, not a key.
  ExpectClientError([&] { c->ReceiveExactly(1); }, Kind::kClosed);
  EXPECT_EQ(asked.load(), 1);
  {
    std::lock_guard lock(seen_mu);
    ASSERT_TRUE(seen.has_value());
    EXPECT_EQ(*seen, boost::asio::ip::make_address("127.0.0.1"));
  }
  ExpectClientError([&] { Stat(server.port()); }, Kind::kClosed);
  EXPECT_EQ(asked.load(), 2);
  EXPECT_EQ(calls(), 0u);
}

TEST_F(AnweddolClassicTest, ConnectionsOverTheMaximumAreClosedAtOnce) {
  auto options = Options();
  options.max_connections = 2;
  AnweddolClassicServer server(options, Recorder());
  auto a = Connect(server.port());
  auto b = Connect(server.port());
  std::this_thread::sleep_for(300ms);  // both accepted
  auto c = Connect(server.port());
  auto start = Clock::now();
  EXPECT_TRUE(c->WaitClosed(3s));
  EXPECT_LT(Clock::now() - start, 2s);  // well before io_timeout (5 s)
  EXPECT_FALSE(a->WaitClosed(0ms));
  EXPECT_FALSE(b->WaitClosed(0ms));
  a.reset();  // frees a slot once the server sees the close
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(Stat(server.port())["success"], true);
}

TEST_F(AnweddolClassicTest, ARecordedSessionKeyReplayedByAnotherClientRevealsNothing) {
  // The victim's connection, as an eavesdropper records it.
  AnweddolClassicServer server(Options(), Recorder());
  auto victim = Connect(server.port());
  victim->SendPublicKeyPem(client_key_->public_pem());
  victim->ReceiveServerKey();
  std::string recorded_blob = victim->SendSessionKey();
  std::string victim_proposal = victim->session_key();
  victim->ReceiveSessionKey(*client_key_);
  std::string victim_key = victim->session_key();
  // The session runs under a key of the server's, not the one the victim sent.
  EXPECT_NE(victim_key, victim_proposal);
  victim->SendRequest({{"verb", "STAT"}, {"parameters", {{"access_token", "secret"}}}});
  EXPECT_EQ(victim->ReceiveResponse()["success"], true);

  // The attacker replays the blob under a key pair of its own.
  auto attacker_key = AnweddolClientKey::GenerateRsa(2048);
  auto attacker = Connect(server.port());
  attacker->SendPublicKeyPem(attacker_key->public_pem());
  attacker->ReceiveServerKey();
  attacker->SendEncryptedSessionKey(recorded_blob);
  attacker->ReceiveSessionKey(*attacker_key);
  EXPECT_NE(attacker->session_key(), victim_key);
  EXPECT_NE(attacker->session_key(), victim_proposal);
  EXPECT_NE(attacker->session_key().substr(0, 32), victim_key.substr(0, 32));
}

TEST_F(AnweddolClassicTest, UndecryptableAndNonJsonBodiesGetTheSameAnswer) {
  AnweddolClassicServer server(Options(), Recorder());
  auto receive_raw = [](AnweddolClassicConnection& c) { return c.ReceiveMessage(); };
  std::string bad_padding, not_json, not_object;
  {
    auto c = Handshaken(server.port());
    c->SendRawBody(c->Encrypt(std::string(15, 'a') + '\0').substr(0, 16),
                   {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16});
    bad_padding = receive_raw(*c);
  }
  {
    auto c = Handshaken(server.port());
    c->SendMessage("this is not JSON at all");
    not_json = receive_raw(*c);
  }
  {
    auto c = Handshaken(server.port());
    c->SendMessage("[1, 2, 3]");
    not_object = receive_raw(*c);
  }
  EXPECT_EQ(json::parse(bad_padding), kBadRequest);
  EXPECT_EQ(not_json, bad_padding);
  EXPECT_EQ(not_object, bad_padding);
  EXPECT_EQ(calls(), 0u);
}

TEST_F(AnweddolClassicTest, OnePeerHoldingItsConnectionsLeavesOthersServed) {
  auto options = Options();
  options.max_connections_per_peer = 4;
  AnweddolClassicServer server(options, Recorder());
  std::vector<std::unique_ptr<AnweddolClassicConnection>> idle;
  for (int i = 0; i < 4; ++i) idle.push_back(Connect(server.port()));
  std::this_thread::sleep_for(200ms);  // all four accepted
  auto fifth = Connect(server.port());
  auto start = Clock::now();
  EXPECT_TRUE(fifth->WaitClosed(3s));
  EXPECT_LT(Clock::now() - start, 2s);  // at once, not after io_timeout
  // Another address is served while the first holds its slots.
  auto other =
      std::make_unique<AnweddolClassicConnection>("127.0.0.1", server.port(), 10s, "127.0.0.2");
  other->Handshake(*client_key_);
  other->SendRequest({{"verb", "STAT"}, {"parameters", json::object()}});
  EXPECT_EQ(other->ReceiveResponse()["success"], true);
  for (auto& c : idle) EXPECT_FALSE(c->WaitClosed(0ms));
}

TEST_F(AnweddolClassicTest, KeyExchangesPerPeerAreBudgetedBeforeAnyRsaWork) {
  auto options = Options();
  options.handshakes_per_minute = 1;
  options.handshake_burst = 3;
  AnweddolClassicServer server(options, Recorder());
  for (int i = 0; i < 3; ++i) EXPECT_EQ(Stat(server.port())["success"], true) << i;
  // The fourth is closed before the server reads or sends anything.
  auto c = Connect(server.port());
  ExpectClientError([&] { c->ReceiveExactly(1); }, Kind::kClosed);
  auto other =
      std::make_unique<AnweddolClassicConnection>("127.0.0.1", server.port(), 10s, "127.0.0.2");
  other->Handshake(*client_key_);
  other->SendRequest({{"verb", "STAT"}, {"parameters", json::object()}});
  EXPECT_EQ(other->ReceiveResponse()["success"], true);
}

TEST_F(AnweddolClassicTest, AClientTricklingItsStepsIsDroppedAtTheHandshakeDeadline) {
  auto options = Options();
  options.io_timeout = 2s;
  options.handshake_timeout = 1s;
  AnweddolClassicServer server(options, Recorder());
  auto c = Connect(server.port());
  auto start = Clock::now();
  // One byte of the length field every 300 ms: each within io_timeout.
  bool closed = false;
  for (char byte : std::string("800=====")) {
    try {
      c->SendRaw(std::string(1, byte));
    } catch (const AnweddolClientError&) {
      closed = true;
      break;
    }
    if (c->WaitClosed(300ms)) {
      closed = true;
      break;
    }
  }
  EXPECT_TRUE(closed || c->WaitClosed(2s));
  EXPECT_LT(Clock::now() - start, 2500ms);
  EXPECT_GE(Clock::now() - start, 900ms);
}

TEST_F(AnweddolClassicTest, BlockedHandlersLeaveTheKeyExchangeOfOthersRunning) {
  // One RSA worker; handlers that block until released, as CREATEs booting
  // VMs do. Other clients' key exchanges must still complete.
  auto options = Options();
  options.workers = 1;
  options.handler_workers = 4;
  std::mutex mu;
  std::condition_variable cv;
  bool release = false;
  std::atomic<int> blocked{0};
  AnweddolClassicServer server(options, [&](std::string_view body, const auto&) -> json {
    if (json::parse(body).value("verb", "") == "SLOW") {
      ++blocked;
      std::unique_lock lock(mu);
      cv.wait(lock, [&] { return release; });
    }
    return {{"success", true}, {"message", "OK"}, {"data", json::object()}};
  });
  std::vector<std::thread> slow;
  for (int i = 0; i < 2; ++i) {
    slow.emplace_back([&] {
      test::AnweddolClassicRequest("127.0.0.1", server.port(),
                                   {{"verb", "SLOW"}, {"parameters", json::object()}},
                                   ClientOptions());
    });
  }
  for (int i = 0; i < 500 && blocked.load() < 2; ++i) std::this_thread::sleep_for(10ms);
  ASSERT_EQ(blocked.load(), 2);
  auto start = Clock::now();
  EXPECT_EQ(Stat(server.port())["success"], true);
  EXPECT_LT(Clock::now() - start, 3s);
  {
    std::lock_guard lock(mu);
    release = true;
  }
  cv.notify_all();
  for (auto& t : slow) t.join();
}

TEST_F(AnweddolClassicTest, OnePeerCannotDrainTheOneTimeKeys) {
  test::TempDir dir;
  auto options = OneTimeKeyOptions(dir, 2);
  options.one_time_keys_per_minute = 1;
  options.one_time_key_burst = 2;
  AnweddolClassicServer server(options, Recorder());
  for (int i = 0; i < 2; ++i) EXPECT_EQ(Stat(server.port())["success"], true) << i;
  // The third from that peer is refused at its key, without taking one.
  auto c = Connect(server.port());
  ExpectClientError(
      [&] {
        c->SendPublicKeyPem(client_key_->public_pem());
        c->ReceiveServerKey();
      },
      Kind::kRefused);
  auto other =
      std::make_unique<AnweddolClassicConnection>("127.0.0.1", server.port(), 20s, "127.0.0.2");
  other->Handshake(*client_key_);
  other->SendRequest({{"verb", "STAT"}, {"parameters", json::object()}});
  EXPECT_EQ(other->ReceiveResponse()["success"], true);
}

TEST_F(AnweddolClassicTest, StoppingClosesOpenConnections) {
  auto server = std::make_unique<AnweddolClassicServer>(Options(), Recorder());
  auto idle = Connect(server->port());
  auto half = Handshaken(server->port());
  std::this_thread::sleep_for(100ms);
  auto start = Clock::now();
  server.reset();
  EXPECT_LT(Clock::now() - start, 2s);
  EXPECT_TRUE(idle->WaitClosed(1s));
  EXPECT_TRUE(half->WaitClosed(1s));
}

}  // namespace
}  // namespace ephemera
