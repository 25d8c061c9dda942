// A QMP (QEMU Machine Protocol) client over the VM's unix socket: one
// command at a time, every read bounded by a deadline.
#pragma once

#include <chrono>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/unique_fd.h"

namespace ephemera {

class QmpClient {
 public:
  // Connects and negotiates capabilities. kUnavailable if the socket does
  // not answer, kTimeout if the greeting does not arrive in time.
  // With `abort_fd` (QEMU's pidfd), kUnavailable as soon as it becomes
  // readable: a QEMU that dies while starting is not waited for.
  static QmpClient Connect(const std::filesystem::path& socket,
                           std::chrono::milliseconds timeout = std::chrono::seconds(5),
                           int abort_fd = -1);

  // Runs one command and returns its "return" value; a QMP error becomes
  // kFailedPrecondition with QEMU's description.
  nlohmann::json Execute(const std::string& command, const nlohmann::json& arguments = nullptr,
                         std::chrono::milliseconds timeout = std::chrono::seconds(5));

  // Hands QEMU a descriptor under `name` (QMP getfd, the descriptor sent
  // with the command), for URIs such as "fd:NAME".
  void PassFd(const std::string& name, int fd);

  // Runs a migration command ("migrate" or "migrate-incoming") and waits
  // until query-migrate says it completed. kFailedPrecondition with QEMU's
  // error when it fails, kTimeout past `timeout`.
  void Migrate(const std::string& command, const nlohmann::json& arguments,
               std::chrono::milliseconds timeout);

  // migrate-set-capabilities for one capability.
  void SetMigrationCapability(const std::string& capability, bool on);

  // Cancels a migration under way and waits (up to `timeout`) until
  // query-migrate no longer says it is active.
  void CancelMigration(std::chrono::milliseconds timeout);

  // Asynchronous events ("SHUTDOWN", "POWERDOWN", ...) seen so far.
  const std::vector<nlohmann::json>& events() const { return events_; }

 private:
  explicit QmpClient(UniqueFd fd) : fd_(std::move(fd)) {}
  nlohmann::json ReadMessage(std::chrono::steady_clock::time_point deadline);
  void Send(const std::string& line);
  // The answer to the command just sent: its "return", events kept aside.
  nlohmann::json AwaitReturn(const std::string& command,
                             std::chrono::steady_clock::time_point deadline);

  UniqueFd fd_;
  int abort_fd_ = -1;
  std::string buffer_;
  std::vector<nlohmann::json> events_;
};

}  // namespace ephemera
