#include "unit/test_files.h"

#include <fstream>
#include <stdexcept>

#include <stdlib.h>

namespace ephemera::test {

namespace fs = std::filesystem;

TempDir::TempDir() {
  std::string pattern = (fs::temp_directory_path() / "ephemera-test-XXXXXX").string();
  if (!::mkdtemp(pattern.data())) throw std::runtime_error("mkdtemp failed");
  path_ = pattern;
}

TempDir::~TempDir() {
  std::error_code ec;
  fs::remove_all(path_, ec);
}

void WriteBytes(const fs::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out) throw std::runtime_error("cannot write " + path.string());
}

void WriteFakeElf(const fs::path& path) {
  WriteBytes(path, std::string("\x7f"
                               "ELF",
                               4) +
                       std::string(60, '\0'));
}

void WriteFakeExt4(const fs::path& path) {
  std::string bytes(4096, '\0');
  bytes[0x438] = '\x53';
  bytes[0x439] = '\xef';
  WriteBytes(path, bytes);
}

void WriteFakeIso(const fs::path& path) {
  std::string bytes(0x9000, '\0');
  bytes.replace(0x8001, 5, "CD001");
  WriteBytes(path, bytes);
}

fs::path MakeFakeKernelImage(const fs::path& dir, const std::string& name) {
  fs::path image = dir / name;
  fs::create_directories(image);
  WriteFakeElf(image / "vmlinux");
  WriteBytes(image / "initrd.img", "initrd");
  WriteFakeExt4(image / "rootfs.ext4");
  WriteBytes(image / "manifest.json",
             R"({"name":")" + name +
                 R"(","version":3,"format":"kernel","kernel":"vmlinux","initrd":"initrd.img",)"
                 R"("rootfs":"rootfs.ext4","cmdline":"console=ttyS0 root=/dev/vda rw"})");
  return image;
}

}  // namespace ephemera::test
