// ISO images under the qemu driver: the project's live ISO, laid out like
// Anweddol's mirror, booted and provisioned with the endpoint password; and
// the ISOs that must be refused (a checksum that does not match, no
// endpoint password configured), leaving nothing behind.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "core/fs.h"
#include "core/subprocess.h"
#include "e2e/daemon_fixture.h"
#include "e2e/live_iso.h"
#include "integration/guest_fixture.h"

namespace ephemera {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using nlohmann::json;
using ::testing::HasSubstr;

json FindImage(const json& images, const std::string& name) {
  for (const auto& i : images) {
    if (i["name"] == name) return i;
  }
  ADD_FAILURE() << "no image " << name << " in " << images.dump(2);
  return json::object();
}

class LiveIsoTest : public test::DaemonTest {
 protected:
  std::string ExtraConfig() const override { return test::LiveIsoConfig(); }

  // An Anweddol mirror directory next to the real ones, holding the live
  // ISO (a symlink) with the checksum files given; removed afterwards.
  fs::path MakeMirror(const std::string& sha256_line, const std::string& md5_line) {
    mirror_ = test::ImageDir() / ("badsum-e2e-" + std::to_string(::getpid()));
    fs::remove_all(mirror_);
    fs::create_directory(mirror_);
    fs::create_symlink(
        fs::canonical(test::ImageDir() / test::kLiveImage) / "anweddol_container.iso",
        mirror_ / "anweddol_container.iso");
    WriteFileAtomic(mirror_ / "version.txt", "9.9.9\n", 0644);
    WriteFileAtomic(mirror_ / "sha256sum.txt", sha256_line, 0644);
    if (!md5_line.empty()) WriteFileAtomic(mirror_ / "md5sum.txt", md5_line, 0644);
    return mirror_;
  }
  void TearDown() override {
    DaemonTest::TearDown();
    if (!mirror_.empty()) fs::remove_all(mirror_);
  }
  fs::path mirror_;
};

TEST_F(LiveIsoTest, TheLiveIsoInTheAnweddolMirrorLayoutBootsWithTheEndpointPassword) {
  json images = json::parse(Output(Cli({"image", "list", "--json"})));
  json live = FindImage(images, test::kLiveImage);
  EXPECT_EQ(live["valid"], true) << live.dump();
  EXPECT_EQ(live["format"], "iso");
  EXPECT_EQ(live["layout"], "anweddol-mirror");
  EXPECT_EQ(live["endpoint"], "password");
  std::string version = ReadFile(test::ImageDir() / test::kLiveImage / "version.txt");
  EXPECT_EQ(live["version"], version.substr(0, version.find('\n')));
  EXPECT_EQ(live["sha256"], test::PublishedLiveIsoSha256());
  EXPECT_THAT(Output(Cli({"image", "list"})), HasSubstr(live["version"].get<std::string>()));

  json s = Create({"--image", test::kLiveImage});
  test::ExpectLiveIsoSandbox(s);
  json shown = json::parse(Output(Cli({"show", "--json", s["id"]})));
  EXPECT_EQ(shown["running"], true);
  EXPECT_EQ(shown["driver"], "qemu");
  EXPECT_EQ(shown["iso_path"], s["iso_path"]);
  // The QEMU of an ISO is machine pc with the ISO as its CD.
  std::string qemu_cmdline =
      ReadFile(fs::path("/proc") / std::to_string(QemuPid(s["id"])) / "cmdline");
  std::replace(qemu_cmdline.begin(), qemu_cmdline.end(), '\0', ' ');
  EXPECT_THAT(qemu_cmdline, HasSubstr("-machine pc,mem-merge=off "));
  EXPECT_THAT(qemu_cmdline, HasSubstr("media=cdrom"));
  Output(Cli({"destroy", s["id"]}));
  ExpectNothingLeft();
}

TEST_F(LiveIsoTest, AnIsoWhoseChecksumsDoNotMatchIsRefusedByNameAndLeavesNothing) {
  const std::string name =
      MakeMirror(std::string(64, '0') + "  anweddol_container.iso\n", "").filename().string();
  ProcessResult r = RunProcess(Cli({"create", "--image", name}), 120s);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.err, HasSubstr("does not match sha256sum.txt"));
  EXPECT_THAT(r.err, HasSubstr(name));
  json listed = FindImage(json::parse(Output(Cli({"image", "list", "--json"}))), name);
  EXPECT_EQ(listed["valid"], false);
  EXPECT_THAT(listed["error"].get<std::string>(), HasSubstr("sha256sum.txt"));
  ExpectNothingLeft();

  // The right SHA-256 but a wrong MD5: md5sum.txt is checked too.
  MakeMirror(test::PublishedLiveIsoSha256() + "\n", std::string(32, 'a') + "\n");
  r = RunProcess(Cli({"create", "--image", name}), 120s);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.err, HasSubstr("does not match"));
  EXPECT_THAT(r.err, HasSubstr("md5sum.txt"));
  ExpectNothingLeft();
}

class LiveIsoWithoutPasswordTest : public test::DaemonTest {};

TEST_F(LiveIsoWithoutPasswordTest, IsRefusedBeforeAnythingStartsAndSaysWhatIsMissing) {
  ProcessResult r = RunProcess(Cli({"create", "--image", test::kLiveImage}), 120s);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.err, HasSubstr("endpoint_password"));
  ExpectNothingLeft();
}

}  // namespace
}  // namespace ephemera
