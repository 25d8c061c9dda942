#include "support/anweddol_classic_client.h"

#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace ephemera::test {

namespace {

using Clock = std::chrono::steady_clock;
using Kind = AnweddolClientError::Kind;

constexpr std::size_t kMaxServerPem = 16 * 1024;
constexpr std::size_t kMaxResponse = 16 * 1024 * 1024;

[[noreturn]] void Throw(Kind kind, const std::string& message) {
  throw AnweddolClientError(kind, message);
}

[[noreturn]] void ThrowOpenSsl(const std::string& what) {
  unsigned long code = ERR_get_error();
  ERR_clear_error();
  char text[256] = "unknown";
  if (code != 0) ERR_error_string_n(code, text, sizeof text);
  Throw(Kind::kSystem, what + ": " + text);
}

const unsigned char* U(std::string_view s) {
  return reinterpret_cast<const unsigned char*>(s.data());
}

std::string PublicPem(EVP_PKEY* key) {
  BIO* bio = BIO_new(BIO_s_mem());
  if (!bio || PEM_write_bio_PUBKEY(bio, key) != 1) {
    BIO_free(bio);
    ThrowOpenSsl("PEM_write_bio_PUBKEY");
  }
  char* data = nullptr;
  long size = BIO_get_mem_data(bio, &data);
  std::string pem(data, static_cast<std::size_t>(size));
  BIO_free(bio);
  return pem;
}

std::string Sha256HexOf(std::string_view data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  if (EVP_Digest(data.data(), data.size(), md, &length, EVP_sha256(), nullptr) != 1) {
    ThrowOpenSsl("SHA-256");
  }
  static constexpr char kHex[] = "0123456789abcdef";
  std::string hex;
  for (unsigned i = 0; i < length; ++i) {
    hex += kHex[md[i] >> 4];
    hex += kHex[md[i] & 15];
  }
  return hex;
}

std::string Oaep(bool encrypt, EVP_PKEY* key, std::string_view in) {
  EVP_PKEY_CTX* ctx = EVP_PKEY_CTX_new_from_pkey(nullptr, key, nullptr);
  std::string out;
  bool ok = ctx && (encrypt ? EVP_PKEY_encrypt_init(ctx) : EVP_PKEY_decrypt_init(ctx)) == 1 &&
            EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_OAEP_PADDING) == 1 &&
            EVP_PKEY_CTX_set_rsa_oaep_md(ctx, EVP_sha256()) == 1 &&
            EVP_PKEY_CTX_set_rsa_mgf1_md(ctx, EVP_sha256()) == 1;
  if (ok) {
    std::size_t length = static_cast<std::size_t>(EVP_PKEY_get_size(key));
    out.resize(length);
    auto* dst = reinterpret_cast<unsigned char*>(out.data());
    ok = (encrypt ? EVP_PKEY_encrypt(ctx, dst, &length, U(in), in.size())
                  : EVP_PKEY_decrypt(ctx, dst, &length, U(in), in.size())) == 1;
    out.resize(length);
  }
  EVP_PKEY_CTX_free(ctx);
  if (!ok) ThrowOpenSsl(encrypt ? "RSA-OAEP encrypt" : "RSA-OAEP decrypt");
  return out;
}

std::string Aes(bool encrypt, const std::array<std::uint8_t, 32>& key,
                const std::array<std::uint8_t, 16>& iv, std::string_view in) {
  EVP_CIPHER_CTX* ctx = EVP_CIPHER_CTX_new();
  std::string out(in.size() + 16, '\0');
  int n1 = 0;
  int n2 = 0;
  auto* dst = reinterpret_cast<unsigned char*>(out.data());
  bool ok = ctx &&
            EVP_CipherInit_ex(ctx, EVP_aes_256_cbc(), nullptr, key.data(), iv.data(),
                              encrypt ? 1 : 0) == 1 &&
            EVP_CipherUpdate(ctx, dst, &n1, U(in), static_cast<int>(in.size())) == 1 &&
            EVP_CipherFinal_ex(ctx, dst + n1, &n2) == 1;
  EVP_CIPHER_CTX_free(ctx);
  if (!ok) {
    ERR_clear_error();
    Throw(encrypt ? Kind::kSystem : Kind::kProtocol,
          encrypt ? "AES encrypt failed" : "AES ciphertext from the server does not decrypt");
  }
  out.resize(static_cast<std::size_t>(n1 + n2));
  return out;
}

