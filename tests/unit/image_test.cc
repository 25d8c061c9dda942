#include <gtest/gtest.h>

#include <filesystem>
#include <thread>

#include "core/error.h"
#include "core/fs.h"
#include "core/sha256.h"
#include "image/catalog.h"
#include "image/file_probe.h"
#include "unit/test_files.h"

namespace ephemera {
namespace {

namespace fs = std::filesystem;
using test::TempDir;

// Expects catalog.Get(name) to fail with `code` and `needle` in the message.
void ExpectGetError(ImageCatalog& catalog, const std::string& name, ErrorCode code,
                    const std::string& needle) {
  try {
    catalog.Get(name);
    ADD_FAILURE() << "loaded " << name;
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), code) << e.what();
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(Sha256Test, KnownVector) {
  EXPECT_EQ(Sha256Hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  TempDir dir;
  test::WriteBytes(dir.path() / "f", "abc");
  EXPECT_EQ(Sha256File(dir.path() / "f"), Sha256Hex("abc"));
}

TEST(FileProbeTest, RecognisesHeaders) {
  TempDir dir;
  test::WriteFakeElf(dir.path() / "elf");
  test::WriteFakeExt4(dir.path() / "ext4");
  test::WriteFakeIso(dir.path() / "iso");
  test::WriteBytes(dir.path() / "qcow", std::string("QFI\xfb", 4) + std::string(100, '\0'));
  test::WriteBytes(dir.path() / "junk", "not an image at all");
  EXPECT_EQ(ProbeFileKind(dir.path() / "elf"), FileKind::kElf);
  EXPECT_EQ(ProbeFileKind(dir.path() / "ext4"), FileKind::kExt4);
  EXPECT_EQ(ProbeFileKind(dir.path() / "iso"), FileKind::kIso9660);
  EXPECT_EQ(ProbeFileKind(dir.path() / "qcow"), FileKind::kQcow2);
  EXPECT_EQ(ProbeFileKind(dir.path() / "junk"), FileKind::kUnknown);
}

TEST(CatalogTest, LoadsKernelImageWithDigests) {
  TempDir dir;
  fs::path image_dir = test::MakeFakeKernelImage(dir.path(), "default-abc");
  fs::create_directory_symlink("default-abc", dir.path() / "default");
  ImageCatalog catalog(dir.path());
  Image image = catalog.Get("default");
  EXPECT_EQ(image.version, 3);
  EXPECT_EQ(image.format, ImageFormat::kKernel);
  EXPECT_EQ(image.dir, fs::canonical(image_dir));
  EXPECT_EQ(image.rootfs_format, DiskFormat::kRaw);
  EXPECT_EQ(image.rootfs->sha256, Sha256File(image_dir / "rootfs.ext4"));
  EXPECT_EQ(image.PrimarySha256(), image.rootfs->sha256);
  EXPECT_EQ(image.cmdline, "console=ttyS0 root=/dev/vda rw");
  EXPECT_EQ(image.tcg_tb_size_mib, 0u);  // none asked: the configured one
  // The folder the name points at is that name's, not a second image.
  EXPECT_EQ(catalog.List(), (std::vector<std::string>{"default"}));
}

TEST(CatalogTest, DigestIsCachedUntilTheFileChanges) {
  TempDir dir;
  fs::path image_dir = test::MakeFakeKernelImage(dir.path(), "img");
  {
    ImageCatalog catalog(dir.path());
    catalog.Get("img");
  }
  ASSERT_TRUE(fs::exists(image_dir / "sha256sums.json"));
  // A new catalog (a restarted daemon) trusts the sidecar for an unchanged
  // file: poison the cached value and see it come back.
  std::string sidecar = ReadFile(image_dir / "sha256sums.json");
  std::string real = Sha256File(image_dir / "initrd.img");
  auto pos = sidecar.find(real);
  ASSERT_NE(pos, std::string::npos);
  sidecar.replace(pos, real.size(), std::string(64, 'f'));
  WriteFileAtomic(image_dir / "sha256sums.json", sidecar, 0644);
  EXPECT_EQ(ImageCatalog(dir.path()).Get("img").initrd->sha256, std::string(64, 'f'));
  // Rewriting the file (new size) invalidates the entry.
  test::WriteBytes(image_dir / "initrd.img", "a different initrd");
  EXPECT_EQ(ImageCatalog(dir.path()).Get("img").initrd->sha256, Sha256Hex("a different initrd"));
}

TEST(CatalogTest, LoadsIsoImage) {
  TempDir dir;
  fs::create_directories(dir.path() / "anweddol");
  test::WriteFakeIso(dir.path() / "anweddol" / "live.iso");
  test::WriteBytes(dir.path() / "anweddol" / "manifest.json",
                   R"({"version":7,"format":"iso","iso":"live.iso"})");
  Image image = ImageCatalog(dir.path()).Get("anweddol");
  EXPECT_EQ(image.format, ImageFormat::kIso);
  EXPECT_EQ(image.PrimarySha256(), image.iso->sha256);
}

TEST(Md5Test, KnownVector) {
  TempDir dir;
  test::WriteBytes(dir.path() / "f", "abc");
  EXPECT_EQ(Md5File(dir.path() / "f"), "900150983cd24fb0d6963f7d28e17f72");
}

// An Anweddol mirror directory: the ISO, its checksum lists and version.
fs::path MakeMirror(const fs::path& root, const std::string& name) {
  fs::path d = root / name;
  fs::create_directories(d);
  test::WriteFakeIso(d / "anweddol_container.iso");
  test::WriteBytes(d / "sha256sum.txt",
                   Sha256File(d / "anweddol_container.iso") + "  anweddol_container.iso\n");
  test::WriteBytes(d / "md5sum.txt",
                   Md5File(d / "anweddol_container.iso") + " *anweddol_container.iso\n");
  test::WriteBytes(d / "version.txt", "1.2.3\n");
  return d;
}

TEST(CatalogTest, LoadsAnAnweddolMirrorAndChecksItsChecksums) {
  TempDir dir;
  fs::path d = MakeMirror(dir.path(), "anweddol");
  ImageCatalog catalog(dir.path());
  EXPECT_EQ(catalog.List(), std::vector<std::string>{"anweddol"});
  Image image = catalog.Get("anweddol");
  EXPECT_EQ(image.format, ImageFormat::kIso);
  EXPECT_EQ(image.layout, ImageLayout::kAnweddolMirror);
  EXPECT_EQ(image.version_label, "1.2.3");
  EXPECT_EQ(image.version, 1);
  EXPECT_FALSE(image.takes_endpoint_key);
  EXPECT_EQ(image.iso->path, fs::canonical(d) / "anweddol_container.iso");
  EXPECT_EQ(image.PrimarySha256(), Sha256File(d / "anweddol_container.iso"));

  // A bare digest (as many mirrors publish) is accepted; uppercase too.
  std::string sha = Sha256File(d / "anweddol_container.iso");
  for (char& c : sha) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  test::WriteBytes(d / "sha256sum.txt", sha + "\r\n");
  EXPECT_NO_THROW(catalog.Get("anweddol"));

  test::WriteBytes(d / "sha256sum.txt", std::string(64, 'a') + "  anweddol_container.iso\n");
  ExpectGetError(catalog, "anweddol", ErrorCode::kFailedPrecondition,
                 "does not match sha256sum.txt");
  test::WriteBytes(d / "sha256sum.txt", std::string(64, 'a') + "  other.iso\n");
  ExpectGetError(catalog, "anweddol", ErrorCode::kFailedPrecondition,
                 "has no digest for anweddol_container.iso");
  test::WriteBytes(d / "sha256sum.txt", "not-a-digest  anweddol_container.iso\n");
  ExpectGetError(catalog, "anweddol", ErrorCode::kFailedPrecondition, "not a 64-digit hex digest");
  fs::remove(d / "sha256sum.txt");
  ExpectGetError(catalog, "anweddol", ErrorCode::kFailedPrecondition, "sha256sum.txt");

  MakeMirror(dir.path(), "anweddol");
  test::WriteBytes(d / "md5sum.txt", std::string(32, '0') + "\n");
  ExpectGetError(catalog, "anweddol", ErrorCode::kFailedPrecondition, "md5sum.txt");
  fs::remove(d / "md5sum.txt");  // optional
  EXPECT_NO_THROW(catalog.Get("anweddol"));

  test::WriteBytes(d / "version.txt", "\n");
  ExpectGetError(catalog, "anweddol", ErrorCode::kFailedPrecondition, "version.txt");
  test::WriteBytes(d / "version.txt", "1.0 beta\n");
  ExpectGetError(catalog, "anweddol", ErrorCode::kFailedPrecondition, "one version word");
  fs::remove(d / "version.txt");
  ExpectGetError(catalog, "anweddol", ErrorCode::kFailedPrecondition, "version.txt");

  // ListLoaded names the bad one with its error, and the good ones still load.
  MakeMirror(dir.path(), "good");
  auto entries = catalog.ListLoaded();
  ASSERT_EQ(entries.size(), 2u);
  EXPECT_EQ(entries[0].name, "anweddol");
  EXPECT_FALSE(entries[0].image);
  EXPECT_NE(entries[0].error.find("version.txt"), std::string::npos);
  EXPECT_TRUE(entries[1].image);
}

TEST(CatalogTest, AnIsoManifestMayPinItsDigestAndDeclareThePasswordEndpoint) {
  TempDir dir;
  fs::path d = dir.path() / "iso";
  fs::create_directories(d);
  test::WriteFakeIso(d / "live.iso");
  const std::string sha = Sha256File(d / "live.iso");
  test::WriteBytes(d / "manifest.json",
                   R"({"version": 2, "format": "iso", "iso": "live.iso", "endpoint": "password",
                       "sha256": ")" +
                       sha + "\"}");
  ImageCatalog catalog(dir.path());
  Image image = catalog.Get("iso");
  EXPECT_FALSE(image.takes_endpoint_key);
  EXPECT_EQ(image.version_label, "2");
  test::WriteBytes(d / "manifest.json",
                   R"({"version": 2, "format": "iso", "iso": "live.iso", "sha256": ")" +
                       std::string(64, 'b') + "\"}");
  ExpectGetError(catalog, "iso", ErrorCode::kFailedPrecondition, "does not match the manifest");
  test::WriteBytes(d / "manifest.json",
                   R"({"version": 2, "format": "iso", "iso": "live.iso", "endpoint": "telnet"})");
  ExpectGetError(catalog, "iso", ErrorCode::kFailedPrecondition, "'endpoint'");
}

TEST(CatalogTest, RemoveTakesTheLinkAndItsFolderAndPruneKeepsWhatIsLinkedOrInUse) {
  TempDir dir;
  for (const char* folder :
       {"kt-aaaaaaaaaaaa", "kt-bbbbbbbbbbbb", "kt-cccccccccccc", "other-ddd"}) {
    test::MakeFakeKernelImage(dir.path(), folder);
  }
  fs::create_directory_symlink("kt-cccccccccccc", dir.path() / "kt");
  ImageCatalog catalog(dir.path());
  // b is in use, c is linked, other-ddd is not a NAME-<hash12> folder: only a goes.
  auto removed = catalog.Prune([](const std::string& f) { return f == "kt-bbbbbbbbbbbb"; });
  EXPECT_EQ(removed, std::vector<std::string>{"kt-aaaaaaaaaaaa"});
  EXPECT_TRUE(fs::exists(dir.path() / "kt-bbbbbbbbbbbb"));
  EXPECT_TRUE(fs::exists(dir.path() / "other-ddd"));
  catalog.Remove("kt");
  EXPECT_FALSE(fs::exists(fs::symlink_status(dir.path() / "kt")));
  EXPECT_FALSE(fs::exists(dir.path() / "kt-cccccccccccc"));
  ExpectGetError(catalog, "kt", ErrorCode::kNotFound, "not found");
  try {
    catalog.Remove("kt");
    ADD_FAILURE() << "removed twice";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kNotFound);
  }
}

TEST(CatalogTest, BadImagesGiveClearErrors) {
  TempDir dir;
  ImageCatalog catalog(dir.path());
  ExpectGetError(catalog, "../etc", ErrorCode::kInvalidArgument, "not a valid image name");
  ExpectGetError(catalog, "absent", ErrorCode::kNotFound, "image 'absent' not found");

  fs::path img = test::MakeFakeKernelImage(dir.path(), "nokernel");
  fs::remove(img / "vmlinux");
  ExpectGetError(catalog, "nokernel", ErrorCode::kNotFound, "kernel file");

  img = test::MakeFakeKernelImage(dir.path(), "badroot");
  test::WriteBytes(img / "rootfs.ext4", std::string(8192, 'x'));
  ExpectGetError(catalog, "badroot", ErrorCode::kFailedPrecondition, "not a usable rootfs");

  img = test::MakeFakeKernelImage(dir.path(), "emptyinitrd");
  test::WriteBytes(img / "initrd.img", "");
  ExpectGetError(catalog, "emptyinitrd", ErrorCode::kFailedPrecondition, "is empty");

  img = test::MakeFakeKernelImage(dir.path(), "escape");
  test::WriteBytes(
      img / "manifest.json",
      R"({"version":1,"format":"kernel","kernel":"../../vmlinux","initrd":"i","rootfs":"r"})");
  ExpectGetError(catalog, "escape", ErrorCode::kFailedPrecondition, "inside the image directory");

  img = test::MakeFakeKernelImage(dir.path(), "badjson");
  test::WriteBytes(img / "manifest.json", "{not json");
  ExpectGetError(catalog, "badjson", ErrorCode::kFailedPrecondition, "not valid JSON");

  img = test::MakeFakeKernelImage(dir.path(), "noversion");
  test::WriteBytes(img / "manifest.json", R"({"format":"kernel"})");
  ExpectGetError(catalog, "noversion", ErrorCode::kFailedPrecondition, "'version'");

  img = test::MakeFakeKernelImage(dir.path(), "badformat");
  test::WriteBytes(img / "manifest.json", R"({"version":1,"format":"floppy"})");
  ExpectGetError(catalog, "badformat", ErrorCode::kFailedPrecondition, "'format' is 'floppy'");

  for (const char* tb : {"8", "4096", "\"128\"", "-1", "64.5"}) {
    img = test::MakeFakeKernelImage(dir.path(), "badtb");
    test::WriteBytes(img / "manifest.json",
                     std::string(R"({"version":1,"format":"kernel","kernel":"vmlinux",)") +
                         R"("initrd":"initrd.img","rootfs":"rootfs.ext4","tcg_tb_size_mib":)" + tb +
                         "}");
    ExpectGetError(catalog, "badtb", ErrorCode::kFailedPrecondition,
                   "'tcg_tb_size_mib' must be an integer from 16 to 2048");
  }
  test::WriteBytes(img / "manifest.json",
                   R"({"version":1,"format":"kernel","kernel":"vmlinux","initrd":"initrd.img",)"
                   R"("rootfs":"rootfs.ext4","tcg_tb_size_mib":128})");
  EXPECT_EQ(catalog.Get("badtb").tcg_tb_size_mib, 128u);
}

TEST(CatalogTest, ConcurrentGetsAgree) {
  TempDir dir;
  test::MakeFakeKernelImage(dir.path(), "img");
  ImageCatalog catalog(dir.path());
  std::vector<std::string> digests(8);
  std::vector<std::thread> threads;
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&, i] { digests[i] = catalog.Get("img").rootfs->sha256; });
  }
  for (auto& t : threads) t.join();
  for (const auto& d : digests) EXPECT_EQ(d, digests[0]);
}

}  // namespace
}  // namespace ephemera
