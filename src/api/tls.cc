#include "api/tls.h"

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <spdlog/spdlog.h>

#include "api/openssl_util.h"
#include "core/error.h"
#include "core/fs.h"
#include "core/sha256.h"

namespace ephemera {

namespace fs = std::filesystem;

namespace {

struct X509Deleter {
  void operator()(X509* x) const { X509_free(x); }
};
struct PkeyDeleter {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
using UniqueX509 = std::unique_ptr<X509, X509Deleter>;
using UniquePkey = std::unique_ptr<EVP_PKEY, PkeyDeleter>;

std::string ReadPem(const fs::path& path, const char* what) {
  try {
    return ReadFile(path);
  } catch (const Error& e) {
    Fail(ErrorCode::kInvalidArgument, "TLS {} {}: {}", what, path.string(), e.what());
  }
}

UniqueX509 ParseCertificate(const std::string& pem, const fs::path& path) {
  openssl::Bio bio = openssl::MemoryBio(pem);
  UniqueX509 cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  if (!cert) {
    Fail(ErrorCode::kInvalidArgument, "TLS certificate {} is not a PEM certificate: {}",
         path.string(), openssl::TakeError());
  }
  return cert;
}

UniquePkey ParseKey(const std::string& pem, const fs::path& path) {
  openssl::Bio bio = openssl::MemoryBio(pem);
  UniquePkey key(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
  if (!key) {
    Fail(ErrorCode::kInvalidArgument, "TLS key {} is not an unencrypted PEM private key: {}",
         path.string(), openssl::TakeError());
  }
  return key;
}

std::string CertificateSha256(X509* cert) {
  unsigned char* der = nullptr;
  int length = i2d_X509(cert, &der);
  if (length <= 0)
    Fail(ErrorCode::kInternal, "cannot encode a certificate: {}", openssl::TakeError());
  std::string digest =
      Sha256Hex(std::string_view(reinterpret_cast<const char*>(der), static_cast<size_t>(length)));
  OPENSSL_free(der);
  return digest;
}

void AddExtension(X509* cert, int nid, const std::string& value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, cert, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str());
  if (!ext || !X509_add_ext(cert, ext, -1)) {
    X509_EXTENSION_free(ext);
    Fail(ErrorCode::kInternal, "cannot add a certificate extension: {}", openssl::TakeError());
  }
  X509_EXTENSION_free(ext);
}

void GenerateSelfSigned(const fs::path& cert_path, const fs::path& key_path,
                        const std::string& host_name) {
  UniquePkey key(EVP_EC_gen("P-256"));
  if (!key) Fail(ErrorCode::kInternal, "cannot generate a TLS key: {}", openssl::TakeError());
  UniqueX509 cert(X509_new());
  X509_set_version(cert.get(), 2);
  unsigned char serial[16];
  if (RAND_bytes(serial, sizeof serial) != 1) Fail(ErrorCode::kInternal, "RAND_bytes failed");
  serial[0] &= 0x7f;  // a positive serial
  BIGNUM* bn = BN_bin2bn(serial, sizeof serial, nullptr);
  BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(cert.get()));
  BN_free(bn);
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), -3600);
  X509_gmtime_adj(X509_getm_notAfter(cert.get()), 10L * 365 * 24 * 3600);
  X509_set_pubkey(cert.get(), key.get());
  X509_NAME* name = X509_get_subject_name(cert.get());
  const std::string cn = host_name.empty() ? "ephemerad" : host_name.substr(0, 63);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1, 0);
  X509_set_issuer_name(cert.get(), name);
  AddExtension(cert.get(), NID_subject_alt_name,
               "DNS:" + cn + ",DNS:localhost,IP:127.0.0.1,IP:::1");
  AddExtension(cert.get(), NID_basic_constraints, "critical,CA:FALSE");
  AddExtension(cert.get(), NID_ext_key_usage, "serverAuth");
  if (X509_sign(cert.get(), key.get(), EVP_sha256()) == 0) {
    Fail(ErrorCode::kInternal, "cannot sign the TLS certificate: {}", openssl::TakeError());
  }
  openssl::Bio key_bio(BIO_new(BIO_s_mem()));
  openssl::Bio cert_bio(BIO_new(BIO_s_mem()));
  PEM_write_bio_PrivateKey(key_bio.get(), key.get(), nullptr, nullptr, 0, nullptr, nullptr);
  PEM_write_bio_X509(cert_bio.get(), cert.get());
  // The key first: a certificate without its key is useless, the reverse is redone.
  WriteFileAtomic(key_path, openssl::BioContents(key_bio.get()), 0600);
  WriteFileAtomic(cert_path, openssl::BioContents(cert_bio.get()), 0644);
}

}  // namespace

TlsIdentity EnsureTlsIdentity(const fs::path& certificate, const fs::path& key,
                              const fs::path& generated_dir, const std::string& host_name) {
  TlsIdentity identity{certificate, key, "", false};
  if (certificate.empty() != key.empty()) {
    Fail(ErrorCode::kInvalidArgument,
         "TLS needs both a certificate and a key file, or neither (to generate a pair)");
  }
  if (certificate.empty()) {
    identity.certificate = generated_dir / "cert.pem";
    identity.key = generated_dir / "key.pem";
    identity.generated = true;
    if (!fs::exists(identity.certificate) || !fs::exists(identity.key)) {
      MakeDirs(generated_dir, 0700);
      GenerateSelfSigned(identity.certificate, identity.key, host_name);
      spdlog::info("generated a self-signed TLS certificate in {}", generated_dir.string());
    }
  }
  UniqueX509 cert =
      ParseCertificate(ReadPem(identity.certificate, "certificate"), identity.certificate);
  UniquePkey private_key = ParseKey(ReadPem(identity.key, "key"), identity.key);
  if (X509_check_private_key(cert.get(), private_key.get()) != 1) {
    ERR_clear_error();
    Fail(ErrorCode::kInvalidArgument, "TLS key {} does not match certificate {}",
         identity.key.string(), identity.certificate.string());
  }
  identity.certificate_sha256 = CertificateSha256(cert.get());
  return identity;
}

std::shared_ptr<boost::asio::ssl::context> MakeServerTlsContext(const TlsIdentity& identity) {
  namespace ssl = boost::asio::ssl;
  auto context = std::make_shared<ssl::context>(ssl::context::tls_server);
  context->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                       ssl::context::no_sslv3 | ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1 |
                       ssl::context::single_dh_use);
  boost::system::error_code ec;
  context->use_certificate_chain_file(identity.certificate.string(), ec);
  if (ec) {
    Fail(ErrorCode::kInvalidArgument, "TLS certificate {}: {}", identity.certificate.string(),
         ec.message());
  }
  context->use_private_key_file(identity.key.string(), ssl::context::pem, ec);
  if (ec) Fail(ErrorCode::kInvalidArgument, "TLS key {}: {}", identity.key.string(), ec.message());
  return context;
}

}  // namespace ephemera