template <std::size_t N>
std::array<std::uint8_t, N> RandomBytes() {
  std::array<std::uint8_t, N> out;
  if (RAND_bytes(out.data(), static_cast<int>(N)) != 1) ThrowOpenSsl("RAND_bytes");
  return out;
}

bool ParseDigits(std::string_view s, std::size_t max, std::size_t* value) {
  if (s.empty() || s.size() > 15) return false;
  std::size_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + static_cast<std::size_t>(c - '0');
  }
  if (v == 0 || v > max) return false;
  *value = v;
  return true;
}

// Waits for `events` on fd until `deadline`; false on timeout.
bool PollUntil(int fd, short events, Clock::time_point deadline) {
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() < 0) return false;
    pollfd p{fd, events, 0};
    int r = ::poll(&p, 1, static_cast<int>(left.count()) + 1);
    if (r > 0) return true;
    if (r == 0) {
      if (Clock::now() >= deadline) return false;
      continue;
    }
    if (errno != EINTR) Throw(Kind::kSystem, std::string("poll: ") + std::strerror(errno));
  }
}

}  // namespace

// ---- AnweddolClientKey ----------------------------------------------------

AnweddolClientKey::AnweddolClientKey(EVP_PKEY* key) : key_(key), public_pem_(PublicPem(key)) {}

AnweddolClientKey::~AnweddolClientKey() { EVP_PKEY_free(key_); }

std::shared_ptr<const AnweddolClientKey> AnweddolClientKey::GenerateRsa(unsigned bits) {
  EVP_PKEY* key = EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", static_cast<std::size_t>(bits));
  if (!key) ThrowOpenSsl("RSA key generation");
  return std::shared_ptr<const AnweddolClientKey>(new AnweddolClientKey(key));
}

std::shared_ptr<const AnweddolClientKey> AnweddolClientKey::GenerateEc() {
  EVP_PKEY* key = EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256");
  if (!key) ThrowOpenSsl("EC key generation");
  return std::shared_ptr<const AnweddolClientKey>(new AnweddolClientKey(key));
}

// ---- AnweddolClassicConnection --------------------------------------------

AnweddolClassicConnection::AnweddolClassicConnection(const std::string& host, std::uint16_t port,
                                                     std::chrono::milliseconds timeout,
                                                     const std::string& source)
    : timeout_(timeout) {
  addrinfo hints{};
  hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* result = nullptr;
  if (int rc = ::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &result);
      rc != 0) {
    Throw(Kind::kSystem, "bad address " + host + ": " + ::gai_strerror(rc));
  }
  fd_ = ::socket(result->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd_ < 0) {
    ::freeaddrinfo(result);
    Throw(Kind::kSystem, std::string("socket: ") + std::strerror(errno));
  }
  int one = 1;
  ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (!source.empty()) {
    addrinfo* local = nullptr;
    if (::getaddrinfo(source.c_str(), "0", &hints, &local) != 0 ||
        ::bind(fd_, local->ai_addr, local->ai_addrlen) != 0) {
      if (local) ::freeaddrinfo(local);
      ::freeaddrinfo(result);
      ::close(fd_);
      Throw(Kind::kSystem, "cannot bind to source address " + source);
    }
    ::freeaddrinfo(local);
  }
  int rc = ::connect(fd_, result->ai_addr, result->ai_addrlen);
  ::freeaddrinfo(result);
  if (rc != 0 && errno != EINPROGRESS) {
    int err = errno;
    ::close(fd_);
    Throw(Kind::kClosed, std::string("connect: ") + std::strerror(err));
  }
  if (rc != 0) {
    if (!PollUntil(fd_, POLLOUT, Clock::now() + timeout_)) {
      ::close(fd_);
      Throw(Kind::kTimeout, "connect timed out");
    }
    int err = 0;
    socklen_t length = sizeof err;
    ::getsockopt(fd_, SOL_SOCKET, SO_ERROR, &err, &length);
    if (err != 0) {
      ::close(fd_);
      Throw(Kind::kClosed, std::string("connect: ") + std::strerror(err));
    }
  }
}

AnweddolClassicConnection::~AnweddolClassicConnection() {
  if (fd_ >= 0) ::close(fd_);
  EVP_PKEY_free(server_key_);
  OPENSSL_cleanse(aes_key_.data(), aes_key_.size());
}

