// An SSH client session to a guest (libssh): connect with a deadline, read
// the host key's fingerprint, authenticate, run commands.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "guest/credentials.h"

struct ssh_session_struct;

namespace ephemera {

struct CommandResult {
  int exit_status = -1;
  std::string out;
  std::string err;
};

class SshSession {
 public:
  // Connects (TCP + SSH handshake). kUnavailable if nothing answers,
  // kTimeout if the handshake does not finish in time.
  SshSession(const std::string& host, std::uint16_t port, const std::string& user,
             std::chrono::milliseconds timeout);
  ~SshSession();
  SshSession(const SshSession&) = delete;
  SshSession& operator=(const SshSession&) = delete;

  // "SHA256:<base64>", as ssh-keygen -l prints it.
  std::string HostKeyFingerprint() const;
  // The host key as an OpenSSH known_hosts/authorized_keys line body
  // ("ssh-ed25519 AAAA...").
  std::string HostKeyLine() const;

  // Each returns false (not an error) when the server refuses.
  bool AuthenticateWithKey(const SshKeyPair& key);
  bool AuthenticateWithPassword(const std::string& password);

  // Runs `command`; kTimeout past `timeout`. Output is bounded.
  CommandResult Execute(const std::string& command, std::chrono::milliseconds timeout);

  // libssh's session, for a stream that owns this object (ssh_channel.cc).
  ssh_session_struct* raw() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ephemera
