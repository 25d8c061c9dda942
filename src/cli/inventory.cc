#include "cli/inventory.h"

#include <map>
#include <set>
#include <stdexcept>

#include "cli/sandbox_access.h"

namespace ephemera::cli {

using nlohmann::json;

namespace {

std::string Text(const json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : "";
}

// Ansible group names: letters, digits and underscores.
std::string GroupName(const std::string& run_id) {
  std::string group = "run_";
  for (char c : run_id) group += std::isalnum(static_cast<unsigned char>(c)) ? c : '_';
  return group;
}

}  // namespace

Inventory BuildInventory(const json& sandboxes, const json& remembered,
                         const std::optional<std::string>& run_id,
                         const std::filesystem::path& known_hosts_path) {
  Inventory out;
  struct Host {
    std::string id, run, machine;
    SandboxAccess access;
    json sandbox;
  };
  std::vector<Host> hosts;
  std::map<std::string, std::set<std::string>> runs_by_machine;
  for (const auto& s : sandboxes.is_array() ? sandboxes : json::array()) {
    const std::string id = Text(s, "id");
    if (Text(s, "state") != "ready") continue;
    if (run_id && Text(s, "run_id") != *run_id) continue;
    Host h{id, Text(s, "run_id"), Text(s, "name"), {}, s};
    try {
      // What the API says, checked as strictly as a create answer; the
      // password only this client can add.
      json entry = {{"host", s.value("host", json())},
                    {"port", s.value("port", json())},
                    {"username", s.value("username", json())},
                    {"host_key", s.value("host_key", json())},
                    {"password", "x"}};
      h.access = ParseSandboxAccess(entry);
      h.access.password.clear();
      if (auto it = remembered.find(id); it != remembered.end()) {
        SandboxAccess kept = ParseSandboxAccess(*it);
        if (kept.host_key == h.access.host_key) h.access.password = kept.password;
      }
    } catch (const std::invalid_argument& e) {
      out.skipped.push_back(id + ": " + e.what());
      continue;
    }
    if (!h.machine.empty()) runs_by_machine[h.machine].insert(h.run);
    hosts.push_back(std::move(h));
  }

  json hostvars = json::object();
  std::map<std::string, std::vector<std::string>> groups;
  std::vector<std::string> ungrouped;
  for (const Host& h : hosts) {
    std::string name = h.id;
    if (!h.machine.empty()) {
      name = runs_by_machine[h.machine].size() > 1 ? h.run + "-" + h.machine : h.machine;
    }
    json vars = {{"ansible_host", h.access.host},
                 {"ansible_port", h.access.port},
                 {"ansible_user", h.access.username},
                 {"ansible_ssh_common_args", "-o StrictHostKeyChecking=yes -o UserKnownHostsFile=" +
                                                 known_hosts_path.string()},
                 {"ephemera_id", h.id},
                 {"ephemera_host_key", h.access.host_key},
                 {"ephemera_host_key_fingerprint", Text(h.sandbox, "host_key_fingerprint")},
                 {"ephemera_guest_ip", Text(h.sandbox, "guest_ip")},
                 {"ephemera_expires_at", h.sandbox.value("expires_at", json())}};
    if (!h.access.password.empty()) vars["ansible_password"] = h.access.password;
    if (!h.run.empty()) {
      vars["ephemera_run_id"] = h.run;
      vars["ephemera_name"] = h.machine;
      groups[GroupName(h.run)].push_back(name);
    } else {
      ungrouped.push_back(name);
    }
    hostvars[name] = std::move(vars);
    out.known_hosts += KnownHostsLine(h.access);
  }
  json all_children = json::array({"ungrouped"});
  out.inventory["ungrouped"] = {{"hosts", ungrouped}};
  for (const auto& [group, members] : groups) {
    out.inventory[group] = {{"hosts", members}};
    all_children.push_back(group);
  }
  out.inventory["all"] = {{"children", all_children}};
  out.inventory["_meta"] = {{"hostvars", hostvars}};
  return out;
}

}  // namespace ephemera::cli