void AnweddolClassicConnection::SendRaw(std::string_view bytes) {
  auto deadline = Clock::now() + timeout_;
  std::size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = ::send(fd_, bytes.data() + done, bytes.size() - done, MSG_NOSIGNAL);
    if (n > 0) {
      done += static_cast<std::size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      if (!PollUntil(fd_, POLLOUT, deadline)) Throw(Kind::kTimeout, "send timed out");
      continue;
    }
    Throw(Kind::kClosed, std::string("send: ") + std::strerror(errno));
  }
}

std::string AnweddolClassicConnection::ReceiveExactly(std::size_t size) {
  auto deadline = Clock::now() + timeout_;
  std::string out(size, '\0');
  std::size_t done = 0;
  while (done < size) {
    ssize_t n = ::recv(fd_, out.data() + done, size - done, 0);
    if (n > 0) {
      done += static_cast<std::size_t>(n);
      continue;
    }
    if (n == 0) {
      Throw(Kind::kClosed, "server closed the connection after " + std::to_string(done) + " of " +
                               std::to_string(size) + " bytes");
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      if (!PollUntil(fd_, POLLIN, deadline)) {
        Throw(Kind::kTimeout, "receive timed out after " + std::to_string(done) + " of " +
                                  std::to_string(size) + " bytes");
      }
      continue;
    }
    Throw(Kind::kClosed, std::string("recv: ") + std::strerror(errno));
  }
  return out;
}

char AnweddolClassicConnection::ReceiveAck() { return ReceiveExactly(1)[0]; }

void AnweddolClassicConnection::ExpectAck(std::string_view step) {
  char ack = ReceiveAck();
  if (ack == '0') Throw(Kind::kRefused, "server refused " + std::string(step));
  if (ack != '1') Throw(Kind::kProtocol, "bad ack byte after " + std::string(step));
}

void AnweddolClassicConnection::ShutdownWrite() { ::shutdown(fd_, SHUT_WR); }

bool AnweddolClassicConnection::WaitClosed(std::chrono::milliseconds within) {
  auto deadline = Clock::now() + within;
  char buffer[4096];
  for (;;) {
    ssize_t n = ::recv(fd_, buffer, sizeof buffer, 0);
    if (n == 0) return true;
    if (n > 0) continue;
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      if (!PollUntil(fd_, POLLIN, deadline)) return false;
      continue;
    }
    return true;  // ECONNRESET and the like
  }
}

void AnweddolClassicConnection::SendPublicKeyPem(std::string_view pem) {
  std::string field = std::to_string(pem.size());
  if (field.size() < 8) field.resize(8, '=');
  SendRaw(field);
  ExpectAck("client key length");
  SendRaw(pem);
  ExpectAck("client key");
}

std::string AnweddolClassicConnection::ReceiveServerKey() {
  std::string field = ReceiveExactly(8);
  std::size_t length = 0;
  if (!ParseDigits(field.substr(0, field.find('=')), kMaxServerPem, &length)) {
    SendRaw("0");
    Throw(Kind::kProtocol, "bad server key length field");
  }
  SendRaw("1");
  std::string pem = ReceiveExactly(length);
  BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  EVP_PKEY* key = bio ? PEM_read_bio_PUBKEY(bio, nullptr, nullptr, nullptr) : nullptr;
  BIO_free(bio);
  if (!key || !EVP_PKEY_is_a(key, "RSA")) {
    EVP_PKEY_free(key);
    ERR_clear_error();
    SendRaw("0");
    Throw(Kind::kProtocol, "server key is not an RSA public key PEM");
  }
  unsigned char* der = nullptr;
  int der_length = i2d_PUBKEY(key, &der);
  if (der_length <= 0) {
    EVP_PKEY_free(key);
    ThrowOpenSsl("i2d_PUBKEY");
  }
  server_key_sha256_ = Sha256HexOf(
      std::string_view(reinterpret_cast<char*>(der), static_cast<std::size_t>(der_length)));
  OPENSSL_free(der);
  EVP_PKEY_free(server_key_);
  server_key_ = key;
  server_key_pem_ = pem;
  SendRaw("1");
  return pem;
}

std::string AnweddolClassicConnection::SendSessionKey() {
  if (!server_key_) Throw(Kind::kSystem, "no server key yet");
  aes_key_ = RandomBytes<32>();
  iv_ = RandomBytes<16>();
  std::string plain = session_key();
  std::string cipher = Oaep(true, server_key_, plain);
  OPENSSL_cleanse(plain.data(), plain.size());
  SendEncryptedSessionKey(cipher);
  return cipher;
}

