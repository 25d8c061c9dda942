#include "provision/credentials.h"

#include <libssh/libssh.h>

#include <utility>

#include "core/error.h"
#include "core/random.h"

namespace ephemera {

ClientCredentials GenerateClientCredentials() {
  return {"user_" + RandomString(5, "0123456789"), RandomString(120, kAlphanumeric)};
}

SshKeyPair SshKeyPair::Generate() {
  ssh_key key = nullptr;
  if (ssh_pki_generate(SSH_KEYTYPE_ED25519, 0, &key) != SSH_OK) {
    Fail(ErrorCode::kInternal, "cannot generate an ed25519 key");
  }
  return SshKeyPair(key);
}

SshKeyPair::SshKeyPair(SshKeyPair&& other) noexcept : key_(std::exchange(other.key_, nullptr)) {}

SshKeyPair& SshKeyPair::operator=(SshKeyPair&& other) noexcept {
  std::swap(key_, other.key_);
  return *this;
}

SshKeyPair::~SshKeyPair() { ssh_key_free(static_cast<ssh_key>(key_)); }

std::string SshKeyPair::PublicKeyLine() const {
  char* base64 = nullptr;
  if (ssh_pki_export_pubkey_base64(static_cast<ssh_key>(key_), &base64) != SSH_OK) {
    Fail(ErrorCode::kInternal, "cannot export an ed25519 public key");
  }
  std::string line = std::string("ssh-ed25519 ") + base64;
  ssh_string_free_char(base64);
  return line;
}

std::string SshKeyPair::AuthorizedKeysLine() const {
  return PublicKeyLine() + " ephemera-endpoint\n";
}

std::string SshKeyPair::PrivateKeyOpenSsh() const {
  char* text = nullptr;
  // ed25519 keys export in the OpenSSH format, which sshd reads as a host key.
  if (ssh_pki_export_privkey_base64(static_cast<ssh_key>(key_), nullptr, nullptr, nullptr, &text) !=
      SSH_OK) {
    Fail(ErrorCode::kInternal, "cannot export an ed25519 private key");
  }
  std::string pem = text;
  ssh_string_free_char(text);
  if (!pem.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----")) {
    Fail(ErrorCode::kInternal, "libssh exported the private key in another format");
  }
  if (!pem.ends_with('\n')) pem += '\n';
  return pem;
}

}  // namespace ephemera
