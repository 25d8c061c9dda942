// OCI image pieces: digests, manifests and indexes, and layers applied to a
// root filesystem tree (real tar archives, written here with libarchive).
#include <archive.h>
#include <archive_entry.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "core/fs.h"
#include "core/sha256.h"
#include "core/subprocess.h"
#include "image/file_probe.h"
#include "image/oci/digest.h"
#include "image/oci/layer_reader.h"
#include "image/oci/manifest.h"
#include "image/oci/rootfs_image.h"
#include "image/oci/source.h"
#include "unit/test_files.h"

namespace ephemera::oci {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

template <typename F>
std::string ErrorOf(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

// A tar layer written entry by entry.
class Tar {
 public:
  explicit Tar(const fs::path& file, bool gzip = false) : a_(archive_write_new()) {
    archive_write_set_format_pax_restricted(a_);
    if (gzip) archive_write_add_filter_gzip(a_);
    archive_write_open_filename(a_, file.c_str());
  }
  ~Tar() { Close(); }
  void Close() {
    if (!a_) return;
    archive_write_close(a_);
    archive_write_free(a_);
    a_ = nullptr;
  }
  Tar& Dir(const std::string& path, int mode = 0755) { return Add(path, AE_IFDIR, mode, ""); }
  Tar& File(const std::string& path, const std::string& content, int mode = 0644, int uid = 0,
            int gid = 0, std::pair<std::string, std::string> xattr = {}) {
    return Add(path, AE_IFREG, mode, content, uid, gid, "", "", xattr);
  }
  Tar& Symlink(const std::string& path, const std::string& target) {
    return Add(path, AE_IFLNK, 0777, "", 0, 0, target);
  }
  Tar& Hardlink(const std::string& path, const std::string& target) {
    return Add(path, AE_IFREG, 0644, "", 0, 0, "", target);
  }
  Tar& Node(const std::string& path, mode_t type, dev_t dev) {
    archive_entry* e = archive_entry_new();
    archive_entry_set_pathname(e, path.c_str());
    archive_entry_set_filetype(e, type);
    archive_entry_set_perm(e, 0660);
    archive_entry_set_rdev(e, dev);
    archive_write_header(a_, e);
    archive_entry_free(e);
    return *this;
  }

 private:
  Tar& Add(const std::string& path, mode_t type, int mode, const std::string& content, int uid = 0,
           int gid = 0, const std::string& symlink = "", const std::string& hardlink = "",
           const std::pair<std::string, std::string>& xattr = {}) {
    archive_entry* e = archive_entry_new();
    archive_entry_set_pathname(e, path.c_str());
    archive_entry_set_filetype(e, type);
    archive_entry_set_perm(e, mode);
    archive_entry_set_uid(e, uid);
    archive_entry_set_gid(e, gid);
    archive_entry_set_mtime(e, 1700000000, 0);
    if (!symlink.empty()) archive_entry_set_symlink(e, symlink.c_str());
    if (!hardlink.empty()) archive_entry_set_hardlink(e, hardlink.c_str());
    if (!xattr.first.empty()) {
      archive_entry_xattr_add_entry(e, xattr.first.c_str(), xattr.second.data(),
                                    xattr.second.size());
    }
    archive_entry_set_size(e, hardlink.empty() ? content.size() : 0);
    archive_write_header(a_, e);
    if (!content.empty() && hardlink.empty())
      archive_write_data(a_, content.data(), content.size());
    archive_entry_free(e);
    return *this;
  }
  archive* a_;
};

TEST(DigestTest, ParsesOnlySha256AndVerifiesWhileStreaming) {
  const std::string hex = Sha256Hex("hello");
  EXPECT_EQ(Digest::Parse("sha256:" + hex).hex, hex);
  EXPECT_THAT(ErrorOf([] { Digest::Parse("sha512:abc"); }), HasSubstr("not a sha256 digest"));
  EXPECT_THAT(ErrorOf([&] { Digest::Parse("sha256:" + hex.substr(1)); }),
              HasSubstr("not a sha256"));
  EXPECT_THAT(ErrorOf([] { Digest::Parse("sha256:" + std::string(64, 'A')); }),
              HasSubstr("not a sha256"));

  DigestVerifier ok(Digest::Parse("sha256:" + hex), 5, "blob x");
  ok.Update("hel", 3);
  ok.Update("lo", 2);
  EXPECT_NO_THROW(ok.Finish());
  DigestVerifier wrong(Digest::Parse("sha256:" + hex), 5, "blob x");
  wrong.Update("jello", 5);
  EXPECT_THAT(ErrorOf([&] { wrong.Finish(); }), HasSubstr("blob x: its content has digest"));
  DigestVerifier longer(Digest::Parse("sha256:" + hex), 5, "blob x");
  EXPECT_THAT(ErrorOf([&] { longer.Update("hello!", 6); }), HasSubstr("more than the 5 bytes"));
  DigestVerifier shorter(Digest::Parse("sha256:" + hex), 5, "blob x");
  shorter.Update("hell", 4);
  EXPECT_THAT(ErrorOf([&] { shorter.Finish(); }),
              HasSubstr("4 bytes where its descriptor gives 5"));
}

std::string Desc(const std::string& type, char fill, std::uint64_t size,
                 const std::string& platform = "") {
  return R"({"mediaType":")" + type + R"(","digest":"sha256:)" + std::string(64, fill) +
         R"(","size":)" + std::to_string(size) + platform + "}";
}