void AnweddolClassicConnection::SendEncryptedSessionKey(std::string_view blob) {
  SendRaw(blob);
  ExpectAck("session key");
}

std::string AnweddolClassicConnection::session_key() const {
  std::string key(reinterpret_cast<const char*>(aes_key_.data()), aes_key_.size());
  key.append(reinterpret_cast<const char*>(iv_.data()), iv_.size());
  return key;
}

void AnweddolClassicConnection::ReceiveSessionKey(const AnweddolClientKey& key) {
  std::string cipher = ReceiveExactly(static_cast<std::size_t>(EVP_PKEY_get_size(key.get())));
  std::string plain;
  try {
    plain = Oaep(false, key.get(), cipher);
  } catch (const AnweddolClientError&) {
    SendRaw("0");
    Throw(Kind::kProtocol, "session key from the server does not decrypt");
  }
  if (plain.size() != 48) {
    SendRaw("0");
    Throw(Kind::kProtocol, "session key from the server is not 48 bytes");
  }
  std::copy_n(plain.begin(), 32, aes_key_.begin());
  std::copy_n(plain.begin() + 32, 16, iv_.begin());
  OPENSSL_cleanse(plain.data(), plain.size());
  SendRaw("1");
}

void AnweddolClassicConnection::Handshake(const AnweddolClientKey& key) {
  SendPublicKeyPem(key.public_pem());
  ReceiveServerKey();
  SendSessionKey();
  ReceiveSessionKey(key);
}

std::string AnweddolClassicConnection::Encrypt(std::string_view plain) const {
  return Aes(true, aes_key_, iv_, plain);
}

void AnweddolClassicConnection::SendRawBody(std::string_view ciphertext,
                                            const std::array<std::uint8_t, 16>& next_iv) {
  SendRaw(Aes(true, aes_key_, iv_, std::to_string(ciphertext.size() + 16)));
  ExpectAck("request header");
  std::string body(ciphertext);
  body.append(reinterpret_cast<const char*>(next_iv.data()), next_iv.size());
  SendRaw(body);
  iv_ = next_iv;
}

void AnweddolClassicConnection::SendMessage(std::string_view text) {
  SendRawBody(Aes(true, aes_key_, iv_, text), RandomBytes<16>());
}

void AnweddolClassicConnection::SendRequest(const nlohmann::json& request) {
  SendMessage(request.dump());
}

std::string AnweddolClassicConnection::ReceiveMessage() {
  std::string header = ReceiveExactly(16);
  std::size_t length = 0;
  if (!ParseDigits(Aes(false, aes_key_, iv_, header), kMaxResponse, &length) || length < 32 ||
      length % 16 != 0) {
    SendRaw("0");
    Throw(Kind::kProtocol, "bad response header");
  }
  SendRaw("1");
  std::string body = ReceiveExactly(length);
  std::string text = Aes(false, aes_key_, iv_, std::string_view(body).substr(0, length - 16));
  std::copy(body.end() - 16, body.end(), iv_.begin());
  return text;
}

nlohmann::json AnweddolClassicConnection::ReceiveResponse() {
  std::string text = ReceiveMessage();
  nlohmann::json response = nlohmann::json::parse(text, nullptr, false);
  if (response.is_discarded()) Throw(Kind::kProtocol, "response is not JSON: " + text);
  return response;
}

// ---- One-shot helpers -----------------------------------------------------

AnweddolClassicResult AnweddolClassicExchange(const std::string& host, std::uint16_t port,
                                              const nlohmann::json& request,
                                              const AnweddolClientOptions& options) {
  std::shared_ptr<const AnweddolClientKey> key =
      options.key ? options.key : AnweddolClientKey::GenerateRsa(2048);
  AnweddolClassicConnection connection(host, port, options.timeout);
  connection.Handshake(*key);
  connection.SendRequest(request);
  AnweddolClassicResult result;
  result.response = connection.ReceiveResponse();
  result.server_key_sha256 = connection.server_key_sha256();
  return result;
}

nlohmann::json AnweddolClassicRequest(const std::string& host, std::uint16_t port,
                                      const nlohmann::json& request,
                                      const AnweddolClientOptions& options) {
  return AnweddolClassicExchange(host, port, request, options).response;
}

}  // namespace ephemera::test
