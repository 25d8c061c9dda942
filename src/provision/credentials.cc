#include "provision/credentials.h"

#include <libssh/libssh.h>

#include <utility>

#include "core/error.h"
#include "core/random.h"

namespace ephemera {

ClientCredentials GenerateClientCredentials() {
  return {"user_" + RandomString(5, "0123456789"), RandomString(120, kAlphanumeric)};
}

EndpointKey EndpointKey::Generate() {
  ssh_key key = nullptr;
  if (ssh_pki_generate(SSH_KEYTYPE_ED25519, 0, &key) != SSH_OK) {
    Fail(ErrorCode::kInternal, "cannot generate an ed25519 key");
  }
  return EndpointKey(key);
}

EndpointKey::EndpointKey(EndpointKey&& other) noexcept : key_(std::exchange(other.key_, nullptr)) {}

EndpointKey& EndpointKey::operator=(EndpointKey&& other) noexcept {
  std::swap(key_, other.key_);
  return *this;
}

EndpointKey::~EndpointKey() { ssh_key_free(static_cast<ssh_key>(key_)); }

std::string EndpointKey::AuthorizedKeysLine() const {
  char* base64 = nullptr;
  if (ssh_pki_export_pubkey_base64(static_cast<ssh_key>(key_), &base64) != SSH_OK) {
    Fail(ErrorCode::kInternal, "cannot export the endpoint public key");
  }
  std::string line = std::string("ssh-ed25519 ") + base64 + " ephemera-endpoint\n";
  ssh_string_free_char(base64);
  return line;
}

}  // namespace ephemera
