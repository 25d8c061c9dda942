// Temporary directories and fake image files for tests.
#pragma once

#include <filesystem>
#include <string>

namespace ephemera::test {

// A fresh directory under $TMPDIR, removed (with its content) on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

void WriteBytes(const std::filesystem::path& path, const std::string& bytes);
// Minimal files that pass header checks: an ELF kernel, an ext4 superblock
// magic, a qcow2 magic, an ISO 9660 descriptor.
void WriteFakeElf(const std::filesystem::path& path);
void WriteFakeExt4(const std::filesystem::path& path);
void WriteFakeIso(const std::filesystem::path& path);
// An image directory `dir/name` with a kernel-format manifest.
std::filesystem::path MakeFakeKernelImage(const std::filesystem::path& dir,
                                          const std::string& name);

}  // namespace ephemera::test
