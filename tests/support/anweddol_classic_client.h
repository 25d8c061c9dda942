// A client of the Anweddol classic protocol for tests and benchmarks,
// written apart from the server's code (its own framing, OpenSSL directly,
// blocking POSIX sockets with a deadline on every step), so that the two
// check each other. It speaks as the Anweddol 4.1 client does: its key
// first, then the server's, then the session key both ways.
#pragma once

#include <openssl/evp.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <string_view>

namespace ephemera::test {

class AnweddolClientError : public std::runtime_error {
 public:
  enum class Kind {
    kRefused,   // the server answered a step with ack '0'
    kClosed,    // the server closed (or reset) the connection
    kTimeout,   // a step did not complete within the timeout
    kProtocol,  // the server sent something malformed
    kSystem,    // a local failure (socket, OpenSSL)
  };
  AnweddolClientError(Kind kind, const std::string& message)
      : std::runtime_error(message), kind_(kind) {}
  Kind kind() const { return kind_; }

 private:
  Kind kind_;
};

// An RSA key pair for the client side (or any key whose public PEM a test
// wants to send).
class AnweddolClientKey {
 public:
  static std::shared_ptr<const AnweddolClientKey> GenerateRsa(unsigned bits = 2048);
  static std::shared_ptr<const AnweddolClientKey> GenerateEc();  // P-256: not an RSA key
  ~AnweddolClientKey();

  const std::string& public_pem() const { return public_pem_; }
  EVP_PKEY* get() const { return key_; }

 private:
  explicit AnweddolClientKey(EVP_PKEY* key);
  EVP_PKEY* key_;
  std::string public_pem_;
};

// One connection, step by step. Every method throws AnweddolClientError.
class AnweddolClassicConnection {
 public:
  // Connects to host (a numeric IPv4 or IPv6 address) and port, from
  // `source` (a numeric address of this host) when one is given.
  AnweddolClassicConnection(const std::string& host, std::uint16_t port,
                            std::chrono::milliseconds timeout, const std::string& source = "");
  ~AnweddolClassicConnection();
  AnweddolClassicConnection(const AnweddolClassicConnection&) = delete;
  AnweddolClassicConnection& operator=(const AnweddolClassicConnection&) = delete;

  // The four key-exchange steps in order.
  void Handshake(const AnweddolClientKey& key);

  // Handshake steps one by one.
  void SendPublicKeyPem(std::string_view pem);  // length field, ack, PEM, ack
  std::string ReceiveServerKey();               // returns the PEM; acks it
  // A random key + IV under the server's key; returns the encrypted blob sent.
  std::string SendSessionKey();
  // Sends an encrypted session-key blob as it is (a replay of another one).
  void SendEncryptedSessionKey(std::string_view blob);
  void ReceiveSessionKey(const AnweddolClientKey& key);  // decrypts, adopts, acks
  // The AES key and IV now in use (48 bytes), as the session has them.
  std::string session_key() const;

  // Messages after the handshake.
  void SendRequest(const nlohmann::json& request);  // request.dump()
  void SendMessage(std::string_view text);
  // Sends a header announcing ciphertext.size() + 16 bytes, waits for its
  // ack, then the given bytes and next_iv, and adopts next_iv: lets a test
  // send a body that does not decrypt.
  void SendRawBody(std::string_view ciphertext, const std::array<std::uint8_t, 16>& next_iv);
  // AES-256-CBC (PKCS7) of `plain` under the session key and current IV,
  // e.g. a header with a chosen length text.
  std::string Encrypt(std::string_view plain) const;
  nlohmann::json ReceiveResponse();
  std::string ReceiveMessage();

  // Raw access for malformed traffic.
  void SendRaw(std::string_view bytes);
  std::string ReceiveExactly(std::size_t size);
  char ReceiveAck();                      // the ack byte
  void ExpectAck(std::string_view step);  // kRefused on '0', kProtocol on other bytes
  void ShutdownWrite();
  // True if the server closes (EOF or reset) within `within`, discarding
  // anything it sends meanwhile; false if it is still open then.
  bool WaitClosed(std::chrono::milliseconds within);

  const std::string& server_key_pem() const { return server_key_pem_; }
  const std::string& server_key_sha256() const { return server_key_sha256_; }
  int fd() const { return fd_; }

 private:
  int fd_ = -1;
  std::chrono::milliseconds timeout_;
  EVP_PKEY* server_key_ = nullptr;
  std::string server_key_pem_;
  std::string server_key_sha256_;
  std::array<std::uint8_t, 32> aes_key_{};
  std::array<std::uint8_t, 16> iv_{};
};

struct AnweddolClientOptions {
  // The client's key pair, reused across requests; null: a fresh 2048-bit
  // key per request (the Anweddol client makes a fresh RSA-4096 one).
  std::shared_ptr<const AnweddolClientKey> key;
  std::chrono::milliseconds timeout{10000};
};

struct AnweddolClassicResult {
  nlohmann::json response;
  std::string server_key_sha256;  // SHA-256 of the server key's SubjectPublicKeyInfo DER
};

// One request on a fresh connection: handshake, request, response.
AnweddolClassicResult AnweddolClassicExchange(const std::string& host, std::uint16_t port,
                                              const nlohmann::json& request,
                                              const AnweddolClientOptions& options = {});
nlohmann::json AnweddolClassicRequest(const std::string& host, std::uint16_t port,
                                      const nlohmann::json& request,
                                      const AnweddolClientOptions& options = {});

}  // namespace ephemera::test
