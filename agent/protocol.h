// The guest agent protocol (docs/guest-agent.md): requests, the checks of
// every field, and the per-connection state (hello before anything else).
#pragma once

#include <netinet/in.h>

#include <array>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace ephemera::agent {

// 2: identity takes agent_token. 3: streams (exec, stat, read, write).
inline constexpr int kProtocolVersion = 3;
inline constexpr char kChannelName[] = "org.ephemera.agent.0";
inline constexpr size_t kMaxLine = 1 << 20;
inline constexpr size_t kTokenLength = 64;

struct Network {
  std::array<uint8_t, 6> mac;
  in_addr address;
  int prefix;
  std::optional<in_addr> gateway;
  std::vector<std::string> dns;  // dotted, as checked
};

struct Identity {
  std::string hostname;
  int64_t time_ns;
  std::string entropy;  // decoded bytes
  std::string ssh_host_key;
  std::string ssh_host_key_public;
  std::string user;
  std::string password_hash;
  std::vector<std::string> authorized_keys;
  uint16_t ssh_port;
  std::optional<Network> network;
  // A clone restored from a snapshot still holds its template's token: the
  // sandbox's own replaces it once the identity is applied.
  std::optional<std::string> agent_token;
};

// Checks every field of an identity request; throws FieldError naming the
// first field that is wrong.
Identity ParseIdentity(const nlohmann::json& request);

// A snapshot template's preparation, before any identity: sshd started
// with a host key nobody keeps, admitting only the users `allow_users` (an
// sshd pattern) names, so that a clone's identity (a user it admits, the
// same port) needs no sshd start or reload: sshd re-executes per
// connection and reads the identity's host key then.
struct Preparation {
  std::string ssh_host_key;
  std::string ssh_host_key_public;
  uint16_t ssh_port;
  std::string allow_users;  // 1-64 of [a-z0-9_*?-]
};
Preparation ParsePreparation(const nlohmann::json& request);

// Strict base64 (RFC 4648 alphabet, padded); nullopt when `text` is not.
std::optional<std::string> DecodeBase64(std::string_view text);

// True for 64 lowercase hex characters.
bool IsToken(std::string_view text);

// What the requests act on.
class Machine {
 public:
  virtual ~Machine() = default;
  // Applies a checked identity and returns the answer's fields. Throws
  // FieldError when it refuses before changing anything (the user exists),
  // AgentError naming the step that failed otherwise.
  virtual nlohmann::ordered_json ApplyIdentity(const Identity& identity) = 0;
  // Prepares a snapshot template (see Preparation); AgentError naming the step.
  virtual nlohmann::ordered_json Prepare(const Preparation& preparation) {
    (void)preparation;
    throw std::runtime_error("prepare: not supported here");
  }
  // The wall clock again, after the machine was resumed from disk.
  virtual void SetClock(int64_t unix_ns) = 0;
};

// One agent's answers. Authentication lasts for one host connection; the
// identity, once applied (or half-applied), for the machine's life.
class Streams;

class Session {
 public:
  // `streams` (may be null: no stream operations) live per connection.
  Session(std::string token, Machine& machine, Streams* streams = nullptr);

  // The answer line (without its '\n') to one request line.
  std::string Answer(std::string_view line);
  // The answer to a line longer than kMaxLine.
  static std::string OverlongAnswer();
  void HostDisconnected();
  bool authenticated() const { return authenticated_; }

 private:
  nlohmann::ordered_json Dispatch(const nlohmann::json& request, const std::string& op);

  std::string token_;
  Machine& machine_;
  Streams* streams_;
  bool authenticated_ = false;
  bool identity_applied_ = false;
  bool prepared_ = false;
};

}  // namespace ephemera::agent
