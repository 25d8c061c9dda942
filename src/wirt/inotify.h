// One inotify instance watching directories, each with a tag saying whose
// they are. Watches only trigger work (all reading and writing goes
// through user_fs.h); a user's directories are watched by the descriptor
// that was checked, and those that leave the tree are unwatched, so that
// no user can point root's watches elsewhere or use up its watch limit.
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "core/unique_fd.h"

namespace ephemera::wirt {

class Inotify {
 public:
  Inotify();  // kUnavailable if the kernel refuses an instance
  int fd() const { return fd_.get(); }

  // A watch added: its descriptor (-1 if the directory cannot be watched:
  // gone, not a directory, the watch limit) and whether it is new.
  struct Added {
    int wd = -1;
    bool fresh = false;
  };
  // A directory by path, its last component never followed (for the
  // administrator's folders: /etc, where homes are).
  Added WatchPath(const std::string& path, std::uint64_t tag);
  // A directory already opened and checked, by its descriptor (a user's:
  // no path they control is resolved again).
  Added WatchFd(int dir_fd, std::uint64_t tag);
  // Stops watching this tag's directories that are not in `keep` (folders
  // that left the tree).
  void Retain(std::uint64_t tag, const std::set<int>& keep);
  // Stops watching every directory with this tag.
  void Forget(std::uint64_t tag);
  std::size_t watches() const { return tags_.size(); }

  struct Event {
    std::uint64_t tag = 0;
    std::uint32_t mask = 0;
    std::string name;  // the entry in the watched directory, if any
  };
  // The events queued now (never blocks). An IN_Q_OVERFLOW event comes
  // with tag kOverflow: everything must be rescanned.
  std::vector<Event> Drain();
  static constexpr std::uint64_t kOverflow = ~std::uint64_t{0};

 private:
  UniqueFd fd_;
  std::map<int, std::uint64_t> tags_;  // by watch descriptor
};

}  // namespace ephemera::wirt
