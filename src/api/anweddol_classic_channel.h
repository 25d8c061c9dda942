// The cryptography and framing of the Anweddol classic protocol (TCP, port
// 6150), as small functions without sockets so that each one can be tested
// (and fuzzed) alone. OpenSSL 3 EVP APIs only.
//
// On the wire (see reference/anweddol-protocol.md):
//  - a public key travels as its PEM length in an 8-byte '='-padded decimal
//    field ("800====="), then the PEM;
//  - the session key is 48 bytes (AES-256 key, then IV) under RSA-OAEP
//    (SHA-256, MGF1-SHA256, no label) with the receiver's public key;
//  - a message is a 16-byte header, AES-256-CBC (PKCS7) of the decimal length
//    L of what follows, then L bytes: the AES-256-CBC ciphertext of the JSON
//    body (same key and IV as the header) and 16 raw bytes, the IV of the
//    next message.
//
// Every decoder throws Error(kInvalidArgument) on malformed input and never
// reads past what it was given.
#pragma once

#include <openssl/evp.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

namespace ephemera::anweddol {

inline constexpr unsigned kDefaultRsaBits = 4096;
inline constexpr unsigned kMinPeerRsaBits = 2048;
inline constexpr unsigned kMaxPeerRsaBits = 16384;
// A 16384-bit SubjectPublicKeyInfo PEM is about 2.9 KiB.
inline constexpr std::size_t kMaxPublicKeyPemBytes = 8192;
inline constexpr std::size_t kLengthFieldBytes = 8;
inline constexpr std::size_t kAesKeyBytes = 32;
inline constexpr std::size_t kAesBlockBytes = 16;
inline constexpr std::size_t kSessionKeyBytes = kAesKeyBytes + kAesBlockBytes;
inline constexpr std::size_t kHeaderBytes = 16;
// The smallest message: one cipher block and the next IV.
inline constexpr std::size_t kMinMessageBytes = 2 * kAesBlockBytes;

// An RSA key (RAII around EVP_PKEY): a private key of ours, or a peer's
// public key. Immutable once made, so one key may serve many threads.
class RsaKey {
 public:
  RsaKey() = default;

  static RsaKey Generate(unsigned bits = kDefaultRsaBits);
  // The same, abandoned (kUnavailable) as soon as `keep_going` returns false:
  // OpenSSL asks it at every prime candidate, so a large key can be stopped
  // promptly. It is called on this thread and must not throw.
  static RsaKey Generate(unsigned bits, const std::function<bool()>& keep_going);
  // A private key in PEM (PKCS#8 or PKCS#1); `what` names its origin in errors.
  static RsaKey FromPrivatePem(std::string_view pem, std::string_view what = "private key");
  // kNotFound when absent; kInvalidArgument naming the file when it is not
  // an RSA private key of 2048..16384 bits.
  static RsaKey LoadPrivate(const std::filesystem::path& file);
  // Loads `file`, or generates a key of `bits` and writes it there (0600,
  // atomically). `generated` (optional) tells which happened.
  static RsaKey LoadOrGenerate(const std::filesystem::path& file, unsigned bits,
                               bool* generated = nullptr);
  // A peer's SubjectPublicKeyInfo PEM, refused (kInvalidArgument) unless it
  // is RSA with kMinPeerRsaBits..kMaxPeerRsaBits bits and an odd exponent > 1.
  static RsaKey FromPeerPublicPem(std::string_view pem);

  void SavePrivate(const std::filesystem::path& file) const;  // 0600, atomic
  std::string PrivatePem() const;
  std::string PublicPem() const;     // "-----BEGIN PUBLIC KEY-----\n..."
  std::string PublicDer() const;     // SubjectPublicKeyInfo
  std::string PublicSha256() const;  // lowercase hex of PublicDer()
  unsigned bits() const;
  std::size_t size_bytes() const;  // modulus size: the RSA ciphertext size
  bool has_private() const { return has_private_; }
  bool valid() const { return key_ != nullptr; }
  EVP_PKEY* get() const { return key_.get(); }

 private:
  struct Free {
    void operator()(EVP_PKEY* key) const { EVP_PKEY_free(key); }
  };
  RsaKey(EVP_PKEY* key, bool has_private) : key_(key), has_private_(has_private) {}

  std::unique_ptr<EVP_PKEY, Free> key_;
  bool has_private_ = false;
};

// RSA-OAEP with SHA-256 and MGF1-SHA256, no label.
std::string RsaOaepEncrypt(const RsaKey& public_key, std::string_view plain);
std::string RsaOaepDecrypt(const RsaKey& private_key, std::string_view cipher);

using AesKey = std::array<std::uint8_t, kAesKeyBytes>;
using AesIv = std::array<std::uint8_t, kAesBlockBytes>;

// AES-256-CBC with PKCS#7 padding.
std::string AesCbcEncrypt(const AesKey& key, const AesIv& iv, std::string_view plain);
std::string AesCbcDecrypt(const AesKey& key, const AesIv& iv, std::string_view cipher);

// The AES key and IV both ends use; wiped when destroyed.
struct SessionKey {
  AesKey key{};
  AesIv iv{};

  SessionKey() = default;
  SessionKey(const SessionKey&) = default;
  SessionKey& operator=(const SessionKey&) = default;
  ~SessionKey();

  static SessionKey Random();
  // Exactly kSessionKeyBytes: the key, then the IV.
  static SessionKey Parse(std::string_view bytes);
  std::string Serialize() const;
};

AesIv RandomIv();
AesIv IvFromBytes(std::string_view bytes);  // exactly 16 bytes

// The 8-byte key-length field: decimal, right-padded with '='.
std::string EncodeLengthField(std::size_t length);  // throws if over 8 digits
// Strict: 1..8 digits, then only '='; the value must be 1..max.
std::size_t ParseLengthField(std::string_view field, std::size_t max);

// The decimal text inside a message header: 1..15 digits, nothing else.
std::size_t ParseDecimalLength(std::string_view text);

struct EncodedMessage {
  std::string header;  // kHeaderBytes
  std::string body;    // ciphertext, then next_iv
};

// Encrypts `text` under (key, iv) and appends `next_iv`.
EncodedMessage EncodeMessage(const AesKey& key, const AesIv& iv, std::string_view text,
                             const AesIv& next_iv);

// The length L announced by a header: kMinMessageBytes <= L <= max_bytes and
// a whole number of cipher blocks.
std::size_t DecodeLengthHeader(const AesKey& key, const AesIv& iv, std::string_view header,
                               std::size_t max_bytes);

struct DecodedBody {
  std::string text;  // the plaintext (JSON, not parsed)
  AesIv next_iv{};
};

// The L bytes that follow a header. The next IV is the raw last 16 bytes, so
// a sender whose ciphertext is bad can still be answered under it.
DecodedBody DecodeBody(const AesKey& key, const AesIv& iv, std::string_view bytes);

// One entry point for a libFuzzer target: splits arbitrary bytes into the
// fields above (length field, decimal text, key, IV, header, body, a PEM)
// and runs every decoder on them. Expected failures (Error) are swallowed;
// any other exception or a crash is a bug.
void FuzzClassicDecoders(const std::uint8_t* data, std::size_t size);

}  // namespace ephemera::anweddol
