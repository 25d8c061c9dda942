// The HTTPS front door's identity: a certificate and key from the
// configuration, or a self-signed pair generated into the state directory
// on first start (kept, so clients that pinned it keep trusting it).
#pragma once

#include <filesystem>
#include <memory>
#include <string>

#include <boost/asio/ssl/context.hpp>

namespace ephemera {

struct TlsIdentity {
  std::filesystem::path certificate;  // PEM; may hold a chain, leaf first
  std::filesystem::path key;          // PEM private key
  std::string certificate_sha256;     // of the leaf's DER, lowercase hex
  bool generated = false;             // made by ensure, not configured
};

// With both paths empty, loads or creates `generated_dir`/cert.pem and
// key.pem (an ECDSA P-256 pair for `host_name`, valid 10 years). With one
// path empty, kInvalidArgument. A missing or unreadable file, a file that
// is not PEM, or a key that does not match the certificate: an error
// naming the file.
TlsIdentity EnsureTlsIdentity(const std::filesystem::path& certificate,
                              const std::filesystem::path& key,
                              const std::filesystem::path& generated_dir,
                              const std::string& host_name);

// A TLS 1.2+ server context for the identity.
std::shared_ptr<boost::asio::ssl::context> MakeServerTlsContext(const TlsIdentity& identity);

}  // namespace ephemera