TEST(ManifestTest, ParsesOciAndDockerManifestsStrictly) {
  const std::string body =
      R"({"schemaVersion":2,"mediaType":")" + std::string(kOciManifest) + R"(","config":)" +
      Desc("application/vnd.oci.image.config.v1+json", 'c', 100) + R"(,"layers":[)" +
      Desc("application/vnd.oci.image.layer.v1.tar+gzip", 'a', 10) + "," +
      Desc("application/vnd.oci.image.layer.v1.tar+zstd", 'b', 20) + "," +
      Desc("application/vnd.oci.image.layer.v1.tar", 'd', 30) + "]}";
  EXPECT_EQ(ClassifyManifest(body), ManifestKind::kManifest);
  ImageManifest m = ParseImageManifest(body);
  EXPECT_EQ(m.config.size, 100u);
  ASSERT_EQ(m.layers.size(), 3u);
  EXPECT_EQ(m.layers[0].compression, LayerCompression::kGzip);
  EXPECT_EQ(m.layers[1].compression, LayerCompression::kZstd);
  EXPECT_EQ(m.layers[2].compression, LayerCompression::kNone);
  EXPECT_EQ(m.layers[1].descriptor.digest.hex, std::string(64, 'b'));

  const std::string docker =
      R"({"schemaVersion":2,"mediaType":")" + std::string(kDockerManifest) + R"(","config":)" +
      Desc("application/vnd.docker.container.image.v1+json", 'c', 1) + R"(,"layers":[)" +
      Desc("application/vnd.docker.image.rootfs.diff.tar.gzip", 'a', 1) + "]}";
  EXPECT_EQ(ClassifyManifest(docker), ManifestKind::kManifest);
  EXPECT_EQ(ParseImageManifest(docker).layers[0].compression, LayerCompression::kGzip);

  auto with_layer = [](const std::string& layer) {
    return R"({"schemaVersion":2,"config":)" +
           Desc("application/vnd.oci.image.config.v1+json", 'c', 1) + R"(,"layers":[)" + layer +
           "]}";
  };
  EXPECT_THAT(ErrorOf([&] {
                ParseImageManifest(with_layer(
                    Desc("application/vnd.oci.image.layer.nondistributable.v1.tar+gzip", 'a', 1)));
              }),
              HasSubstr("foreign layer"));
  EXPECT_THAT(ErrorOf([&] { ParseImageManifest(with_layer(Desc("text/plain", 'a', 1))); }),
              HasSubstr("not a tar layer"));
  EXPECT_THAT(ErrorOf([&] {
                ParseImageManifest(with_layer(R"({"mediaType":"application/vnd.oci.image.layer.)"
                                              R"(v1.tar","digest":"sha256:xyz","size":1})"));
              }),
              HasSubstr("layer 1"));
  EXPECT_THAT(ErrorOf([&] {
                ParseImageManifest(with_layer(R"({"mediaType":"application/vnd.oci.image.layer.)"
                                              R"(v1.tar","digest":"sha256:)" +
                                              std::string(64, 'a') + R"(","size":-1})"));
              }),
              HasSubstr("'size' must be a byte count"));
  EXPECT_THAT(ErrorOf([] { ParseImageManifest("{oops"); }), HasSubstr("not valid JSON"));
  EXPECT_THAT(ErrorOf([] { ParseImageManifest(R"({"schemaVersion":1})"); }),
              HasSubstr("schemaVersion must be 2"));
  EXPECT_THAT(ErrorOf([] {
                ClassifyManifest("{}", "application/vnd.docker.distribution.manifest.v1+json");
              }),
              HasSubstr("not supported"));
  EXPECT_THAT(ErrorOf([] { ClassifyManifest(R"({"mediaType":1})"); }),
              HasSubstr("'mediaType' must be a string"));
}

