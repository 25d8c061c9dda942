#include "client/servers.h"

#include <ctime>
#include <stdexcept>

#include <nlohmann/json.hpp>

#include "client/parse.h"

namespace ephemera::client {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

std::string NowIso8601() {
  std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char buffer[32];
  std::strftime(buffer, sizeof buffer, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buffer;
}

std::optional<std::string> OptionalString(const json& entry, const char* key, bool* ok) {
  auto it = entry.find(key);
  if (it == entry.end() || it->is_null()) return std::nullopt;
  if (!it->is_string()) {
    *ok = false;
    return std::nullopt;
  }
  return it->get<std::string>();
}

}  // namespace

ServerStore::ServerStore(fs::path file) : file_(std::move(file)) {}

std::map<std::string, ServerEntry> ServerStore::Load() const {
  std::map<std::string, ServerEntry> all;
  auto text = ReadPrivateFile(file_);
  if (!text) return all;
  auto corrupt = [&](const std::string& why) {
    return std::runtime_error(file_.string() + " is corrupt (" + why +
                              "). It holds the certificates pinned for remote servers; repair it, "
                              "or remove it to trust each server anew on next contact.");
  };
  json parsed = json::parse(*text, nullptr, false);
  if (parsed.is_discarded()) throw corrupt("not valid JSON");
  if (!parsed.is_object()) throw corrupt("not a JSON object");
  auto servers = parsed.find("servers");
  if (servers == parsed.end()) return all;
  if (!servers->is_object()) throw corrupt("'servers' is not an object");
  for (const auto& [url, value] : servers->items()) {
    if (!value.is_object()) throw corrupt("the entry for " + url + " is not an object");
    bool ok = true;
    ServerEntry entry{OptionalString(value, "certificate_sha256", &ok),
                      OptionalString(value, "pinned_at", &ok), OptionalString(value, "token", &ok)};
    if (ok && entry.certificate_sha256) {
      try {
        ok = NormalizeFingerprint(*entry.certificate_sha256) == *entry.certificate_sha256;
      } catch (const std::invalid_argument&) {
        ok = false;
      }
    }
    if (!ok) throw corrupt("the entry for " + url + " is malformed");
    all[url] = std::move(entry);
  }
  return all;
}

void ServerStore::Save(const std::map<std::string, ServerEntry>& all) const {
  json servers = json::object();
  for (const auto& [url, entry] : all) {
    json value = json::object();
    if (entry.certificate_sha256) value["certificate_sha256"] = *entry.certificate_sha256;
    if (entry.pinned_at) value["pinned_at"] = *entry.pinned_at;
    if (entry.token) value["token"] = *entry.token;
    servers[url] = value;
  }
  WritePrivateFile(file_, json{{"version", 1}, {"servers", servers}}.dump(2) + "\n");
}

std::optional<ServerEntry> ServerStore::Get(const std::string& server) const {
  auto all = Load();
  auto it = all.find(server);
  if (it == all.end()) return std::nullopt;
  return it->second;
}

std::map<std::string, ServerEntry> ServerStore::All() const { return Load(); }

std::string ServerStore::PinIfUnpinned(const std::string& server, const std::string& sha256) {
  FileLock lock(file_);
  auto all = Load();
  auto& entry = all[server];
  if (entry.certificate_sha256) return *entry.certificate_sha256;
  entry.certificate_sha256 = sha256;
  entry.pinned_at = NowIso8601();
  Save(all);
  return sha256;
}

void ServerStore::SetPin(const std::string& server, const std::string& sha256) {
  FileLock lock(file_);
  auto all = Load();
  auto& entry = all[server];
  entry.certificate_sha256 = sha256;
  entry.pinned_at = NowIso8601();
  Save(all);
}

void ServerStore::SetToken(const std::string& server, const std::string& token) {
  FileLock lock(file_);
  auto all = Load();
  all[server].token = token;
  Save(all);
}

bool ServerStore::Forget(const std::string& server) {
  FileLock lock(file_);
  auto all = Load();
  if (!all.erase(server)) return false;
  Save(all);
  return true;
}

}  // namespace ephemera::client
