// Reading one user's request trees (both layouts) into the requests that
// wait there, oldest first, and the entries that are not requests.
#pragma once

#include <sys/stat.h>

#include <string>
#include <vector>

#include "wirt/members.h"
#include "wirt/user_fs.h"

namespace ephemera::wirt {

enum class Layout { kWirt, kVirsh };  // ~/wirt/service/vm/NAME, ~/virsh/dom-NAME

struct PendingRequest {
  uid_t uid = 0;
  std::string vm;
  Layout layout = Layout::kWirt;
  std::string dir;   // the request's folder, relative to the home
  std::string file;  // the action file's name as written (stop, start ...)
  struct timespec mtime {};
  ino_t ino = 0;
  std::string Key() const;  // identifies this file version while it waits
};

// An entry where only requests belong: a file with an unknown name, an
// invalid VM folder name, a FIFO ... (`file` empty: the folder itself).
struct StrayEntry {
  Layout layout = Layout::kWirt;
  std::string dir;  // relative to the home
  std::string name;
  bool is_file = false;  // a regular file, FIFO, socket ...: moved aside; folders are reported
  ino_t ino = 0;
  std::string reason;
};

struct TreeScan {
  std::vector<PendingRequest> requests;  // oldest first (mtime, then name)
  std::vector<StrayEntry> strays;
  // Folders to watch, opened and checked (the home first).
  std::vector<UniqueFd> watch;
  std::vector<std::string> problems;  // a folder that is not the user's, ... (for the log)
};

// Never throws for what the user wrote; a home that cannot be opened
// safely is a problem, not an error.
TreeScan ScanTree(const UserDir& home, uid_t uid);

// The folder name of a VM in the older layout ("dom-NAME" -> "NAME"); empty if it is not one.
std::string OldLayoutVmName(const std::string& folder);

}  // namespace ephemera::wirt
