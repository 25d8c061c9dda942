// What a client gets to log in with, and the per-sandbox key the daemon
// uses as the guest's endpoint user.
#pragma once

#include <string>

namespace ephemera {

struct ClientCredentials {
  std::string username;  // user_ + 5 digits, as Anweddol clients expect
  std::string password;  // 120 alphanumeric characters from the CSPRNG
};

ClientCredentials GenerateClientCredentials();

// An ed25519 key pair generated in memory for one sandbox's endpoint user.
// Only the public half leaves the daemon (to the guest, before boot).
class EndpointKey {
 public:
  static EndpointKey Generate();
  EndpointKey(EndpointKey&&) noexcept;
  EndpointKey& operator=(EndpointKey&&) noexcept;
  ~EndpointKey();

  std::string AuthorizedKeysLine() const;  // "ssh-ed25519 AAAA... ephemera-endpoint\n"
  void* handle() const { return key_; }    // the libssh ssh_key

 private:
  explicit EndpointKey(void* key) : key_(key) {}
  void* key_ = nullptr;
};

}  // namespace ephemera
