#include "cli/remembered.h"

#include "cli/transport.h"

namespace ephemera::cli {

namespace fs = std::filesystem;

Remembered::Remembered(fs::path file) : file_(std::move(file)) {}

nlohmann::json Remembered::Load() const {
  auto text = ReadPrivateFile(file_);
  if (!text) return nlohmann::json::object();
  auto all = nlohmann::json::parse(*text, nullptr, false);
  return all.is_object() ? all : nlohmann::json::object();
}

void Remembered::Save(const nlohmann::json& all) const {
  WritePrivateFile(file_, all.dump(2) + "\n");
}

void Remembered::Put(const std::string& id, const nlohmann::json& entry) {
  FileLock lock(file_);
  auto all = Load();
  all[id] = entry;
  Save(all);
}

std::optional<nlohmann::json> Remembered::Get(const std::string& id) const {
  auto all = Load();
  if (!all.contains(id)) return std::nullopt;
  return all[id];
}

void Remembered::Forget(const std::string& id) {
  FileLock lock(file_);
  auto all = Load();
  if (all.erase(id)) Save(all);
}

}  // namespace ephemera::cli
