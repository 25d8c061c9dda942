// What a client gets to log in with, and the per-sandbox keys: the one the
// daemon logs in with as the guest's endpoint user, and the guest's SSH
// host key, made here so that the daemon knows which key to expect.
#pragma once

#include <string>
#include <string_view>

namespace ephemera {

struct ClientCredentials {
  std::string username;  // user_ + 5 digits, as Anweddol clients expect
  std::string password;  // 120 alphanumeric characters from the CSPRNG
};

// An sshd AllowUsers pattern that every generated username matches.
inline constexpr char kClientUserPattern[] = "user_*";

ClientCredentials GenerateClientCredentials();

// Checks one OpenSSH public key line ("TYPE BASE64 [COMMENT]") for a
// client's authorized_keys: a key libssh can import, of the type the line
// names, the comment printable and without quotes or backslashes (the line
// reaches a guest's shell quoted). kInvalidArgument saying what is wrong.
void CheckAuthorizedKey(std::string_view line);
constexpr std::size_t kMaxAuthorizedKeyBytes = 8192;
// All of one client's keys together (they reach the guest as one command).
constexpr std::size_t kMaxAuthorizedKeysBytes = 64 * 1024;

// An ed25519 key pair generated in memory for one sandbox. The endpoint's
// public half and the host key's private half go to the guest before boot
// (through a channel only that VM reads); neither is stored.
class SshKeyPair {
 public:
  static SshKeyPair Generate();
  SshKeyPair(SshKeyPair&&) noexcept;
  SshKeyPair& operator=(SshKeyPair&&) noexcept;
  ~SshKeyPair();

  std::string AuthorizedKeysLine() const;  // "ssh-ed25519 AAAA... ephemera-endpoint\n"
  std::string PublicKeyLine() const;       // "ssh-ed25519 AAAA..." (as SshSession::HostKeyLine)
  std::string PrivateKeyOpenSsh() const;   // "-----BEGIN OPENSSH PRIVATE KEY-----\n..."
  std::string Fingerprint() const;         // "SHA256:<base64>" (as SshSession's)
  void* handle() const { return key_; }    // the libssh ssh_key

 private:
  explicit SshKeyPair(void* key) : key_(key) {}
  void* key_ = nullptr;
};

// "SHA256:<base64>" of a libssh public or private key, as ssh-keygen -l
// prints it; `where` names the key in the error.
std::string KeyFingerprint(void* ssh_key, std::string_view where);

// A crypt(3) SHA-512 hash ("$6$<16 salt chars>$...") of `password`, as
// /etc/shadow holds it: the guest gets the hash, never the password.
std::string Sha512CryptHash(const std::string& password);

}  // namespace ephemera
