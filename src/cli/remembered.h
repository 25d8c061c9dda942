// Sandboxes this user created, remembered with their one-time secrets
// (password, client token, host key) and the server they came from ("server":
// its URL; absent for the local socket) in $XDG_CONFIG_HOME/ephemera/
// sandboxes.json, mode 0600, so `ephemera ssh ID` and `destroy ID` need
// nothing else.
#pragma once

#include <filesystem>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "cli/transport.h"

namespace ephemera::cli {

class Remembered {
 public:
  explicit Remembered(std::filesystem::path file = ConfigDir() / "sandboxes.json");
  void Put(const std::string& id, const nlohmann::json& entry);
  std::optional<nlohmann::json> Get(const std::string& id) const;
  void Forget(const std::string& id);
  nlohmann::json All() const { return Load(); }  // id -> entry
  const std::filesystem::path& file() const { return file_; }

 private:
  nlohmann::json Load() const;
  void Save(const nlohmann::json& all) const;
  std::filesystem::path file_;
};

}  // namespace ephemera::cli
