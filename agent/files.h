// File edits under a root directory: "/" in the guest, a temporary tree in
// the tests. New contents are written beside the old file and renamed over
// it, so a machine stopped half-way never holds a torn /etc/passwd.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <string_view>

namespace ephemera::agent {

class Root {
 public:
  explicit Root(std::string_view dir = "/");
  // `absolute` (which starts with '/') inside this root.
  std::string operator()(std::string_view absolute) const;

 private:
  std::string prefix_;  // without the trailing '/'; empty for "/"
};

struct Ownership {
  mode_t mode;
  uid_t uid;
  gid_t gid;
};

// The file's content; nullopt when it does not exist. Throws AgentError
// ("files: cannot read ...") on any other failure.
std::optional<std::string> ReadFileIfExists(const std::string& path);
std::string ReadFile(const std::string& path);

enum class Keep {
  kOriginal,  // an existing file's mode and owner win over `ownership`
  kNone,      // always `ownership` (a host key must be 0600 whatever was there)
};

// Writes `content` to `path`.ephemera-new with the ownership it will have
// and returns that name; CommitFile renames it over `path`.
std::string StageFile(const std::string& path, std::string_view content, Ownership ownership,
                      Keep keep = Keep::kOriginal);
void CommitFile(const std::string& staged, const std::string& path);
// StageFile + CommitFile.
void ReplaceFile(const std::string& path, std::string_view content, Ownership ownership,
                 Keep keep = Keep::kOriginal);

// mkdir, then owner and mode (also of a directory that was there, if it
// is a real directory and not a link).
void MakeDir(const std::string& path, Ownership ownership);

// mkdir with `mode`; a directory already there is left as it is.
void EnsureDir(const std::string& path, mode_t mode);

// unlink; absent is fine.
void RemoveFile(const std::string& path);

}  // namespace ephemera::agent
