// The System of a real guest: the kernel's RNG, clock and hostname, the
// first NIC, sshd.
#pragma once

#include <sys/types.h>

#include "agent/identity.h"
#include "agent/sshd.h"

namespace ephemera::agent {

class LinuxSystem : public System {
 public:
  void AddEntropy(const std::string& bytes) override;
  void SetClock(int64_t unix_ns) override;
  void SetHostname(const std::string& name) override;
  void ConfigureNetwork(const Network& network) override;
  void StartDhcp() override;
  void AwaitDhcp() override;
  void StartSshd(uint16_t port) override;
  bool AwaitSshd(uint16_t port) override;

 private:
  pid_t dhcp_ = 0;
};

}  // namespace ephemera::agent
