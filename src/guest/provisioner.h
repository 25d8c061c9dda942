// Provisioning a fresh guest over SSH, per the guest contract: wait for its
// sshd, log in as the endpoint user, run the setup script with a generated
// username and password, then prove that the client's login works and the
// endpoint's no longer does.
#pragma once

#include <chrono>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "guest/credentials.h"

namespace ephemera {

struct EndpointAuth {
  const SshKeyPair* key = nullptr;      // per-sandbox key (the default image)
  std::optional<std::string> password;  // fixed password (Anweddol ISOs)
};

struct ProvisionRequest {
  std::string host;  // the guest's address
  std::uint16_t port = 22;
  std::string endpoint_user = "endpoint";
  EndpointAuth endpoint;
  // The host key handed to the guest before boot ("ssh-ed25519 AAAA..."):
  // any other is refused. Unset: the guest makes its own, trusted on first use.
  std::optional<std::string> expected_host_key;
  std::uint16_t client_port = 22;  // where the setup script moves sshd
  // Public keys the client may log in with besides the password, each
  // checked with CheckAuthorizedKey; appended to its ~/.ssh/authorized_keys.
  std::vector<std::string> authorized_keys;
  std::chrono::milliseconds sshd_timeout{60000};
  std::chrono::milliseconds setup_timeout{30000};
};

struct ProvisionResult {
  ClientCredentials credentials;
  std::string host_key_fingerprint;  // SHA256:...
  std::string host_key;              // "ssh-ed25519 AAAA..."
  std::chrono::milliseconds sshd_wait{0};
  std::chrono::milliseconds setup{0};
};

// kTimeout when sshd never answers, kFailedPrecondition when the guest
// refuses the endpoint or the setup script fails (quoting its stderr), or
// when the result cannot be verified.
ProvisionResult Provision(const ProvisionRequest& request);

struct AgentProvisionRequest;

// The seam the engine calls (GuestProvisioner below; fakes in unit tests):
// over SSH per the guest contract, or through the guest agent.
class Provisioner {
 public:
  virtual ~Provisioner() = default;
  virtual ProvisionResult Run(const ProvisionRequest& request) = 0;
  virtual ProvisionResult RunAgent(const AgentProvisionRequest& request) = 0;
  // Sets the guest's wall clock to the host's through its agent (after a
  // resume: the guest's clock stood still while it was saved).
  virtual void SyncClock(const std::filesystem::path& agent_socket, const std::string& token) = 0;
};

class GuestProvisioner : public Provisioner {
 public:
  ProvisionResult Run(const ProvisionRequest& request) override { return Provision(request); }
  ProvisionResult RunAgent(const AgentProvisionRequest& request) override;
  void SyncClock(const std::filesystem::path& agent_socket, const std::string& token) override;
};

}  // namespace ephemera