TEST(ManifestTest, AnIndexResolvesToLinuxAmd64OrSaysWhatItHas) {
  const std::string arm = R"(,"platform":{"os":"linux","architecture":"arm64","variant":"v8"})";
  const std::string amd = R"(,"platform":{"os":"linux","architecture":"amd64"})";
  const std::string body = R"({"schemaVersion":2,"mediaType":")" + std::string(kOciIndex) +
                           R"(","manifests":[)" + Desc(std::string(kOciManifest), 'a', 5, arm) +
                           "," + Desc(std::string(kOciManifest), 'b', 6, amd) + "]}";
  EXPECT_EQ(ClassifyManifest(body), ManifestKind::kIndex);
  EXPECT_EQ(ClassifyManifest("", "application/vnd.docker.distribution.manifest.list.v2+json"),
            ManifestKind::kIndex);
  ImageIndex index = ParseImageIndex(body);
  EXPECT_EQ(SelectPlatform(index).digest.hex, std::string(64, 'b'));
  ImageIndex arm_only =
      ParseImageIndex(R"({"manifests":[)" + Desc(std::string(kOciManifest), 'a', 5, arm) + "]}");
  EXPECT_EQ(ClassifyManifest(R"({"manifests":[]})"), ManifestKind::kIndex);
  try {
    SelectPlatform(arm_only);
    ADD_FAILURE() << "selected a manifest for another architecture";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kNotFound);
    EXPECT_THAT(e.what(), HasSubstr("no linux/amd64 manifest (it has: linux/arm64)"));
  }
}

TEST(ManifestTest, ParsesDockerSaveManifest) {
  auto images = ParseDockerArchiveManifest(
      R"([{"Config":"abc.json","RepoTags":["repo:tag"],"Layers":["l1/layer.tar","l2/layer.tar"]}])");
  ASSERT_EQ(images.size(), 1u);
  EXPECT_EQ(images[0].config, "abc.json");
  EXPECT_EQ(images[0].repo_tags, std::vector<std::string>{"repo:tag"});
  EXPECT_EQ(images[0].layers.size(), 2u);
  EXPECT_THAT(ErrorOf([] { ParseDockerArchiveManifest("[]"); }), HasSubstr("non-empty array"));
  EXPECT_THAT(ErrorOf([] { ParseDockerArchiveManifest(R"([{"Config":"a","Layers":[1]}])"); }),
              HasSubstr("a layer is not a string"));
}

TEST(LayerPathTest, NormalizesAndRefusesDotDot) {
  EXPECT_EQ(NormalizeEntryPath("./a//b/"), "a/b");
  EXPECT_EQ(NormalizeEntryPath("/etc/passwd"), "etc/passwd");
  EXPECT_EQ(NormalizeEntryPath("./"), "");
  EXPECT_THAT(ErrorOf([] { NormalizeEntryPath("a/../../etc"); }), HasSubstr("'..'"));
}

class LayerTest : public ::testing::Test {
 protected:
  fs::path Root() const { return dir_.path() / "root"; }
  fs::path LayerFile(const std::string& name) const { return dir_.path() / name; }
  void SetUp() override { fs::create_directory(Root()); }
  test::TempDir dir_;
};

