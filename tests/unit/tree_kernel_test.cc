// A root filesystem's own kernel: found in /boot (or /lib/modules), its
// bzImage unpacked to a PVH-bootable ELF, and ephemera's initrd rebuilt
// with that kernel's modules in dependency order.
#include <archive.h>
#include <archive_entry.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>
#include <map>

#include "core/fs.h"
#include "image/oci/tree_kernel.h"
#include "unit/error_of.h"
#include "unit/test_files.h"

namespace ephemera::oci {
namespace {

namespace fs = std::filesystem;
using test::ErrorOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

template <typename T>
void Put(std::string& data, std::size_t offset, T value) {
  if (data.size() < offset + sizeof(T)) data.resize(offset + sizeof(T));
  std::memcpy(data.data() + offset, &value, sizeof(T));
}

// A minimal x86-64 ELF64 with one PT_NOTE holding a note of `note_type`
// ("Xen", 18 is the PVH entry).
std::string MakeElf(std::uint32_t note_type) {
  std::string elf(64, '\0');
  elf.replace(0, 4,
              "\x7f"
              "ELF");
  elf[4] = 2;  // 64-bit
  elf[5] = 1;  // little-endian
  elf[6] = 1;
  Put<std::uint16_t>(elf, 0x12, 62);  // x86-64
  Put<std::uint64_t>(elf, 0x20, 64);  // e_phoff
  Put<std::uint16_t>(elf, 0x36, 56);  // e_phentsize
  Put<std::uint16_t>(elf, 0x38, 1);   // e_phnum
  std::string ph(56, '\0');
  Put<std::uint32_t>(ph, 0, 4);    // PT_NOTE
  Put<std::uint64_t>(ph, 8, 120);  // p_offset
  Put<std::uint64_t>(ph, 32, 20);  // p_filesz
  elf += ph;
  std::string note;
  Put<std::uint32_t>(note, 0, 4);
  Put<std::uint32_t>(note, 4, 4);
  Put<std::uint32_t>(note, 8, note_type);
  note += std::string("Xen\0", 4) + std::string("\x01\x02\x03\x04", 4);
  return elf + note + std::string(4096, 'k');  // and a kernel's worth of text
}

// `data` compressed as one stream by libarchive's `filter`.
std::string Compress(const std::string& data, int (*filter)(archive*)) {
  std::string out(data.size() + 65536, '\0');
  size_t used = 0;
  archive* a = archive_write_new();
  filter(a);
  archive_write_set_format_raw(a);
  archive_write_open_memory(a, out.data(), out.size(), &used);
  archive_entry* e = archive_entry_new();
  archive_entry_set_filetype(e, AE_IFREG);
  archive_entry_set_pathname(e, "data");
  archive_write_header(a, e);
  archive_write_data(a, data.data(), data.size());
  archive_write_close(a);
  archive_entry_free(e);
  archive_write_free(a);
  out.resize(used);
  return out;
}

// A bzImage: setup sectors, the boot protocol header, and the compressed
// payload where the header says.
std::string MakeBzImage(const std::string& payload, std::size_t plain_size, bool gzip = false) {
  std::string image(4 * 512, '\0');
  image[0x1f1] = 3;  // setup sectors: protected-mode code at (3 + 1) * 512
  image.replace(0x202, 4, "HdrS");
  Put<std::uint16_t>(image, 0x206, 0x020f);
  Put<std::uint32_t>(image, 0x248, 100);
  Put<std::uint32_t>(image, 0x24c, static_cast<std::uint32_t>(payload.size()));
  // The decompressed size after the stream, as the kernel's build appends it
  // (for gzip, the stream's own trailer says it).
  image += std::string(100, 'D') + payload;
  if (!gzip) {
    const std::uint32_t size = static_cast<std::uint32_t>(plain_size);
    image.append(reinterpret_cast<const char*>(&size), 4);
    Put<std::uint32_t>(image, 0x24c, static_cast<std::uint32_t>(payload.size() + 4));
  }
  return image;
}

// The entries of a (compressed) cpio: name -> content.
std::map<std::string, std::string> ReadCpio(const fs::path& file) {
  std::map<std::string, std::string> entries;
  archive* a = archive_read_new();
  archive_read_support_filter_all(a);
  archive_read_support_format_cpio(a);
  EXPECT_EQ(archive_read_open_filename(a, file.c_str(), 65536), ARCHIVE_OK);
  archive_entry* e = nullptr;
  while (archive_read_next_header(a, &e) == ARCHIVE_OK) {
    std::string content(static_cast<std::size_t>(archive_entry_size(e)), '\0');
    if (!content.empty()) archive_read_data(a, content.data(), content.size());
    entries[archive_entry_pathname(e)] = content;
  }
  archive_read_free(a);
  return entries;
}

void WriteCpio(const fs::path& file, const std::map<std::string, std::string>& entries) {
  archive* a = archive_write_new();
  archive_write_set_format_cpio_newc(a);
  archive_write_add_filter_gzip(a);
  archive_write_open_filename(a, file.c_str());
  for (const auto& [name, content] : entries) {
    archive_entry* e = archive_entry_new();
    archive_entry_set_pathname(e, name.c_str());
    archive_entry_set_filetype(e, AE_IFREG);
    archive_entry_set_perm(e, 0755);
    archive_entry_set_size(e, static_cast<la_int64_t>(content.size()));
    archive_write_header(a, e);
    archive_write_data(a, content.data(), content.size());
    archive_entry_free(e);
  }
  archive_write_close(a);
  archive_write_free(a);
}

TEST(TreeKernelTest, ABzImageIsUnpackedToItsElfWhateverTheCompression) {
  const std::string elf = MakeElf(18);
  EXPECT_TRUE(HasPvhEntry(elf));
  for (auto filter : {archive_write_add_filter_xz, archive_write_add_filter_zstd,
                      archive_write_add_filter_lz4, archive_write_add_filter_bzip2}) {
    EXPECT_EQ(UnpackBzImage(MakeBzImage(Compress(elf, filter), elf.size()), "vmlinuz-x"), elf);
  }
  EXPECT_EQ(
      UnpackBzImage(MakeBzImage(Compress(elf, archive_write_add_filter_gzip), elf.size(), true),
                    "vmlinuz-x"),
      elf);
}

TEST(TreeKernelTest, AKernelWithoutThePvhEntryOrNotABzImageIsRefusedByName) {
  const std::string no_pvh = MakeElf(17);
  EXPECT_FALSE(HasPvhEntry(no_pvh));
  Error e = ErrorOf([&] {
    UnpackBzImage(MakeBzImage(Compress(no_pvh, archive_write_add_filter_xz), no_pvh.size()),
                  "vmlinuz-x");
  });
  EXPECT_EQ(e.code(), ErrorCode::kFailedPrecondition);
  EXPECT_THAT(e.what(), HasSubstr("vmlinuz-x: the kernel has no PVH entry point (CONFIG_PVH)"));
  EXPECT_THAT(ErrorOf([&] { UnpackBzImage(std::string(4096, 'x'), "vmlinuz-y"); }).what(),
              HasSubstr("vmlinuz-y: not a bzImage"));
  // A payload that is not a kernel, or that is cut short.
  EXPECT_THAT(ErrorOf([&] {
                UnpackBzImage(
                    MakeBzImage(Compress("just text", archive_write_add_filter_gzip), 9, true),
                    "z");
              }).what(),
              HasSubstr("not a whole x86-64 ELF kernel"));
  std::string cut = Compress(MakeElf(18), archive_write_add_filter_xz);
  cut.resize(cut.size() / 2);
  EXPECT_EQ(ErrorOf([&] { UnpackBzImage(MakeBzImage(cut, MakeElf(18).size()), "c"); }).code(),
            ErrorCode::kFailedPrecondition);
}

TEST(TreeKernelTest, ModulesComeWithTheirDependenciesFirstAndBuiltInOnesAreLeftOut) {
  const std::string dep =
      "kernel/fs/ext4/ext4.ko.xz: kernel/fs/mbcache.ko.xz kernel/fs/jbd2/jbd2.ko.xz "
      "kernel/lib/crc16.ko.xz\n"
      "kernel/fs/jbd2/jbd2.ko.xz:\n"
      "kernel/fs/mbcache.ko.xz:\n"
      "kernel/lib/crc16.ko.xz:\n"
      "kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko\n"
      "kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko\n"
      "kernel/net/core/failover.ko:\n";
  const std::string builtin = "kernel/drivers/block/virtio_blk.ko\n";
  EXPECT_THAT(
      ModuleClosure(dep, builtin, {"virtio_blk", "ext4", "virtio_net", "jbd2"}, "k"),
      ElementsAre("kernel/fs/mbcache.ko.xz", "kernel/fs/jbd2/jbd2.ko.xz", "kernel/lib/crc16.ko.xz",
                  "kernel/fs/ext4/ext4.ko.xz", "kernel/net/core/failover.ko",
                  "kernel/drivers/net/net_failover.ko", "kernel/drivers/net/virtio_net.ko"));
  Error e = ErrorOf([&] { ModuleClosure(dep, builtin, {"qemu_fw_cfg"}, "kernel 6.1"); });
  EXPECT_EQ(e.code(), ErrorCode::kFailedPrecondition);
  EXPECT_THAT(e.what(), HasSubstr("kernel 6.1: the kernel has no module qemu_fw_cfg"));
  EXPECT_THAT(ErrorOf([&] { ModuleClosure("a.ko: b.ko\nb.ko: a.ko\n", "", {"a"}, "k"); }).what(),
              HasSubstr("cycle"));
}

TEST(TreeKernelTest, TheHighestKernelOfTheTreeIsFoundAndLinksOutAreNotFollowed) {
  test::TempDir dir;
  const fs::path root = dir.path() / "root";
  fs::create_directories(root / "boot");
  EXPECT_FALSE(FindTreeKernel(root));
  test::WriteBytes(root / "boot/vmlinuz-6.1.0-9-amd64", "k");
  test::WriteBytes(root / "boot/vmlinuz-6.10.0-1-amd64", "k");
  test::WriteBytes(root / "boot/vmlinuz-7.0.0-1-amd64.old", "k");
  std::optional<TreeKernel> k = FindTreeKernel(root);
  ASSERT_TRUE(k);
  EXPECT_EQ(k->version, "6.10.0-1-amd64");
  EXPECT_EQ(k->path, "boot/vmlinuz-6.10.0-1-amd64");
  // Fedora's place.
  fs::create_directories(root / "usr/lib/modules/6.12.5-200.fc41.x86_64");
  test::WriteBytes(root / "usr/lib/modules/6.12.5-200.fc41.x86_64/vmlinuz", "k");
  EXPECT_EQ(FindTreeKernel(root)->path, "usr/lib/modules/6.12.5-200.fc41.x86_64/vmlinuz");
  // /boot pointing at the host's: resolved inside the tree, where it is not.
  const fs::path outside = dir.path() / "outside";
  fs::create_directories(outside);
  test::WriteBytes(outside / "vmlinuz-99.0", "host");
  fs::remove_all(root / "boot");
  fs::remove_all(root / "usr");
  fs::create_directory_symlink(outside, root / "boot");
  EXPECT_FALSE(FindTreeKernel(root));
}

TEST(TreeKernelTest, TheInitrdIsEphemerasWithTheTreeKernelsModulesInOrder) {
  test::TempDir dir;
  const fs::path root = dir.path() / "root", out = dir.path() / "out";
  const std::string version = "6.1.0-9-amd64";
  const fs::path moddir = root / "lib/modules" / version;
  fs::create_directories(moddir / "kernel");
  fs::create_directories(out);
  fs::create_directories(root / "boot");
  const std::string elf = MakeElf(18);
  test::WriteBytes(root / "boot" / ("vmlinuz-" + version),
                   MakeBzImage(Compress(elf, archive_write_add_filter_xz), elf.size()));
  std::string dep;
  for (const char* m : {"virtio_mmio", "virtio_pci", "virtio_blk", "crc32c_generic", "virtio_net",
                        "qemu_fw_cfg", "jbd2"}) {
    test::WriteBytes(moddir / "kernel" / (std::string(m) + ".ko"), std::string("module ") + m);
    dep += "kernel/" + std::string(m) + ".ko:\n";
  }
  // ext4 is xz-compressed, as some distributions ship modules.
  test::WriteBytes(moddir / "kernel/ext4.ko.xz",
                   Compress("module ext4", archive_write_add_filter_xz));
  dep += "kernel/ext4.ko.xz: kernel/jbd2.ko\n";
  test::WriteBytes(moddir / "modules.dep", dep);
  const fs::path base = dir.path() / "base.img";
  WriteCpio(base, {{"init", "#!/bin/sh"},
                   {"bin/busybox", "busybox"},
                   {"lib/modules/old.ko", "the default kernel's"},
                   {"lib/modules/load.order", "old.ko\n"}});

  ExtractTreeKernel(root, *FindTreeKernel(root), base, out, "docker-archive:debian.tar");
  EXPECT_EQ(ReadFile(out / "vmlinux"), elf);
  std::map<std::string, std::string> initrd = ReadCpio(out / "initrd.img");
  EXPECT_EQ(initrd["init"], "#!/bin/sh");
  EXPECT_EQ(initrd["bin/busybox"], "busybox");
  EXPECT_FALSE(initrd.count("lib/modules/old.ko"));
  EXPECT_EQ(initrd["lib/modules/ext4.ko"], "module ext4");  // decompressed
  EXPECT_EQ(initrd["lib/modules/virtio_blk.ko"], "module virtio_blk");
  EXPECT_EQ(initrd["lib/modules/load.order"],
            "virtio_mmio.ko\nvirtio_pci.ko\nvirtio_blk.ko\ncrc32c_generic.ko\njbd2.ko\next4.ko\n"
            "virtio_net.ko\nqemu_fw_cfg.ko\n");

  // Without modules.dep (depmod never ran), or without a module: named.
  fs::remove(moddir / "modules.dep");
  EXPECT_THAT(
      ErrorOf([&] { ExtractTreeKernel(root, *FindTreeKernel(root), base, out, "r"); }).what(),
      HasSubstr("modules.dep is missing"));
}

}  // namespace
}  // namespace ephemera::oci
