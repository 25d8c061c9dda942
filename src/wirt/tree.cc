#include "wirt/tree.h"

#include <fcntl.h>

#include <algorithm>

#include "core/error.h"
#include "wirt/layout.h"
#include "wirt/request.h"

namespace ephemera::wirt {

namespace {

// Bounds on what one user's tree costs a scan.
constexpr std::size_t kMaxEntriesPerVm = 64;
constexpr std::size_t kMaxVmsPerUser = 256;

// A descriptor of the folder for its watch, kept past the scan.
UniqueFd Duplicate(const UserDir& dir) { return UniqueFd(::fcntl(dir.fd(), F_DUPFD_CLOEXEC, 0)); }

bool IsRequestName(const std::string& name) { return ParseActionFile(name).has_value(); }

// The requests and strays of one VM's folder.
void ScanVmDir(const UserDir& home, uid_t uid, Layout layout, const std::string& dir,
               const std::string& vm, TreeScan& scan) {
  std::optional<UserDir> folder;
  try {
    folder = OpenUserDir(home, dir);
  } catch (const Error& e) {
    scan.problems.push_back(e.what());
    return;
  }
  if (!folder) return;
  scan.watch.push_back(Duplicate(*folder));
  std::vector<DirEntry> entries;
  try {
    entries = ListDir(*folder, kMaxEntriesPerVm);
  } catch (const Error& e) {
    scan.problems.push_back(e.what());
    return;
  }
  for (const DirEntry& e : entries) {
    if (e.name[0] == '.') continue;  // editors' and the wirt command's scratch files
    if (layout == Layout::kWirt && e.name == kConfigFile) continue;
    if (layout == Layout::kVirsh && e.name == "status.xml") continue;  // an older version's
    if (IsRequestName(e.name) && e.type != EntryType::kDirectory) {
      PendingRequest r{uid, vm, layout, dir, e.name, e.st.st_mtim, e.st.st_ino};
      scan.requests.push_back(std::move(r));
      continue;
    }
    scan.strays.push_back({layout, dir, e.name, e.type != EntryType::kDirectory, e.st.st_ino,
                           "not an action (start, stop, shutdown, destroy, autostart" +
                               std::string(layout == Layout::kWirt ? ", or config)" : ")")});
  }
}

}  // namespace

std::string PendingRequest::Key() const {
  return fmt::format("{}/{}/{}:{}:{}.{}", uid, dir, file, ino, mtime.tv_sec, mtime.tv_nsec);
}

std::string OldLayoutVmName(const std::string& folder) {
  if (folder.rfind(kOldVmPrefix, 0) != 0) return {};
  return folder.substr(kOldVmPrefix.size());
}

TreeScan ScanTree(const UserDir& home, uid_t uid) {
  TreeScan scan;
  scan.watch.push_back(Duplicate(home));
  auto open = [&](std::string_view relative) -> std::optional<UserDir> {
    try {
      auto dir = OpenUserDir(home, relative);
      if (dir) scan.watch.push_back(Duplicate(*dir));
      return dir;
    } catch (const Error& e) {
      scan.problems.push_back(e.what());
      return std::nullopt;
    }
  };
  try {
    // The new layout: each folder on the way is watched so that its
    // creation is seen.
    if (open("wirt") && open("wirt/service")) {
      if (auto vms = open(kServiceDir)) {
        for (const DirEntry& e : ListDir(*vms, kMaxVmsPerUser)) {
          if (e.name[0] == '.') continue;
          const std::string dir = std::string(kServiceDir) + "/" + e.name;
          if (e.type != EntryType::kDirectory) {
            scan.strays.push_back({Layout::kWirt, std::string(kServiceDir), e.name, true,
                                   e.st.st_ino, "not a VM folder"});
          } else if (!IsValidVmName(e.name)) {
            scan.strays.push_back({Layout::kWirt, std::string(kServiceDir), e.name, false,
                                   e.st.st_ino,
                                   "not a valid VM name (1 to 63 of [a-z0-9_.-], starting with "
                                   "a letter or digit, without '..')"});
          } else {
            ScanVmDir(home, uid, Layout::kWirt, dir, e.name, scan);
          }
        }
      }
    }
    // The older layout: ~/virsh/dom-NAME next to the history/ and log/ the
    // daemon writes.
    if (auto old = open(kOldRoot)) {
      for (const DirEntry& e : ListDir(*old, kMaxVmsPerUser + 2)) {
        if (e.name[0] == '.' || e.name == "history" || e.name == "log") continue;
        const std::string vm = OldLayoutVmName(e.name);
        if (e.type == EntryType::kDirectory && IsValidVmName(vm)) {
          ScanVmDir(home, uid, Layout::kVirsh, std::string(kOldRoot) + "/" + e.name, vm, scan);
        } else {
          scan.strays.push_back({Layout::kVirsh, std::string(kOldRoot), e.name,
                                 e.type != EntryType::kDirectory, e.st.st_ino,
                                 "not a VM folder (dom-NAME, NAME 1 to 63 of [a-z0-9_.-])"});
        }
      }
    }
  } catch (const Error& e) {
    scan.problems.push_back(e.what());
  }
  std::sort(scan.requests.begin(), scan.requests.end(),
            [](const PendingRequest& a, const PendingRequest& b) {
              if (a.mtime.tv_sec != b.mtime.tv_sec) return a.mtime.tv_sec < b.mtime.tv_sec;
              if (a.mtime.tv_nsec != b.mtime.tv_nsec) return a.mtime.tv_nsec < b.mtime.tv_nsec;
              return std::tie(a.dir, a.file) < std::tie(b.dir, b.file);
            });
  return scan;
}

}  // namespace ephemera::wirt