TEST_F(LayerTest, KeepsEveryKindOfEntryWithItsMetadata) {
  {
    Tar t(LayerFile("l1.tar.gz"), /*gzip=*/true);
    t.Dir("etc").File("etc/hostname", "box\n", 0644, 0, 0, {"user.origin", "layer1"});
    t.File("usr/bin/tool", "#!/bin/sh\n", 04755, 0, 0);  // its folders are not in the archive
    t.File("home/user/notes", "mine", 0600, 1000, 1000);
    t.Symlink("etc/localtime", "/usr/share/zoneinfo/UTC");
    t.Hardlink("usr/bin/tool-again", "usr/bin/tool");
    t.Node("dev/null", AE_IFCHR, makedev(1, 3));
    t.Node("run/fifo", AE_IFIFO, 0);
  }
  RootfsWriter writer(Root());
  LayerStats stats = writer.Apply(LayerFile("l1.tar.gz"), "layer 1");
  EXPECT_EQ(stats.entries, 8u);
  EXPECT_EQ(ReadFile(Root() / "etc/hostname"), "box\n");
  char value[16] = {};
  ASSERT_EQ(::getxattr((Root() / "etc/hostname").c_str(), "user.origin", value, sizeof value), 6);
  EXPECT_STREQ(value, "layer1");
  struct stat st {};
  ASSERT_EQ(::stat((Root() / "usr/bin/tool").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 04755u);
  EXPECT_EQ(st.st_nlink, 2u);
  struct stat again {};
  ASSERT_EQ(::stat((Root() / "usr/bin/tool-again").c_str(), &again), 0);
  EXPECT_EQ(again.st_ino, st.st_ino);
  ASSERT_EQ(::stat((Root() / "usr/bin").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0755u);
  ASSERT_EQ(::stat((Root() / "home/user/notes").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 1000u);
  EXPECT_EQ(st.st_gid, 1000u);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  EXPECT_EQ(st.st_mtim.tv_sec, 1700000000);
  EXPECT_EQ(fs::read_symlink(Root() / "etc/localtime"), "/usr/share/zoneinfo/UTC");
  ASSERT_EQ(::lstat((Root() / "dev/null").c_str(), &st), 0);
  EXPECT_TRUE(S_ISCHR(st.st_mode));
  EXPECT_EQ(st.st_rdev, makedev(1, 3));
  ASSERT_EQ(::lstat((Root() / "run/fifo").c_str(), &st), 0);
  EXPECT_TRUE(S_ISFIFO(st.st_mode));
}

TEST_F(LayerTest, WhiteoutsAndOpaqueDirectoriesHideOnlyTheLayersBelow) {
  {
    Tar t(LayerFile("l1.tar"));
    t.File("etc/old", "gone soon").File("etc/kept", "stays");
    t.File("var/cache/a", "a").File("var/cache/sub/b", "b");
    t.File("opt/file-then-dir", "a file");
  }
  {
    Tar t(LayerFile("l2.tar"));
    t.File("etc/.wh.old", "");
    t.Dir("var/cache").File("var/cache/.wh..wh..opq", "").File("var/cache/new", "new");
    t.Dir("opt/file-then-dir").File("opt/file-then-dir/inside", "x");
    t.File("etc/.wh.never-there", "");
  }
  RootfsWriter writer(Root());
  writer.Apply(LayerFile("l1.tar"), "layer 1");
  writer.Apply(LayerFile("l2.tar"), "layer 2");
  EXPECT_FALSE(fs::exists(Root() / "etc/old"));
  EXPECT_FALSE(fs::exists(Root() / "etc/.wh.old"));
  EXPECT_EQ(ReadFile(Root() / "etc/kept"), "stays");
  EXPECT_FALSE(fs::exists(Root() / "var/cache/a"));
  EXPECT_FALSE(fs::exists(Root() / "var/cache/sub"));
  EXPECT_FALSE(fs::exists(Root() / "var/cache/.wh..wh..opq"));
  EXPECT_EQ(ReadFile(Root() / "var/cache/new"), "new");
  EXPECT_EQ(ReadFile(Root() / "opt/file-then-dir/inside"), "x");
}

TEST_F(LayerTest, NothingLandsOutsideTheRoot) {
  const fs::path outside = dir_.path() / "outside";
  fs::create_directory(outside);
  {
    Tar t(LayerFile("l1.tar"));
    t.Symlink("escape", "/");                                  // absolute: the root, inside
    t.Symlink("up", "../../../../../../" + outside.string());  // climbs no higher than the root
    t.Symlink("abs", outside.string());
  }
  {
    Tar t(LayerFile("l2.tar"));
    t.File("escape/etc/pwned", "x");
  }
  {
    Tar t(LayerFile("l3.tar"));
    t.File("up/pwned", "x").File("abs/pwned", "x");
  }
  RootfsWriter writer(Root());
  writer.Apply(LayerFile("l1.tar"), "layer 1");
  writer.Apply(LayerFile("l2.tar"), "layer 2");
  EXPECT_EQ(ReadFile(Root() / "etc/pwned"), "x");
  // Both links lead to a folder that the root does not have (they would
  // to one of the host's): refused, not followed out.
  EXPECT_THAT(ErrorOf([&] { writer.Apply(LayerFile("l3.tar"), "layer 3"); }),
              HasSubstr("layer 3: entry 'up/pwned': 'up' does not lead to a folder in the root"));
  EXPECT_TRUE(fs::is_empty(outside));
  // Once the root has it, both land there, inside.
  fs::create_directories(Root() / outside.relative_path());
  writer.Apply(LayerFile("l3.tar"), "layer 3");
  EXPECT_TRUE(fs::is_empty(outside));
  EXPECT_EQ(ReadFile(Root() / outside.relative_path() / "pwned"), "x");

  {
    Tar t(LayerFile("dotdot.tar"));
    t.File("a/../../evil", "x");
  }
  EXPECT_THAT(ErrorOf([&] { writer.Apply(LayerFile("dotdot.tar"), "layer 5"); }),
              HasSubstr("layer 5: entry 'a/../../evil' escapes the root"));
  {
    Tar t(LayerFile("link.tar"));
    t.Hardlink("passwd", "../../etc/passwd");
  }
  EXPECT_THAT(ErrorOf([&] { writer.Apply(LayerFile("link.tar"), "layer 4"); }),
              HasSubstr("layer 4: hard link 'passwd' escapes the root"));
  EXPECT_FALSE(fs::exists(dir_.path() / "evil"));
}

TEST_F(LayerTest, CorruptTruncatedAndOversizedLayersAreNamed) {
  {
    Tar t(LayerFile("big.tar.gz"), true);
    t.File("a", std::string(100000, 'a')).File("b", std::string(100000, 'b'));
  }
  std::string bytes = ReadFile(LayerFile("big.tar.gz"));
  test::WriteBytes(LayerFile("cut.tar.gz"), bytes.substr(0, bytes.size() / 2));
  std::string flipped = bytes;
  for (std::size_t i = 20; i < 60; ++i) flipped[i] = static_cast<char>(~flipped[i]);
  test::WriteBytes(LayerFile("bad.tar.gz"), flipped);
  RootfsWriter writer(Root());
  EXPECT_THAT(ErrorOf([&] { writer.Apply(LayerFile("cut.tar.gz"), "layer cut"); }),
              HasSubstr("layer cut: corrupt or truncated layer"));
  EXPECT_THAT(ErrorOf([&] { writer.Apply(LayerFile("bad.tar.gz"), "layer bad"); }),
              HasSubstr("layer bad: corrupt or truncated layer"));
  test::TempDir other;
  RootfsWriter small(other.path(), LayerLimits{150000, 100});
  EXPECT_THAT(ErrorOf([&] { small.Apply(LayerFile("big.tar.gz"), "layer big"); }),
              HasSubstr("layer big: more than 150000 bytes"));
  EXPECT_EQ(writer.Apply(LayerFile("big.tar.gz"), "layer ok").bytes, 200000u);
}

TEST(ImageReferenceTest, ParsesEachTransportAndNamesWhatIsWrong) {
  ImageReference oci = ImageReference::Parse("oci:/srv/images/debian:bookworm");
  EXPECT_EQ(oci.transport, ImageReference::Transport::kOciLayout);
  EXPECT_EQ(oci.path, "/srv/images/debian");
  EXPECT_EQ(oci.tag, "bookworm");
  EXPECT_EQ(ImageReference::Parse("oci:./layout").tag, "");
  ImageReference archive = ImageReference::Parse("docker-archive:/tmp/x.tar");
  EXPECT_EQ(archive.transport, ImageReference::Transport::kDockerArchive);
  EXPECT_EQ(archive.path, "/tmp/x.tar");
  ImageReference reg = ImageReference::Parse("docker://127.0.0.1:5000/kt/ubuntu-image:6.1");
  EXPECT_EQ(reg.registry, "127.0.0.1:5000");
  EXPECT_EQ(reg.repository, "kt/ubuntu-image");
  EXPECT_EQ(reg.reference, "6.1");
  EXPECT_EQ(reg.str(), "docker://127.0.0.1:5000/kt/ubuntu-image:6.1");
  EXPECT_EQ(ImageReference::Parse("docker://ghcr.io/a/b").reference, "latest");
  const std::string digest = "sha256:" + std::string(64, 'e');
  EXPECT_EQ(ImageReference::Parse("docker://ghcr.io/a/b@" + digest).reference, digest);
  EXPECT_THAT(ErrorOf([] { ImageReference::Parse("ftp://x"); }), HasSubstr("expected oci:DIR"));
  EXPECT_THAT(ErrorOf([] { ImageReference::Parse("docker://noslash"); }),
              HasSubstr("docker://HOST/REPOSITORY"));
  EXPECT_THAT(ErrorOf([] { ImageReference::Parse("docker://h/UPPER"); }), HasSubstr("lowercase"));
  EXPECT_THAT(ErrorOf([] { ImageReference::Parse("docker://h/a@sha256:zz"); }),
              HasSubstr("not a sha256"));
  EXPECT_THAT(ErrorOf([] { ImageReference::Parse("oci:"); }), HasSubstr("no path"));
}

// Image layouts written here: two layers, a config, a manifest.
class LocalImageTest : public LayerTest {
 protected:
  void SetUp() override {
    LayerTest::SetUp();
    {
      Tar t(LayerFile("l1.tar.gz"), true);
      t.File("etc/hostname", "from-layer-1\n").File("etc/old", "x").File("bin/sh", "#!", 0755);
    }
    {
      Tar t(LayerFile("l2.tar"));
      t.File("etc/.wh.old", "").File("etc/motd", "hello\n");
    }
  }
  std::string Blob(const fs::path& layout, const std::string& content) {
    const std::string hex = Sha256Hex(content);
    fs::create_directories(layout / "blobs/sha256");
    test::WriteBytes(layout / "blobs/sha256" / hex, content);
    return hex;
  }
  std::string Descriptor(const std::string& type, const std::string& content,
                         const std::string& hex) {
    return R"({"mediaType":")" + type + R"(","digest":"sha256:)" + hex + R"(","size":)" +
           std::to_string(content.size()) + "}";
  }
  // oci:DIR with the image tagged `tag`.
  fs::path MakeLayout(const std::string& tag) {
    fs::path layout = dir_.path() / "layout";
    const std::string l1 = ReadFile(LayerFile("l1.tar.gz")), l2 = ReadFile(LayerFile("l2.tar"));
    const std::string config =
        R"({"architecture":"amd64","os":"linux","rootfs":{"type":"layers"}})";
    const std::string manifest =
        R"({"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":)" +
        Descriptor("application/vnd.oci.image.config.v1+json", config, Blob(layout, config)) +
        R"(,"layers":[)" +
        Descriptor("application/vnd.oci.image.layer.v1.tar+gzip", l1, Blob(layout, l1)) + "," +
        Descriptor("application/vnd.oci.image.layer.v1.tar", l2, Blob(layout, l2)) + "]}";
    const std::string mhex = Blob(layout, manifest);
    test::WriteBytes(layout / "oci-layout", R"({"imageLayoutVersion":"1.0.0"})");
    test::WriteBytes(layout / "index.json",
                     R"({"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.)"
                     R"(manifest.v1+json","digest":"sha256:)" +
                         mhex + R"(","size":)" + std::to_string(manifest.size()) +
                         R"(,"annotations":{"org.opencontainers.image.ref.name":")" + tag +
                         R"("}}]})");
    manifest_hex_ = mhex;
    return layout;
  }
  void ExpectRootfs(const LocalImage& image) {
    const fs::path ext4 = dir_.path() / "rootfs.ext4";
    RootfsBuild build = BuildRootfsExt4(image, dir_.path() / "scratch", ext4, 16, "the test image");
    EXPECT_FALSE(fs::exists(dir_.path() / "scratch"));
    EXPECT_EQ(ProbeFileKind(ext4), FileKind::kExt4);
    EXPECT_GE(build.image_bytes, std::uint64_t{64 + 16} << 20);
    auto cat = [&](const std::string& path) {
      return RunProcess({"debugfs", "-R", "cat " + path, ext4.string()}).out;
    };
    EXPECT_EQ(cat("/etc/hostname"), "from-layer-1\n");
    EXPECT_EQ(cat("/etc/motd"), "hello\n");
    EXPECT_THAT(RunProcess({"debugfs", "-R", "stat /etc/old", ext4.string()}).err,
                HasSubstr("not found"));
  }
  std::string manifest_hex_;
};

