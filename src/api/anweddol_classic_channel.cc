#include "api/anweddol_classic_channel.h"

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <span>

#include "api/openssl_util.h"
#include "core/error.h"
#include "core/fs.h"
#include "core/random.h"
#include "core/sha256.h"

namespace ephemera::anweddol {

namespace {

using openssl::Bio;
using openssl::BioContents;
using openssl::MemoryBio;

struct PkeyCtxFree {
  void operator()(EVP_PKEY_CTX* ctx) const { EVP_PKEY_CTX_free(ctx); }
};
using PkeyCtx = std::unique_ptr<EVP_PKEY_CTX, PkeyCtxFree>;

struct CipherCtxFree {
  void operator()(EVP_CIPHER_CTX* ctx) const { EVP_CIPHER_CTX_free(ctx); }
};
using CipherCtx = std::unique_ptr<EVP_CIPHER_CTX, CipherCtxFree>;

// Never prompts on a terminal for a passphrase: an encrypted key is refused.
int NoPassphrase(char*, int, int, void*) { return 0; }

const unsigned char* Bytes(std::string_view s) {
  return reinterpret_cast<const unsigned char*>(s.data());
}

PkeyCtx OaepContext(const RsaKey& key, bool encrypt) {
  if (!key.valid()) Fail(ErrorCode::kInternal, "RSA-OAEP without a key");
  PkeyCtx ctx(EVP_PKEY_CTX_new_from_pkey(nullptr, key.get(), nullptr));
  if (!ctx ||
      (encrypt ? EVP_PKEY_encrypt_init(ctx.get()) : EVP_PKEY_decrypt_init(ctx.get())) != 1 ||
      EVP_PKEY_CTX_set_rsa_padding(ctx.get(), RSA_PKCS1_OAEP_PADDING) != 1 ||
      EVP_PKEY_CTX_set_rsa_oaep_md(ctx.get(), EVP_sha256()) != 1 ||
      EVP_PKEY_CTX_set_rsa_mgf1_md(ctx.get(), EVP_sha256()) != 1) {
    Fail(ErrorCode::kInternal, "cannot set up RSA-OAEP: {}", openssl::TakeError());
  }
  return ctx;
}

void CheckRsaBits(EVP_PKEY* key, std::string_view what) {
  if (!EVP_PKEY_is_a(key, "RSA")) {
    Fail(ErrorCode::kInvalidArgument, "{} is not an RSA key (it is {})", what,
         EVP_PKEY_get0_type_name(key) ? EVP_PKEY_get0_type_name(key) : "unknown");
  }
  int bits = EVP_PKEY_get_bits(key);
  if (bits < static_cast<int>(kMinPeerRsaBits) || bits > static_cast<int>(kMaxPeerRsaBits)) {
    Fail(ErrorCode::kInvalidArgument, "{} has {} bits (allowed: {}..{})", what, bits,
         kMinPeerRsaBits, kMaxPeerRsaBits);
  }
}

std::string AesCbc(bool encrypt, const AesKey& key, const AesIv& iv, std::string_view in) {
  if (in.size() > static_cast<std::size_t>(INT_MAX) - kAesBlockBytes) {
    Fail(ErrorCode::kInvalidArgument, "AES input too large ({} bytes)", in.size());
  }
  CipherCtx ctx(EVP_CIPHER_CTX_new());
  if (!ctx || EVP_CipherInit_ex(ctx.get(), EVP_aes_256_cbc(), nullptr, key.data(), iv.data(),
                                encrypt ? 1 : 0) != 1) {
    Fail(ErrorCode::kInternal, "cannot set up AES-256-CBC: {}", openssl::TakeError());
  }
  std::string out(in.size() + kAesBlockBytes, '\0');
  auto* dst = reinterpret_cast<unsigned char*>(out.data());
  int n1 = 0;
  int n2 = 0;
  if (EVP_CipherUpdate(ctx.get(), dst, &n1, Bytes(in), static_cast<int>(in.size())) != 1) {
    Fail(ErrorCode::kInternal, "AES-256-CBC: {}", openssl::TakeError());
  }
  if (EVP_CipherFinal_ex(ctx.get(), dst + n1, &n2) != 1) {
    ERR_clear_error();
    OPENSSL_cleanse(out.data(), out.size());
    Fail(ErrorCode::kInvalidArgument, "AES-256-CBC ciphertext does not decrypt (bad padding)");
  }
  out.resize(static_cast<std::size_t>(n1 + n2));
  return out;
}

bool AllDigits(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

std::size_t DecimalValue(std::string_view digits) {
  std::size_t value = 0;
  for (char c : digits) value = value * 10 + static_cast<std::size_t>(c - '0');
  return value;
}

}  // namespace

// ---- RsaKey ---------------------------------------------------------------

RsaKey RsaKey::Generate(unsigned bits) {
  if (bits < kMinPeerRsaBits || bits > kMaxPeerRsaBits) {
    Fail(ErrorCode::kInvalidArgument, "RSA key size {} out of range {}..{}", bits, kMinPeerRsaBits,
         kMaxPeerRsaBits);
  }
  EVP_PKEY* key = EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", static_cast<std::size_t>(bits));
  if (!key) Fail(ErrorCode::kInternal, "RSA-{} key generation: {}", bits, openssl::TakeError());
  return RsaKey(key, true);
}

RsaKey RsaKey::Generate(unsigned bits, const std::function<bool()>& keep_going) {
  if (bits < kMinPeerRsaBits || bits > kMaxPeerRsaBits) {
    Fail(ErrorCode::kInvalidArgument, "RSA key size {} out of range {}..{}", bits, kMinPeerRsaBits,
         kMaxPeerRsaBits);
  }
  PkeyCtx ctx(EVP_PKEY_CTX_new_from_name(nullptr, "RSA", nullptr));
  if (!ctx || EVP_PKEY_keygen_init(ctx.get()) <= 0 ||
      EVP_PKEY_CTX_set_rsa_keygen_bits(ctx.get(), static_cast<int>(bits)) <= 0) {
    Fail(ErrorCode::kInternal, "RSA-{} key generation: {}", bits, openssl::TakeError());
  }
  if (keep_going) {
    EVP_PKEY_CTX_set_app_data(ctx.get(), const_cast<std::function<bool()>*>(&keep_going));
    EVP_PKEY_CTX_set_cb(ctx.get(), [](EVP_PKEY_CTX* c) -> int {
      return (*static_cast<const std::function<bool()>*>(EVP_PKEY_CTX_get_app_data(c)))() ? 1 : 0;
    });
  }
  EVP_PKEY* key = nullptr;
  if (EVP_PKEY_keygen(ctx.get(), &key) <= 0) {
    EVP_PKEY_free(key);
    if (keep_going && !keep_going()) {
      ERR_clear_error();
      Fail(ErrorCode::kUnavailable, "RSA-{} key generation cancelled", bits);
    }
    Fail(ErrorCode::kInternal, "RSA-{} key generation: {}", bits, openssl::TakeError());
  }
  return RsaKey(key, true);
}

RsaKey RsaKey::FromPrivatePem(std::string_view pem, std::string_view what) {
  Bio bio = MemoryBio(pem);
  EVP_PKEY* raw = PEM_read_bio_PrivateKey(bio.get(), nullptr, NoPassphrase, nullptr);
  if (!raw) {
    Fail(ErrorCode::kInvalidArgument, "{} is not a valid RSA private key (PEM): {}", what,
         openssl::TakeError());
  }
  RsaKey key(raw, true);
  CheckRsaBits(raw, what);
  return key;
}

RsaKey RsaKey::LoadPrivate(const std::filesystem::path& file) {
  std::string pem = ReadFile(file);
  try {
    RsaKey key = FromPrivatePem(pem, fmt::format("key file {}", file.string()));
    OPENSSL_cleanse(pem.data(), pem.size());
    return key;
  } catch (...) {
    OPENSSL_cleanse(pem.data(), pem.size());
    throw;
  }
}

RsaKey RsaKey::LoadOrGenerate(const std::filesystem::path& file, unsigned bits, bool* generated) {
  std::error_code ec;
  bool exists = std::filesystem::exists(file, ec);
  if (generated) *generated = !exists;
  if (exists) return LoadPrivate(file);
  if (file.has_parent_path() && !std::filesystem::exists(file.parent_path(), ec)) {
    MakeDirs(file.parent_path(), 0700);
  }
  RsaKey key = Generate(bits);
  key.SavePrivate(file);
  return key;
}

RsaKey RsaKey::FromPeerPublicPem(std::string_view pem) {
  if (pem.empty() || pem.size() > kMaxPublicKeyPemBytes) {
    Fail(ErrorCode::kInvalidArgument, "public key PEM of {} bytes (allowed: 1..{})", pem.size(),
         kMaxPublicKeyPemBytes);
  }
  Bio bio = MemoryBio(pem);
  EVP_PKEY* raw = PEM_read_bio_PUBKEY(bio.get(), nullptr, NoPassphrase, nullptr);
  if (!raw) {
    Fail(ErrorCode::kInvalidArgument, "not a public key PEM: {}", openssl::TakeError());
  }
  RsaKey key(raw, false);
  CheckRsaBits(raw, "peer key");
  BIGNUM* e = nullptr;
  if (EVP_PKEY_get_bn_param(raw, OSSL_PKEY_PARAM_RSA_E, &e) != 1) {
    Fail(ErrorCode::kInvalidArgument, "peer key has no RSA exponent: {}", openssl::TakeError());
  }
  bool usable = BN_is_odd(e) && !BN_is_one(e);
  BN_free(e);
  if (!usable) Fail(ErrorCode::kInvalidArgument, "peer key has an unusable RSA exponent");
  return key;
}

void RsaKey::SavePrivate(const std::filesystem::path& file) const {
  std::string pem = PrivatePem();
  try {
    WriteFileAtomic(file, pem, 0600);
  } catch (...) {
    OPENSSL_cleanse(pem.data(), pem.size());
    throw;
  }
  OPENSSL_cleanse(pem.data(), pem.size());
}

std::string RsaKey::PrivatePem() const {
  if (!has_private_) Fail(ErrorCode::kInternal, "not a private key");
  Bio bio(BIO_new(BIO_s_secmem()));
  if (!bio ||
      PEM_write_bio_PrivateKey(bio.get(), key_.get(), nullptr, nullptr, 0, nullptr, nullptr) != 1) {
    Fail(ErrorCode::kInternal, "cannot write private key PEM: {}", openssl::TakeError());
  }
  return BioContents(bio.get());
}

std::string RsaKey::PublicPem() const {
  Bio bio(BIO_new(BIO_s_mem()));
  if (!bio || !key_ || PEM_write_bio_PUBKEY(bio.get(), key_.get()) != 1) {
    Fail(ErrorCode::kInternal, "cannot write public key PEM: {}", openssl::TakeError());
  }
  return BioContents(bio.get());
}

std::string RsaKey::PublicDer() const {
  if (!key_) Fail(ErrorCode::kInternal, "no key");
  unsigned char* der = nullptr;
  int length = i2d_PUBKEY(key_.get(), &der);
  if (length <= 0) Fail(ErrorCode::kInternal, "cannot encode public key: {}", openssl::TakeError());
  std::string out(reinterpret_cast<const char*>(der), static_cast<std::size_t>(length));
  OPENSSL_free(der);
  return out;
}

std::string RsaKey::PublicSha256() const { return Sha256Hex(PublicDer()); }

unsigned RsaKey::bits() const {
  return key_ ? static_cast<unsigned>(EVP_PKEY_get_bits(key_.get())) : 0;
}

std::size_t RsaKey::size_bytes() const {
  return key_ ? static_cast<std::size_t>(EVP_PKEY_get_size(key_.get())) : 0;
}

// ---- RSA-OAEP -------------------------------------------------------------

std::string RsaOaepEncrypt(const RsaKey& public_key, std::string_view plain) {
  PkeyCtx ctx = OaepContext(public_key, true);
  std::size_t length = 0;
  if (EVP_PKEY_encrypt(ctx.get(), nullptr, &length, Bytes(plain), plain.size()) != 1) {
    Fail(ErrorCode::kInternal, "RSA-OAEP encrypt: {}", openssl::TakeError());
  }
  std::string out(length, '\0');
  if (EVP_PKEY_encrypt(ctx.get(), reinterpret_cast<unsigned char*>(out.data()), &length,
                       Bytes(plain), plain.size()) != 1) {
    Fail(ErrorCode::kInvalidArgument, "RSA-OAEP encrypt of {} bytes: {}", plain.size(),
         openssl::TakeError());
  }
  out.resize(length);
  return out;
}

std::string RsaOaepDecrypt(const RsaKey& private_key, std::string_view cipher) {
  if (!private_key.has_private())
    Fail(ErrorCode::kInternal, "RSA-OAEP decrypt needs a private key");
  if (cipher.size() != private_key.size_bytes()) {
    Fail(ErrorCode::kInvalidArgument, "RSA ciphertext of {} bytes (expected {})", cipher.size(),
         private_key.size_bytes());
  }
  PkeyCtx ctx = OaepContext(private_key, false);
  std::size_t length = cipher.size();
  std::string out(length, '\0');
  if (EVP_PKEY_decrypt(ctx.get(), reinterpret_cast<unsigned char*>(out.data()), &length,
                       Bytes(cipher), cipher.size()) != 1) {
    ERR_clear_error();
    Fail(ErrorCode::kInvalidArgument, "RSA-OAEP ciphertext does not decrypt");
  }
  out.resize(length);
  return out;
}

// ---- AES ------------------------------------------------------------------

std::string AesCbcEncrypt(const AesKey& key, const AesIv& iv, std::string_view plain) {
  return AesCbc(true, key, iv, plain);
}

std::string AesCbcDecrypt(const AesKey& key, const AesIv& iv, std::string_view cipher) {
  if (cipher.empty() || cipher.size() % kAesBlockBytes != 0) {
    Fail(ErrorCode::kInvalidArgument, "AES-256-CBC ciphertext of {} bytes (not whole blocks)",
         cipher.size());
  }
  return AesCbc(false, key, iv, cipher);
}

SessionKey::~SessionKey() {
  OPENSSL_cleanse(key.data(), key.size());
  OPENSSL_cleanse(iv.data(), iv.size());
}

SessionKey SessionKey::Random() {
  SessionKey s;
  FillRandom(std::as_writable_bytes(std::span(s.key)));
  FillRandom(std::as_writable_bytes(std::span(s.iv)));
  return s;
}

SessionKey SessionKey::Parse(std::string_view bytes) {
  if (bytes.size() != kSessionKeyBytes) {
    Fail(ErrorCode::kInvalidArgument, "session key of {} bytes (expected {})", bytes.size(),
         kSessionKeyBytes);
  }
  SessionKey s;
  std::copy_n(Bytes(bytes), kAesKeyBytes, s.key.begin());
  std::copy_n(Bytes(bytes) + kAesKeyBytes, kAesBlockBytes, s.iv.begin());
  return s;
}

std::string SessionKey::Serialize() const {
  std::string out(reinterpret_cast<const char*>(key.data()), key.size());
  out.append(reinterpret_cast<const char*>(iv.data()), iv.size());
  return out;
}

AesIv RandomIv() {
  AesIv iv;
  FillRandom(std::as_writable_bytes(std::span(iv)));
  return iv;
}

AesIv IvFromBytes(std::string_view bytes) {
  if (bytes.size() != kAesBlockBytes) {
    Fail(ErrorCode::kInvalidArgument, "IV of {} bytes (expected {})", bytes.size(), kAesBlockBytes);
  }
  AesIv iv;
  std::copy_n(Bytes(bytes), kAesBlockBytes, iv.begin());
  return iv;
}

// ---- Framing --------------------------------------------------------------

std::string EncodeLengthField(std::size_t length) {
  std::string digits = std::to_string(length);
  if (digits.size() > kLengthFieldBytes) {
    Fail(ErrorCode::kInvalidArgument, "length {} does not fit the 8-byte field", length);
  }
  digits.resize(kLengthFieldBytes, '=');
  return digits;
}

std::size_t ParseLengthField(std::string_view field, std::size_t max) {
  if (field.size() != kLengthFieldBytes) {
    Fail(ErrorCode::kInvalidArgument, "length field of {} bytes (expected {})", field.size(),
         kLengthFieldBytes);
  }
  std::size_t digits = 0;
  while (digits < field.size() && field[digits] >= '0' && field[digits] <= '9') ++digits;
  if (digits == 0) Fail(ErrorCode::kInvalidArgument, "length field does not start with a digit");
  if (field.find_first_not_of('=', digits) != std::string_view::npos) {
    Fail(ErrorCode::kInvalidArgument, "length field has other than '=' after its digits");
  }
  std::size_t value = DecimalValue(field.substr(0, digits));
  if (value == 0 || value > max) {
    Fail(ErrorCode::kInvalidArgument, "length {} out of range 1..{}", value, max);
  }
  return value;
}

std::size_t ParseDecimalLength(std::string_view text) {
  if (text.empty() || text.size() >= kHeaderBytes || !AllDigits(text)) {
    Fail(ErrorCode::kInvalidArgument, "message length is not 1..15 decimal digits");
  }
  return DecimalValue(text);
}

EncodedMessage EncodeMessage(const AesKey& key, const AesIv& iv, std::string_view text,
                             const AesIv& next_iv) {
  EncodedMessage m;
  m.body = AesCbcEncrypt(key, iv, text);
  m.header = AesCbcEncrypt(key, iv, std::to_string(m.body.size() + kAesBlockBytes));
  m.body.append(reinterpret_cast<const char*>(next_iv.data()), next_iv.size());
  return m;
}

std::size_t DecodeLengthHeader(const AesKey& key, const AesIv& iv, std::string_view header,
                               std::size_t max_bytes) {
  if (header.size() != kHeaderBytes) {
    Fail(ErrorCode::kInvalidArgument, "message header of {} bytes (expected {})", header.size(),
         kHeaderBytes);
  }
  std::string text = AesCbcDecrypt(key, iv, header);
  std::size_t length = ParseDecimalLength(text);
  if (length < kMinMessageBytes || length > max_bytes) {
    Fail(ErrorCode::kInvalidArgument, "message length {} out of range {}..{}", length,
         kMinMessageBytes, max_bytes);
  }
  if (length % kAesBlockBytes != 0) {
    Fail(ErrorCode::kInvalidArgument, "message length {} is not whole cipher blocks", length);
  }
  return length;
}

DecodedBody DecodeBody(const AesKey& key, const AesIv& iv, std::string_view bytes) {
  if (bytes.size() < kMinMessageBytes || bytes.size() % kAesBlockBytes != 0) {
    Fail(ErrorCode::kInvalidArgument, "message body of {} bytes (not whole blocks, or too short)",
         bytes.size());
  }
  DecodedBody out;
  out.next_iv = IvFromBytes(bytes.substr(bytes.size() - kAesBlockBytes));
  out.text = AesCbcDecrypt(key, iv, bytes.substr(0, bytes.size() - kAesBlockBytes));
  return out;
}

// ---- Fuzzing --------------------------------------------------------------

void FuzzClassicDecoders(const std::uint8_t* data, std::size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  auto guard = [](auto&& step) {
    try {
      step();
    } catch (const Error& e) {
      if (e.code() != ErrorCode::kInvalidArgument) std::abort();  // only input errors expected
    }
  };
  constexpr std::size_t kMax = 64 * 1024;
  guard([&] { ParseLengthField(in.substr(0, std::min(in.size(), kLengthFieldBytes)), kMax); });
  guard([&] { ParseDecimalLength(in); });
  if (in.size() >= kSessionKeyBytes) {
    SessionKey s = SessionKey::Parse(in.substr(0, kSessionKeyBytes));
    std::string_view rest = in.substr(kSessionKeyBytes);
    guard([&] { DecodeLengthHeader(s.key, s.iv, rest.substr(0, kHeaderBytes), kMax); });
    guard([&] { DecodeBody(s.key, s.iv, rest.substr(std::min(rest.size(), kHeaderBytes))); });
    // Fuzzer-chosen plaintext through a valid encryption reaches the parsers.
    guard([&] {
      DecodeLengthHeader(s.key, s.iv, AesCbcEncrypt(s.key, s.iv, rest.substr(0, 15)), kMax);
    });
    if (rest.size() <= kMax / 2) {
      EncodedMessage m = EncodeMessage(s.key, s.iv, rest, s.iv);
      std::size_t length = DecodeLengthHeader(s.key, s.iv, m.header, kMax);
      DecodedBody body = DecodeBody(s.key, s.iv, m.body);
      if (length != m.body.size() || body.text != rest || body.next_iv != s.iv) std::abort();
    }
  }
  guard([&] { RsaKey::FromPeerPublicPem(in); });
}

}  // namespace ephemera::anweddol
