// Applying an identity (and the clock of a resumed machine): the order of
// the steps, their timings, and every file they write (under a Root). What acts on the running
// kernel (RNG, clock, hostname, NIC, sshd) is behind System, so that the tests can apply an
// identity to a temporary tree.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "agent/files.h"
#include "agent/protocol.h"

namespace ephemera::agent {

class System {
 public:
  virtual ~System() = default;
  virtual void AddEntropy(const std::string& bytes) = 0;
  virtual void SetClock(int64_t unix_ns) = 0;
  virtual void SetHostname(const std::string& name) = 0;
  // The first NIC with this MAC, address and default route, up.
  virtual void ConfigureNetwork(const Network& network) = 0;
  // No network in the identity: the first NIC (if any) asks DHCP, as the
  // boot without agent does. AwaitDhcp waits for the lease (or the end of
  // the tries), so that the answer means "reachable".
  virtual void StartDhcp() = 0;
  virtual void AwaitDhcp() = 0;
  // Starts sshd (or makes a running one reload its configuration) and
  // returns once it listens on `port`.
  virtual void StartSshd(uint16_t port) = 0;
  // Whether the sshd started earlier (a template's preparation) runs and
  // listens on `port`, waiting a while for one still starting.
  virtual bool AwaitSshd(uint16_t port) = 0;
};

// The guest the agent runs in (its files under `root`).
class GuestMachine : public Machine {
 public:
  GuestMachine(Root root, System& system) : root_(std::move(root)), system_(system) {}
  nlohmann::ordered_json ApplyIdentity(const Identity& identity) override;
  nlohmann::ordered_json Prepare(const Preparation& preparation) override;
  void SetClock(int64_t unix_ns) override;

 private:
  void WriteHostKey(const std::string& private_key, const std::string& public_line);
  // Whether the prepared sshd serves `identity` as it is (see Preparation).
  bool PreparedFor(const Identity& identity) const;

  Root root_;
  System& system_;
  std::optional<Preparation> prepared_;
};

// /etc/hosts with the 127.0.1.1 line naming `hostname` (Debian's way of
// making the machine's own name resolve).
std::string RewriteHosts(std::string_view hosts, const std::string& hostname);

}  // namespace ephemera::agent
