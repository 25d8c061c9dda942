// What the CLI keeps of a sandbox it created, checked against the API's
// contract before it is stored or used: a server (or anyone who can write
// the answer) chooses these strings, and they end up in ssh's argv and
// known_hosts, so each must be exactly what the contract allows.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace ephemera::cli {

struct SandboxAccess {
  std::string host;  // a host name or IP address
  std::uint16_t port = 0;
  std::string username;
  std::string password;
  std::string host_key;  // "ssh-ed25519 AAAA..."
  std::optional<std::string> token;
  std::optional<std::string> server;
};

// From a create answer or a remembered entry; std::invalid_argument naming
// the field that breaks the contract.
SandboxAccess ParseSandboxAccess(const nlohmann::json& entry);
nlohmann::json ToJson(const SandboxAccess& access);

// ssh's argv for logging in: options first, the host after "--", so that
// nothing the server chose is read as an option.
std::vector<std::string> SshArgv(const SandboxAccess& access, const std::string& known_hosts,
                                 const std::vector<std::string>& command);
// The known_hosts line that pins the host key.
std::string KnownHostsLine(const SandboxAccess& access);

// Runs ssh to the sandbox and returns its exit status: the host key pinned
// in a private known_hosts (removed afterwards), and the password handed
// over by this very program run as SSH_ASKPASS, which finds it through the
// environment variable `askpass_variable` set to `askpass_value`.
// std::runtime_error if ssh cannot be started.
int RunSsh(const SandboxAccess& access, const std::vector<std::string>& command,
           const std::string& program, const char* askpass_variable,
           const std::string& askpass_value);

}  // namespace ephemera::cli