TEST_F(LocalImageTest, AnOciLayoutIsReadByTagVerifiedAndBecomesAnExt4Disk) {
  fs::path layout = MakeLayout("bookworm");
  LocalImage image = ReadLocalImage(ImageReference::Parse("oci:" + layout.string() + ":bookworm"),
                                    dir_.path() / "s");
  EXPECT_EQ(image.manifest_digest.hex, manifest_hex_);
  ASSERT_EQ(image.layers.size(), 2u);
  ExpectRootfs(image);
  // The only image needs no tag; a wrong one names what there is.
  EXPECT_NO_THROW(ReadLocalImage(ImageReference::Parse("oci:" + layout.string()), dir_.path()));
  EXPECT_THAT(ErrorOf([&] {
                ReadLocalImage(ImageReference::Parse("oci:" + layout.string() + ":trixie"),
                               dir_.path());
              }),
              HasSubstr("no image tagged trixie (it holds: bookworm)"));
  // A blob changed after the fact is caught, naming the layer.
  const std::string hex = image.layers[1].digest.hex;
  std::string bytes = ReadFile(layout / "blobs/sha256" / hex);
  bytes[600] = static_cast<char>(bytes[600] ^ 1);
  test::WriteBytes(layout / "blobs/sha256" / hex, bytes);
  EXPECT_THAT(ErrorOf([&] {
                ReadLocalImage(ImageReference::Parse("oci:" + layout.string()), dir_.path());
              }),
              HasSubstr("layer 2: its content has digest"));
}

