// GuestChannel over a sandbox's guest agent link (protocol 3): each call is
// one request of docs/guest-agent.md, "Streams".
#pragma once

#include <memory>

#include "guest/agent_link.h"
#include "guest/guest_stream.h"

namespace ephemera {

class AgentChannel : public GuestChannel {
 public:
  explicit AgentChannel(std::shared_ptr<AgentLink> link) : link_(std::move(link)) {}

  std::shared_ptr<GuestStream> Exec(const GuestCommand& command,
                                    Clock::time_point deadline) override;
  GuestFileType Stat(const std::string& path, Clock::time_point deadline) override;
  std::shared_ptr<GuestStream> Read(const std::string& path, Clock::time_point deadline) override;
  std::shared_ptr<GuestStream> Write(const std::string& path, std::optional<mode_t> mode,
                                     const std::string& owner, Clock::time_point deadline) override;

 private:
  std::shared_ptr<AgentLink> link_;
};

}  // namespace ephemera
