// `ephemera list --inventory`: the caller's ready sandboxes as an Ansible
// inventory in the JSON form dynamic inventory scripts print (--list), so a
// pipeline drives its machines the way kernel-testing's do. Every host is
// pinned: ssh checks its key against a known_hosts file written with the
// keys the daemon saw while provisioning.
#pragma once

#include <filesystem>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

namespace ephemera::cli {

struct Inventory {
  nlohmann::json inventory;
  std::string known_hosts;           // the lines to write where `known_hosts_path` said
  std::vector<std::string> skipped;  // one line per sandbox left out, and why
};

// `sandboxes`: the API's list; `remembered`: the entries this client keeps
// (id -> ParseSandboxAccess form), which add each one's password;
// `run_id`: only that run's machines. Hosts are named by their machine
// name (RUN-NAME where two listed runs share one), else by sandbox id; each
// run is a group.
Inventory BuildInventory(const nlohmann::json& sandboxes, const nlohmann::json& remembered,
                         const std::optional<std::string>& run_id,
                         const std::filesystem::path& known_hosts_path);

}  // namespace ephemera::cli
