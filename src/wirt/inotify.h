// One inotify instance watching directories, each with a tag saying whose
// they are. Watches only trigger work: whatever a user does to the watched
// paths (a symlink swapped in) can at worst cause a needless rescan, since
// all reading and writing goes through user_fs.h.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "core/unique_fd.h"

namespace ephemera::wirt {

class Inotify {
 public:
  Inotify();  // kUnavailable if the kernel refuses an instance
  int fd() const { return fd_.get(); }

  enum class Watch { kNew, kAlready, kFailed };
  // Watches a directory (the last component never followed); kFailed if it
  // cannot be watched (gone, not a directory, the watch limit).
  Watch WatchDir(const std::string& path, std::uint64_t tag);
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
