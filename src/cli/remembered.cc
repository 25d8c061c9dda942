#include "cli/remembered.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace ephemera::cli {

namespace fs = std::filesystem;

fs::path ConfigDir() {
  if (const char* xdg = std::getenv("XDG_CONFIG_HOME"); xdg && *xdg)
    return fs::path(xdg) / "ephemera";
  const char* home = std::getenv("HOME");
  return fs::path(home && *home ? home : "/root") / ".config" / "ephemera";
}

Remembered::Remembered(fs::path file) : file_(std::move(file)) {}

nlohmann::json Remembered::Load() const {
  std::ifstream in(file_);
  if (!in) return nlohmann::json::object();
  std::stringstream text;
  text << in.rdbuf();
  auto all = nlohmann::json::parse(text.str(), nullptr, false);
  return all.is_object() ? all : nlohmann::json::object();
}

void Remembered::Save(const nlohmann::json& all) const {
  fs::create_directories(file_.parent_path());
  ::chmod(file_.parent_path().c_str(), 0700);
  fs::path temp = file_;
  temp += ".tmp";
  // Created 0600 from the start: the secrets are never readable by others.
  int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) throw std::runtime_error("cannot write " + temp.string());
  std::string text = all.dump(2) + "\n";
  bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()) &&
            ::fsync(fd) == 0;
  ::close(fd);
  if (!ok || ::rename(temp.c_str(), file_.c_str()) != 0) {
    throw std::runtime_error("cannot write " + file_.string());
  }
}

namespace {

// Serialises read-modify-write cycles of concurrent ephemera processes.
class FileLock {
 public:
  explicit FileLock(const fs::path& file) {
    fs::create_directories(file.parent_path());
    ::chmod(file.parent_path().c_str(), 0700);
    fd_ = ::open((file.string() + ".lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd_ < 0 || ::flock(fd_, LOCK_EX) != 0)
      throw std::runtime_error("cannot lock " + file.string());
  }
  ~FileLock() { ::close(fd_); }

 private:
  int fd_ = -1;
};

}  // namespace

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
