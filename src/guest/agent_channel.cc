#include "guest/agent_channel.h"

namespace ephemera {

using nlohmann::json;

std::shared_ptr<GuestStream> AgentChannel::Exec(const GuestCommand& command,
                                                Clock::time_point deadline) {
  json message{{"op", "exec"},
               {"argv", command.argv},
               {"user", command.user},
               {"tty", command.tty},
               {"stdin", command.stdin_open}};
  if (!command.env.empty()) message["env"] = command.env;
  if (!command.cwd.empty()) message["cwd"] = command.cwd;
  if (command.tty) {
    message["rows"] = command.rows;
    message["cols"] = command.cols;
  }
  if (command.timeout_ms > 0) message["timeout_ms"] = command.timeout_ms;
  return link_->Start(std::move(message), deadline);
}

GuestFileType AgentChannel::Stat(const std::string& path, Clock::time_point deadline) {
  json info = link_->Call({{"op", "stat"}, {"path", path}}, deadline);
  return GuestFileType{info.value("type", "") == "directory"};
}

std::shared_ptr<GuestStream> AgentChannel::Read(const std::string& path,
                                                Clock::time_point deadline) {
  return link_->Start({{"op", "read"}, {"path", path}}, deadline);
}

std::shared_ptr<GuestStream> AgentChannel::Write(const std::string& path,
                                                 std::optional<mode_t> mode,
                                                 const std::string& owner,
                                                 Clock::time_point deadline) {
  json message{{"op", "write"}, {"path", path}};
  if (mode) message["mode"] = *mode;
  if (!owner.empty()) message["owner"] = owner;
  return link_->Start(std::move(message), deadline);
}

}  // namespace ephemera
