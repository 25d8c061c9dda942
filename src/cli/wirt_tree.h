// The user's side of a wirt tree (wirt/layout.h): what the `wirt` command
// writes (configs, request files) and reads back (the daemon's status.xml,
// credentials and logs), kept apart from the command line so tests can use
// it directly. Everything is relative to one home directory; nothing here
// needs the daemon to be running.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <ctime>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "wirt/request.h"

// Apart from ephemera::wirt, the daemon's side, so the two never collide.
namespace ephemera::wirt_cli {

using wirt::Action;
using wirt::ActionParams;
using wirt::VmConfig;

// The home directory of `uid` from the password database (not $HOME, which
// the caller controls and which need not be where the daemon looks).
std::filesystem::path HomeOfUser(uid_t uid);

class Tree {
 public:
  explicit Tree(std::filesystem::path home) : home_(std::move(home)) {}
  const std::filesystem::path& home() const { return home_; }

  std::filesystem::path ServiceDir(std::string_view name) const;  // config, requests
  std::filesystem::path InfoDir(std::string_view name) const;     // status.xml, credentials
  std::filesystem::path StatusFile(std::string_view name) const;
  std::filesystem::path CredentialsFile(std::string_view name) const;
  std::filesystem::path LogFile(std::string_view name) const;
  std::filesystem::path OldLayoutDir(std::string_view name) const;  // virsh/dom-NAME

  // A VM the user wrote something for or the daemon answered about.
  bool Knows(std::string_view name) const;
  // Every VM name in the service, info and older virsh folders, sorted.
  std::vector<std::string> VmNames() const;

 private:
  std::filesystem::path home_;
};

// Creates `relative` under `home` one folder at a time, each 0755: the
// daemon refuses group- or world-writable folders, so ours never are (and
// existing ones of ours lose those bits). A symlink on the way is refused,
// as the daemon would refuse it.
void MakeTreeDirs(const std::filesystem::path& home, const std::filesystem::path& relative);

// Writes `content` to `dir`/`file_name` whole: `.NAME.tmp-PID` first, then a
// rename, so the daemon never sees half a file. Returns the file's mtime.
timespec WriteTreeFile(const std::filesystem::path& dir, std::string_view file_name,
                       std::string_view content, mode_t mode = 0644);

// The keys of `--ssh-key` arguments: an existing file gives each of its
// non-empty lines that is not a comment, anything else is one key line.
// Each is checked as the daemon checks it (CheckAuthorizedKey;
// kInvalidArgument naming the argument or file line).
std::vector<std::string> ReadSshKeyArguments(const std::vector<std::string>& arguments);

// Writes NAME's config after checking it as the daemon would; refuses
// (kAlreadyExists) to replace one unless `force`. Returns its path.
std::filesystem::path WriteVmConfig(const Tree& tree, std::string_view name, const VmConfig& config,
                                    bool force);

// A request file written and what was there before it, to recognise the
// daemon's answer to this request rather than an older one.
struct PendingRequest {
  std::string name;
  std::string file_name;  // as written: "stop" stays "stop"
  Action action = Action::kStart;
  ActionParams params;
  std::filesystem::path path;
  timespec written{};  // the request file's mtime
  std::optional<timespec> status_before, credentials_before;
};

// Checks `params_line` (kInvalidArgument), creates NAME's folder if needed
// and writes the request `file_name` (start, stop, shutdown, destroy,
// autostart) holding the line, or nothing when it is empty.
PendingRequest WriteRequest(const Tree& tree, std::string_view name, std::string_view file_name,
                            std::string_view params_line);

// status.xml as the daemon writes it; absent elements stay empty.
struct VmStatus {
  std::string name, owner, uid;
  std::string state;      // starting, running, stopping, stopped, failed
  std::string autostart;  // yes, no
  std::string sandbox, image, address;
  std::string ssh_host, ssh_port, ssh_username;
  std::string created, expires, updated;
  std::string last_action, last_outcome, last_at, last_message;
};
VmStatus ParseStatusXml(std::string_view xml);
nlohmann::json StatusToJson(const VmStatus& status);
// A few lines for people; the daemon's strings have control bytes escaped.
std::string FormatStatus(const VmStatus& status);
// "user@host -p port", or "-" while there is no instance.
std::string SshSummary(const VmStatus& status);

// A file of the tree, or nullopt when absent; refuses symlinks and anything
// but a regular file of at most `max_bytes`.
std::optional<std::string> ReadTreeFile(const std::filesystem::path& path,
                                        std::size_t max_bytes = 1 << 20);
std::optional<VmStatus> ReadStatus(const Tree& tree, std::string_view name);

enum class Outcome { kDone, kFailed, kTimedOut };
struct Answer {
  Outcome outcome = Outcome::kTimedOut;
  bool request_taken = false;      // the daemon moved the request file away
  std::optional<VmStatus> status;  // the latest status.xml, if any
};

// Waits until the daemon has taken `request` and status.xml, written after
// it, shows a state that ends the action (start: running; stop, shutdown,
// destroy: stopped; failed ends every one; autostart --disable: taken is
// enough). Woken by inotify on the VM's folders; while a folder does not
// exist yet, its nearest existing parent is watched and the files polled
// every 100 ms.
Answer WaitForAnswer(const Tree& tree, const PendingRequest& request,
                     std::chrono::milliseconds timeout);

}  // namespace ephemera::wirt_cli
