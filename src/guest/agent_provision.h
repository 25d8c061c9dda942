// Provisioning through the guest agent (docs/guest-agent.md): the whole
// identity in one message, then a check from the host that sshd answers.
// Replaces the guest contract's SSH logins for images that carry the agent.
#pragma once

#include <chrono>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/ipv4.h"
#include "guest/credentials.h"
#include "guest/provisioner.h"

namespace ephemera {

// The guest's address, set by the agent instead of DHCP.
struct GuestNetwork {
  std::string mac;  // of the NIC to configure (and to set, for a restored clone)
  Subnet30 subnet;  // the guest gets subnet.guest(), the route via subnet.gateway()
  std::vector<Ipv4> dns;
};

struct AgentProvisionRequest {
  std::filesystem::path socket;  // the host end of the agent's channel
  std::string token;             // handed to the guest before boot
  // Set: the agent's token from now on (a clone restored from a snapshot
  // was booted with its template's); needs agent protocol 2.
  std::string new_token;
  const SshKeyPair* host_key = nullptr;
  std::string hostname;
  std::string host;             // where the daemon reaches the guest's sshd
  std::uint16_t port = 22;      // ... on this port
  std::uint16_t ssh_port = 22;  // where sshd listens inside the guest
  std::optional<GuestNetwork> network;
  std::vector<std::string> authorized_keys;       // each checked with CheckAuthorizedKey
  std::chrono::milliseconds boot_timeout{60000};  // until the agent answers
  std::chrono::milliseconds setup_timeout{30000};
};

// The identity message for `credentials` (pure: tested without a guest).
nlohmann::json BuildIdentity(const AgentProvisionRequest& request,
                             const ClientCredentials& credentials);

// kTimeout when the agent never answers, kFailedPrecondition when it
// refuses (its words quoted) or sshd does not answer afterwards.
ProvisionResult ProvisionThroughAgent(const AgentProvisionRequest& request);

// Waits until a TCP connection to host:port gets an SSH-2.0 banner (sshd
// reads its host key per connection, so that is the key just installed).
// kTimeout past `deadline`, with the last failure.
void WaitForSshBanner(const std::string& host, std::uint16_t port,
                      std::chrono::steady_clock::time_point deadline);

}  // namespace ephemera
