#include "guest/credentials.h"

#include <crypt.h>
#include <libssh/libssh.h>

#include <utility>

#include "core/error.h"
#include "core/random.h"

namespace ephemera {

ClientCredentials GenerateClientCredentials() {
  // kClientUserPattern matches every one.
  return {"user_" + RandomString(5, "0123456789"), RandomString(120, kAlphanumeric)};
}

void CheckAuthorizedKey(std::string_view line) {
  if (line.size() > kMaxAuthorizedKeyBytes) {
    Fail(ErrorCode::kInvalidArgument, "ssh key: longer than {} bytes", kMaxAuthorizedKeyBytes);
  }
  for (char c : line) {
    auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u > 0x7e || c == '\'' || c == '"' || c == '\\') {
      Fail(ErrorCode::kInvalidArgument,
           "ssh key: only printable characters without quotes or backslashes, on one line");
    }
  }
  auto type_end = line.find(' ');
  std::string type(line.substr(0, type_end));
  std::string_view rest = type_end == std::string_view::npos ? "" : line.substr(type_end + 1);
  std::string blob(rest.substr(0, rest.find(' ')));
  enum ssh_keytypes_e named = ssh_key_type_from_name(type.c_str());
  if (named == SSH_KEYTYPE_UNKNOWN) {
    Fail(ErrorCode::kInvalidArgument, "ssh key: '{}' is not an SSH public key type",
         type.substr(0, 64));
  }
  ssh_key key = nullptr;
  if (blob.empty() || ssh_pki_import_pubkey_base64(blob.c_str(), named, &key) != SSH_OK) {
    Fail(ErrorCode::kInvalidArgument, "ssh key: the key data is not a valid {} public key", type);
  }
  const char* actual = ssh_key_type_to_char(ssh_key_type(key));
  const std::string canonical = actual ? actual : "";
  ssh_key_free(key);
  // The name sshd reads in authorized_keys (not a signature scheme such as
  // rsa-sha2-256, which it would ignore).
  if (canonical != type) {
    Fail(ErrorCode::kInvalidArgument, "ssh key: the key data is of type '{}', not '{}'", canonical,
         type);
  }
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

std::string SshKeyPair::Fingerprint() const { return KeyFingerprint(key_, "an ed25519 key"); }

std::string KeyFingerprint(void* ssh_key_handle, std::string_view where) {
  unsigned char* hash = nullptr;
  size_t length = 0;
  if (ssh_get_publickey_hash(static_cast<ssh_key>(ssh_key_handle), SSH_PUBLICKEY_HASH_SHA256, &hash,
                             &length) != 0) {
    Fail(ErrorCode::kInternal, "cannot hash the host key of {}", where);
  }
  char* text = ssh_get_fingerprint_hash(SSH_PUBLICKEY_HASH_SHA256, hash, length);
  ssh_clean_pubkey_hash(&hash);
  std::string fingerprint = text ? text : "";
  ssh_string_free_char(text);
  return fingerprint;
}

std::string Sha512CryptHash(const std::string& password) {
  // crypt(3)'s salt alphabet.
  constexpr std::string_view kSaltAlphabet =
      "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
  const std::string setting = "$6$" + RandomString(16, kSaltAlphabet) + "$";
  struct crypt_data data {};
  const char* hash = crypt_r(password.c_str(), setting.c_str(), &data);
  if (!hash || hash[0] != '$') Fail(ErrorCode::kInternal, "crypt(3) cannot make a SHA-512 hash");
  return hash;
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
