#include "image/oci/layer_reader.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cerrno>
#include <memory>
#include <set>
#include <vector>

#include "core/error.h"
#include "core/text.h"

namespace ephemera::oci {

namespace fs = std::filesystem;

namespace {

constexpr std::string_view kWhiteoutPrefix = ".wh.";
constexpr std::string_view kOpaqueMarker = ".wh..wh..opq";

struct DirCloser {
  void operator()(DIR* d) const { ::closedir(d); }
};

// The names in the directory open as `dir` (its descriptor stays open).
std::vector<std::string> ListNames(int dir, const std::string& what) {
  int listing = ::dup(dir);
  std::unique_ptr<DIR, DirCloser> d(listing >= 0 ? ::fdopendir(listing) : nullptr);
  if (!d) {
    if (listing >= 0) ::close(listing);
    FailErrno("cannot list '" + EscapeForLog(what, 200) + "'", errno);
  }
  std::vector<std::string> names;
  while (dirent* e = ::readdir(d.get())) {
    std::string name = e->d_name;
    if (name != "." && name != "..") names.push_back(name);
  }
  return names;
}

// Removes `name` in `dir` and, for a directory, all below it, never
// following a symlink. Absent is fine.
void RemoveTree(int dir, const std::string& name) {
  struct stat st {};
  if (::fstatat(dir, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    if (errno == ENOENT) return;
    FailErrno("cannot inspect '" + EscapeForLog(name, 200) + "'", errno);
  }
  if (S_ISDIR(st.st_mode)) {
    UniqueFd sub(::openat(dir, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!sub) FailErrno("cannot open directory '" + EscapeForLog(name, 200) + "'", errno);
    for (const auto& child : ListNames(sub.get(), name)) RemoveTree(sub.get(), child);
    if (::unlinkat(dir, name.c_str(), AT_REMOVEDIR) != 0 && errno != ENOENT) {
      FailErrno("cannot remove directory '" + EscapeForLog(name, 200) + "'", errno);
    }
  } else if (::unlinkat(dir, name.c_str(), 0) != 0 && errno != ENOENT) {
    FailErrno("cannot remove '" + EscapeForLog(name, 200) + "'", errno);
  }
}

struct Archive {
  Archive() : a(archive_read_new()) {}
  ~Archive() { archive_read_free(a); }
  archive* a;
};

class LayerApplier {
 public:
  LayerApplier(int root, const LayerLimits& limits, const std::string& what)
      : root_(root), limits_(limits), what_(what) {}

  LayerStats Run(const fs::path& layer) {
    Archive ar;
    archive_read_support_filter_all(ar.a);
    archive_read_support_format_tar(ar.a);
    archive_read_support_format_empty(ar.a);
    if (archive_read_open_filename(ar.a, layer.c_str(), 1 << 16) != ARCHIVE_OK) {
      Corrupt(ar.a);
    }
    for (;;) {
      archive_entry* entry = nullptr;
      int r = archive_read_next_header(ar.a, &entry);
      if (r == ARCHIVE_EOF) break;
      if (r < ARCHIVE_WARN) Corrupt(ar.a);
      if (++stats_.entries > limits_.max_entries) {
        Fail(ErrorCode::kInvalidArgument, "{}: more than {} entries", what_, limits_.max_entries);
      }
      const char* raw = archive_entry_pathname(entry);
      current_ = raw ? raw : "";
      try {
        ApplyEntry(ar.a, entry);
      } catch (const Error& e) {
        if (e.code() == ErrorCode::kInvalidArgument && std::string(e.what()).starts_with(what_)) {
          throw;
        }
        Fail(e.code(), "{}: entry '{}': {}", what_, EscapeForLog(current_, 200), e.what());
      }
    }
    return stats_;
  }

 private:
  [[noreturn]] void Corrupt(archive* a) {
    const char* why = archive_error_string(a);
    Fail(ErrorCode::kInvalidArgument, "{}: corrupt or truncated layer{}{}", what_,
         current_.empty() ? "" : " after entry '" + EscapeForLog(current_, 200) + "'",
         why ? std::string(": ") + why : "");
  }

  // The directory that holds `path`, made (0755, as container runtimes do)
  // where missing; and the entry's own name.
  std::pair<UniqueFd, std::string> Parent(const std::string& path, bool create) {
    auto slash = path.rfind('/');
    std::string dir = slash == std::string::npos ? "" : path.substr(0, slash);
    std::string name = slash == std::string::npos ? path : path.substr(slash + 1);
    UniqueFd fd(OpenInRoot(root_, dir, O_PATH | O_DIRECTORY));
    if (fd || errno != ENOENT || !create) {
      if (!fd) FailErrno("cannot open its folder in the root", errno, ErrorCode::kInvalidArgument);
      return {std::move(fd), name};
    }
    UniqueFd at(OpenInRoot(root_, "", O_PATH | O_DIRECTORY));
    std::string prefix;
    for (std::size_t start = 0; start <= dir.size();) {
      std::size_t end = dir.find('/', start);
      if (end == std::string::npos) end = dir.size();
      std::string comp = dir.substr(start, end - start);
      prefix += (prefix.empty() ? "" : "/") + comp;
      UniqueFd next(OpenInRoot(root_, prefix, O_PATH | O_DIRECTORY));
      if (!next && errno == ENOENT) {
        if (::mkdirat(at.get(), comp.c_str(), 0755) != 0 && errno != EEXIST) {
          FailErrno("cannot make folder '" + prefix + "'", errno);
        }
        next = UniqueFd(OpenInRoot(root_, prefix, O_PATH | O_DIRECTORY));
      }
      if (!next) {
        FailErrno("'" + EscapeForLog(prefix, 200) + "' does not lead to a folder in the root",
                  errno, ErrorCode::kInvalidArgument);
      }
      at = std::move(next);
      start = end + 1;
    }
    return {std::move(at), name};
  }

  void Opaque(const std::string& dir) {
    UniqueFd fd(OpenInRoot(root_, dir, O_RDONLY | O_DIRECTORY));
    if (!fd) return;  // nothing below to hide
    for (const auto& child : ListNames(fd.get(), dir)) {
      // Only what the layers below put there: this layer's own entries stay.
      if (!created_.count(dir.empty() ? child : dir + "/" + child)) RemoveTree(fd.get(), child);
    }
  }

  void ApplyEntry(archive* a, archive_entry* entry) {
    std::string path;
    try {
      path = NormalizeEntryPath(current_);
    } catch (const Error& e) {
      Fail(ErrorCode::kInvalidArgument, "{}: entry '{}' escapes the root ({})", what_,
           EscapeForLog(current_, 200), e.what());
    }
    if (path.empty()) return;  // the root itself
    auto slash = path.rfind('/');
    const std::string base = slash == std::string::npos ? path : path.substr(slash + 1);
    const std::string dir = slash == std::string::npos ? "" : path.substr(0, slash);
    if (base == kOpaqueMarker) return Opaque(dir);
    if (base.starts_with(kWhiteoutPrefix)) {
      auto [parent, name] = Parent(path, false);
      RemoveTree(parent.get(), base.substr(kWhiteoutPrefix.size()));
      return;
    }
    auto [parent, name] = Parent(path, true);
    const mode_t type = archive_entry_filetype(entry);
    struct stat existing {};
    const bool exists = ::fstatat(parent.get(), name.c_str(), &existing, AT_SYMLINK_NOFOLLOW) == 0;
    if (exists && !(type == AE_IFDIR && S_ISDIR(existing.st_mode))) {
      RemoveTree(parent.get(), name);
    }
    if (const char* link = archive_entry_hardlink(entry)) {
      std::string target;
      try {
        target = NormalizeEntryPath(link);
      } catch (const Error&) {
        Fail(ErrorCode::kInvalidArgument, "{}: hard link '{}' escapes the root", what_,
             EscapeForLog(current_, 200));
      }
      auto [tparent, tname] = Parent(target, false);
      if (::linkat(tparent.get(), tname.c_str(), parent.get(), name.c_str(), 0) != 0) {
        FailErrno("cannot link to '" + EscapeForLog(target, 200) + "'", errno);
      }
      created_.insert(path);
      return;
    }
    switch (type) {
      case AE_IFDIR:
        if (!(exists && S_ISDIR(existing.st_mode)) && ::mkdirat(parent.get(), name.c_str(), 0700))
          FailErrno("cannot make the folder", errno);
        break;
      case AE_IFREG:
        WriteFile(a, entry, parent.get(), name);
        break;
      case AE_IFLNK: {
        const char* target = archive_entry_symlink(entry);
        if (!target || ::symlinkat(target, parent.get(), name.c_str()) != 0)
          FailErrno("cannot make the symlink", errno);
        break;
      }
      case AE_IFCHR:
      case AE_IFBLK:
      case AE_IFIFO:
        if (::mknodat(parent.get(), name.c_str(), type | 0600, archive_entry_rdev(entry)) != 0)
          FailErrno("cannot make the node", errno);
        break;
      default:
        return;  // sockets and the like: nothing to keep
    }
    SetMetadata(entry, parent.get(), name, type);
    created_.insert(path);
  }

  void WriteFile(archive* a, archive_entry* entry, int parent, const std::string& name) {
    UniqueFd fd(
        ::openat(parent, name.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (!fd) FailErrno("cannot create the file", errno);
    const void* buffer = nullptr;
    std::size_t size = 0;
    la_int64_t offset = 0;
    for (;;) {
      int r = archive_read_data_block(a, &buffer, &size, &offset);
      if (r == ARCHIVE_EOF) break;
      if (r < ARCHIVE_WARN) Corrupt(a);
      stats_.bytes += size;
      if (stats_.bytes > limits_.max_bytes) {
        Fail(ErrorCode::kInvalidArgument, "{}: more than {} bytes of file content", what_,
             limits_.max_bytes);
      }
      // Blocks come at their offsets: the holes of sparse files stay holes.
      const char* p = static_cast<const char*>(buffer);
      while (size > 0) {
        ssize_t n = ::pwrite(fd.get(), p, size, offset);
        if (n < 0) {
          if (errno == EINTR) continue;
          FailErrno("cannot write the file", errno);
        }
        p += n;
        size -= static_cast<std::size_t>(n);
        offset += n;
      }
    }
    if (::ftruncate(fd.get(), archive_entry_size(entry)) != 0) {
      FailErrno("cannot size the file", errno);
    }
  }

  void SetMetadata(archive_entry* entry, int parent, const std::string& name, mode_t type) {
    // Owner first: chown clears set-id bits that chmod then sets.
    if (::fchownat(parent, name.c_str(), static_cast<uid_t>(archive_entry_uid(entry)),
                   static_cast<gid_t>(archive_entry_gid(entry)), AT_SYMLINK_NOFOLLOW) != 0) {
      FailErrno("cannot set its owner", errno);
    }
    if (type != AE_IFLNK &&
        ::fchmodat(parent, name.c_str(), archive_entry_perm(entry) & 07777, 0) != 0) {
      FailErrno("cannot set its mode", errno);
    }
    // Through the parent's descriptor: the name itself is not followed.
    const std::string at = "/proc/self/fd/" + std::to_string(parent) + "/" + name;
    archive_entry_xattr_reset(entry);
    const char* key = nullptr;
    const void* value = nullptr;
    std::size_t size = 0;
    while (archive_entry_xattr_next(entry, &key, &value, &size) == ARCHIVE_OK) {
      if (::lsetxattr(at.c_str(), key, value, size, 0) != 0) {
        FailErrno(fmt::format("cannot set xattr {}", EscapeForLog(key, 100)), errno);
      }
    }
    timespec times[2] = {{archive_entry_atime(entry), archive_entry_atime_nsec(entry)},
                         {archive_entry_mtime(entry), archive_entry_mtime_nsec(entry)}};
    if (!archive_entry_atime_is_set(entry)) times[0] = times[1];
    ::utimensat(parent, name.c_str(), times, AT_SYMLINK_NOFOLLOW);  // times are cosmetic
  }

  int root_;
  const LayerLimits& limits_;
  const std::string& what_;
  std::string current_;
  std::set<std::string> created_;  // this layer's own entries (opaque directories keep them)
  LayerStats stats_;
};

}  // namespace

std::vector<std::string> ListInRoot(int root, const std::string& path) {
  std::vector<std::string> names;
  int fd = OpenInRoot(root, path, O_RDONLY | O_DIRECTORY);
  if (fd < 0) return names;
  DIR* dir = ::fdopendir(fd);
  if (!dir) {
    ::close(fd);
    return names;
  }
  while (dirent* e = ::readdir(dir)) {
    std::string name = e->d_name;
    if (name != "." && name != "..") names.push_back(name);
  }
  ::closedir(dir);
  return names;
}

std::string NormalizeEntryPath(std::string_view path) {
  std::string out;
  std::size_t start = 0;
  while (start <= path.size()) {
    std::size_t end = path.find('/', start);
    if (end == std::string_view::npos) end = path.size();
    std::string_view comp = path.substr(start, end - start);
    if (comp == "..") {
      Fail(ErrorCode::kInvalidArgument, "'{}' has a '..' component", EscapeForLog(path, 200));
    }
    if (!comp.empty() && comp != ".") {
      if (!out.empty()) out += '/';
      out += comp;
    }
    start = end + 1;
  }
  if (out.find('\0') != std::string::npos) {
    Fail(ErrorCode::kInvalidArgument, "a path holds a NUL byte");
  }
  return out;
}

RootfsWriter::RootfsWriter(const fs::path& root, LayerLimits limits)
    : root_(root), limits_(limits) {
  root_fd_ = UniqueFd(::open(root.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!root_fd_) FailErrno("cannot open the root " + root.string(), errno);
}

LayerStats RootfsWriter::Apply(const fs::path& layer, const std::string& what) {
  return LayerApplier(root_fd_.get(), limits_, what).Run(layer);
}

}  // namespace ephemera::oci
