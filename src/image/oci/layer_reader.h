// Applies image layers, in order, to a root filesystem tree on the host,
// as OCI's image spec says: whiteouts (".wh.NAME" removes NAME from the
// layers below, ".wh..wh..opq" empties a directory of what they put
// there), with modes, owners, hard links, symlinks, device nodes, xattrs
// and times kept. Every path is resolved inside the root (openat2
// RESOLVE_IN_ROOT): no entry, link or symlink already in the tree can make
// a write land outside it, and entries naming ".." are refused. Needs root
// for owners and device nodes.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "core/fs.h"
#include "core/unique_fd.h"

namespace ephemera::oci {

struct LayerLimits {
  std::uint64_t max_bytes = std::uint64_t{16} << 30;  // unpacked file content, per layer
  std::uint64_t max_entries = 1'000'000;
};

struct LayerStats {
  std::uint64_t entries = 0;
  std::uint64_t bytes = 0;  // file content written
};

class RootfsWriter {
 public:
  // `root` must exist and be a directory (empty for the first layer).
  explicit RootfsWriter(const std::filesystem::path& root, LayerLimits limits = {});

  // Applies one layer (tar, gzip- or zstd-compressed: detected). `what`
  // names it in errors. kInvalidArgument for a corrupt or truncated
  // archive, an entry escaping the root, or one over the limits; the tree is
  // then partly written and must be discarded.
  LayerStats Apply(const std::filesystem::path& layer, const std::string& what);

 private:
  std::filesystem::path root_;
  UniqueFd root_fd_;
  LayerLimits limits_;
};

// The names in directory `path` below `root` (resolved as OpenInRoot
// does); none when it is not a directory there.
std::vector<std::string> ListInRoot(int root, const std::string& path);

// "./a//b/" -> "a/b"; "" for the root itself; kInvalidArgument for a ".."
// component. Leading slashes are dropped, as tar does.
std::string NormalizeEntryPath(std::string_view path);

}  // namespace ephemera::oci