TEST_F(LocalImageTest, ADockerArchiveIsCheckedAgainstItsDiffIds) {
  const std::string l1 = RunProcess({"sh", "-c", "zcat " + LayerFile("l1.tar.gz").string()}).out;
  const std::string l2 = ReadFile(LayerFile("l2.tar"));
  auto write_archive = [&](const std::string& second_diff_id) {
    const std::string config =
        R"({"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:)" +
        Sha256Hex(l1) + R"(","sha256:)" + second_diff_id + R"("]}})";
    const fs::path file = dir_.path() / "image.tar";
    archive* a = archive_write_new();
    archive_write_set_format_pax_restricted(a);
    archive_write_open_filename(a, file.c_str());
    auto add = [&](const std::string& name, const std::string& content) {
      archive_entry* e = archive_entry_new();
      archive_entry_set_pathname(e, name.c_str());
      archive_entry_set_filetype(e, AE_IFREG);
      archive_entry_set_perm(e, 0644);
      archive_entry_set_size(e, content.size());
      archive_write_header(a, e);
      archive_write_data(a, content.data(), content.size());
      archive_entry_free(e);
    };
    add("manifest.json",
        R"([{"Config":"cfg.json","RepoTags":["t:1"],"Layers":["a/layer.tar","b/layer.tar"]}])");
    add("cfg.json", config);
    add("a/layer.tar", l1);
    add("b/layer.tar", l2);
    archive_write_close(a);
    archive_write_free(a);
    return file;
  };
  fs::path file = write_archive(Sha256Hex(l2));
  LocalImage image =
      ReadLocalImage(ImageReference::Parse("docker-archive:" + file.string()), dir_.path() / "s1");
  ASSERT_EQ(image.layers.size(), 2u);
  ExpectRootfs(image);
  file = write_archive(std::string(64, '0'));
  EXPECT_THAT(ErrorOf([&] {
                ReadLocalImage(ImageReference::Parse("docker-archive:" + file.string()),
                               dir_.path() / "s2");
              }),
              HasSubstr("layer 2 (b/layer.tar) has digest"));
  EXPECT_THAT(ErrorOf([&] {
                ReadLocalImage(ImageReference::Parse("docker-archive:/nonexistent.tar"),
                               dir_.path() / "s3");
              }),
              HasSubstr("cannot open the archive"));
}

}  // namespace
}  // namespace ephemera::oci
