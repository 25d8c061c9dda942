#include "net/sysctl.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>

#include "core/error.h"
#include "core/fs.h"
#include "core/unique_fd.h"

namespace ephemera {

namespace {

std::string PathOf(std::string key) {
  for (char& c : key) {
    if (c == '.') c = '/';
  }
  return "/proc/sys/" + key;
}

}  // namespace

std::string GetSysctl(const std::string& key) {
  std::string value = ReadFile(PathOf(key));
  while (!value.empty() && value.back() == '\n') value.pop_back();
  return value;
}

std::string SetSysctl(const std::string& key, const std::string& value) {
  std::string previous = GetSysctl(key);
  if (previous == value) return previous;
  UniqueFd fd(::open(PathOf(key).c_str(), O_WRONLY | O_CLOEXEC));
  if (!fd || ::write(fd.get(), value.data(), value.size()) != static_cast<ssize_t>(value.size())) {
    FailErrno(fmt::format("cannot set sysctl {}={}", key, value), errno,
              errno == EACCES || errno == EPERM || errno == EROFS ? ErrorCode::kPermissionDenied
                                                                  : ErrorCode::kInternal);
  }
  return previous;
}

}  // namespace ephemera
