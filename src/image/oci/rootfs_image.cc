#include "image/oci/rootfs_image.h"

#include <sys/stat.h>

#include "core/error.h"
#include "core/fs.h"
#include "core/subprocess.h"

namespace ephemera::oci {

namespace fs = std::filesystem;

namespace {

// Bytes the tree's files and folders take, as mke2fs will lay them out
// (4 KiB blocks), never following a symlink.
std::uint64_t TreeBytes(const fs::path& root) {
  std::uint64_t total = 0;
  for (auto it = fs::recursive_directory_iterator(root, fs::directory_options::none);
       it != fs::recursive_directory_iterator(); ++it) {
    struct stat st {};
    if (::lstat(it->path().c_str(), &st) != 0) continue;
    total += (static_cast<std::uint64_t>(st.st_size) + 4095) / 4096 * 4096 + 256;  // + inode
  }
  return total;
}

}  // namespace

RootfsBuild BuildRootfsExt4(const LocalImage& image, const fs::path& scratch,
                            const fs::path& output, std::uint64_t headroom_mib,
                            const std::string& what, LayerLimits limits,
                            const std::function<void(const fs::path&)>& check) {
  RemoveOnExit guard(scratch);
  const fs::path root = scratch / "root";
  MakeDirs(root, 0755);
  ::chmod(root.c_str(), 0755);
  RootfsWriter writer(root, limits);
  RootfsBuild build;
  for (std::size_t i = 0; i < image.layers.size(); ++i) {
    build.content_bytes +=
        writer.Apply(image.layers[i].path, fmt::format("{}: layer {}", what, i + 1)).bytes;
  }
  if (check) check(root);
  // ext4's own metadata (journal, inode tables, group descriptors) on top:
  // about 5 % and a floor, then the headroom the guest may fill.
  const std::uint64_t tree = TreeBytes(root);
  const std::uint64_t mib = (tree + tree / 20) / (1 << 20) + 64 + headroom_mib;
  build.image_bytes = mib << 20;
  const fs::path partial = output.string() + ".partial";
  std::error_code ec;
  fs::remove(partial, ec);
  try {
    RunChecked({"mke2fs", "-q", "-F", "-t", "ext4", "-L", "ephemera-root", "-m", "0", "-E",
                "lazy_itable_init=0,lazy_journal_init=0", "-d", root.string(), partial.string(),
                std::to_string(mib) + "M"},
               std::chrono::minutes(10));
  } catch (const Error& e) {
    fs::remove(partial, ec);
    throw e.WithContext(what + ": cannot make the ext4 root disk");
  }
  fs::rename(partial, output);
  return build;
}

}  // namespace ephemera::oci
