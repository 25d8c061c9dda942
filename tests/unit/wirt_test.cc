// The wirt part below its service: what users write (request.h), file
// access in their trees (user_fs.h), reading a tree (tree.h) and the
// status file. The trees belong to a uid with no account (the checks are
// by number), made by the test running as root.
#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "core/fs.h"
#include "unit/error_of.h"
#include "unit/test_files.h"
#include "wirt/mail.h"
#include "wirt/request.h"
#include "wirt/status.h"
#include "wirt/tree.h"
#include "wirt/user_fs.h"

namespace ephemera::wirt {
namespace {

using test::ErrorOf;
using test::TempDir;
namespace fs = std::filesystem;

constexpr char kEd25519[] =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl user@host";

TEST(WirtRequest, VmNamesFollowTheRule) {
  for (const std::string& good :
       std::vector<std::string>{"a", "web-1", "0db", "a.b_c-d", std::string(63, 'x')}) {
    EXPECT_TRUE(IsValidVmName(good)) << good;
  }
  for (const std::string& bad : std::vector<std::string>{"", "-a", ".a", "_a", "A", "a b", "a/b",
                                                         "a..b", "ä", std::string(64, 'x')}) {
    EXPECT_FALSE(IsValidVmName(bad)) << bad;
  }
  EXPECT_NE(std::string(ErrorOf([] { CheckVmName("../etc"); }).what()).find("not valid"),
            std::string::npos);
}

TEST(WirtRequest, ActionFilesAndTheirParameters) {
  EXPECT_EQ(ParseActionFile("stop"), Action::kShutdown);
  EXPECT_EQ(ParseActionFile("shutdown"), Action::kShutdown);
  EXPECT_EQ(ParseActionFile("start"), Action::kStart);
  EXPECT_FALSE(ParseActionFile("reboot"));
  EXPECT_FALSE(ParseActionFile("config"));

  EXPECT_TRUE(ParseActionParams(Action::kAutostart, "--disable\n").disable);
  EXPECT_FALSE(ParseActionParams(Action::kAutostart, "").disable);
  EXPECT_FALSE(ParseActionParams(Action::kAutostart, "EMPTY\n").disable);
  EXPECT_NO_THROW(ParseActionParams(Action::kShutdown, "--mode acpi"));
  EXPECT_NO_THROW(ParseActionParams(Action::kShutdown, "--graceful --mode=acpi\n"));

  Error other = ErrorOf([] { ParseActionParams(Action::kStart, "--disable"); });
  EXPECT_EQ(other.code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(std::string(other.what()).find("'--disable' is not accepted"), std::string::npos);
  // What virsh would have taken as raw arguments is refused by name.
  EXPECT_NE(
      std::string(ErrorOf([] { ParseActionParams(Action::kShutdown, "--mode agent"); }).what())
          .find("'--mode'"),
      std::string::npos);
  EXPECT_NE(std::string(ErrorOf([] {
                          ParseActionParams(Action::kAutostart, "--disable\n--disable\n");
                        }).what())
                .find("more than one line"),
            std::string::npos);
  EXPECT_NE(
      std::string(ErrorOf([] { ParseActionParams(Action::kDestroy, std::string("\x01")); }).what())
          .find("0x01"),
      std::string::npos);
  EXPECT_EQ(ErrorOf([] { ParseActionParams(Action::kDestroy, std::string(300, 'a')); }).code(),
            ErrorCode::kInvalidArgument);
}

TEST(WirtRequest, ConfigKeysAreCheckedAndUnknownOnesNamed) {
  VmConfig c = ParseVmConfig(
      fmt::format(R"({{"image":"default","memory_mib":512,"vcpus":2,"ttl_seconds":600,)"
                  R"("ssh_keys":["{}"],"autostart":true}})",
                  kEd25519));
  EXPECT_EQ(c.image, "default");
  EXPECT_EQ(c.memory_mib, 512u);
  EXPECT_EQ(c.vcpus, 2u);
  EXPECT_EQ(c.ttl_seconds, 600);
  ASSERT_EQ(c.ssh_keys.size(), 1u);
  EXPECT_EQ(c.autostart, true);
  EXPECT_EQ(ParseVmConfig(VmConfigToJson(c)).ssh_keys, c.ssh_keys);

  auto message = [](const std::string& json) {
    return std::string(ErrorOf([&] { ParseVmConfig(json); }).what());
  };
  EXPECT_NE(message(R"({"memory":512})").find("unknown key 'memory'"), std::string::npos);
  EXPECT_NE(message(R"({"vcpus":"2"})").find("'vcpus' must be an integer"), std::string::npos);
  EXPECT_NE(message(R"({"memory_mib":1})").find("'memory_mib' must be from"), std::string::npos);
  EXPECT_NE(message("[1]").find("JSON object"), std::string::npos);
  EXPECT_NE(message("{").find("not valid JSON"), std::string::npos);
  EXPECT_NE(message(R"({"ssh_keys":["ssh-ed25519 AAAA"]})").find("ssh_keys[0]"), std::string::npos);
  EXPECT_NE(message(R"({"ssh_keys":["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5 x' ; rm -rf /"]})")
                .find("ssh_keys[0]"),
            std::string::npos);
  EXPECT_NE(message(std::string("{\"image\":\"\x01\"}")).find("binary"), std::string::npos);
  EXPECT_NE(message(R"({"image":"../x"})").find("'image'"), std::string::npos);
  EXPECT_NE(message(R"({"kind":"jail"})").find("'kind'"), std::string::npos);
  EXPECT_NE(message(R"({"kind":1})").find("'kind' must be a string"), std::string::npos);
}

TEST(WirtRequest, AConfigMayAskForAContainer) {
  VmConfig c = ParseVmConfig(R"({"kind":"container","memory_mib":256})");
  EXPECT_EQ(c.kind, SandboxKind::kContainer);
  EXPECT_EQ(ParseVmConfig(VmConfigToJson(c)).kind, SandboxKind::kContainer);
  EXPECT_FALSE(ParseVmConfig("{}").kind.has_value());  // the daemon's default: a VM
}

// A home owned by a uid with no account, as a user's would be.
class UserTree : public ::testing::Test {
 protected:
  static constexpr uid_t kUid = 4242;
  static constexpr gid_t kGid = 4343;

  void SetUp() override {
    // As /home is: the user may look their home up (the daemon acts as them).
    fs::permissions(dir_.path(), fs::perms(0755));
    home_path_ = dir_.path() / "alice";
    Mkdir(home_path_);
    home_ = OpenHome(home_path_.string(), {kUid, kGid});
  }
  void Mkdir(const fs::path& p, unsigned mode = 0755, uid_t uid = kUid) {
    fs::create_directories(p);
    ASSERT_EQ(::chown(p.c_str(), uid, kGid), 0);
    ASSERT_EQ(::chmod(p.c_str(), mode), 0);
  }
  void File(const fs::path& p, const std::string& content, unsigned mode = 0644, uid_t uid = kUid) {
    std::ofstream(p) << content;
    ASSERT_EQ(::chown(p.c_str(), uid, kGid), 0);
    ASSERT_EQ(::chmod(p.c_str(), mode), 0);
  }

  TempDir dir_;
  fs::path home_path_;
  UserDir home_;
};

TEST_F(UserTree, OpensOnlyTheUsersOwnFolders) {
  Mkdir(home_path_ / "mine");
  Mkdir(home_path_ / "shared", 0775);
  Mkdir(home_path_ / "roots", 0755, 0);
  fs::create_directory_symlink("/etc", home_path_ / "link");
  EXPECT_TRUE(OpenUserDir(home_, "mine"));
  EXPECT_FALSE(OpenUserDir(home_, "absent"));
  EXPECT_NE(std::string(ErrorOf([&] { OpenUserDir(home_, "shared"); }).what())
                .find("group- or world-writable"),
            std::string::npos);
  EXPECT_NE(std::string(ErrorOf([&] { OpenUserDir(home_, "roots"); }).what()).find("uid 0"),
            std::string::npos);
  EXPECT_EQ(ErrorOf([&] { OpenUserDir(home_, "link"); }).code(), ErrorCode::kPermissionDenied);
  // The home itself: a symlink to someone else's folder is refused.
  fs::create_directory_symlink(home_path_, dir_.path() / "bob");
  EXPECT_EQ(ErrorOf([&] {
              OpenHome((dir_.path() / "bob").string(), {kUid, kGid});
            }).code(),
            ErrorCode::kPermissionDenied);
}

TEST_F(UserTree, MadeFoldersAreTheUsers) {
  UserDir made = MakeUserDir(home_, "wirt/info/vm/web");
  struct stat st {};
  ASSERT_EQ(::stat((home_path_ / "wirt/info/vm/web").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, kUid);
  EXPECT_EQ(st.st_gid, kGid);
  EXPECT_EQ(st.st_mode & 07777, 0755u);
  // A symlink on the way is not followed.
  fs::create_directory_symlink("/tmp", home_path_ / "wirt/logs");
  EXPECT_EQ(ErrorOf([&] { MakeUserDir(home_, "wirt/logs/vm"); }).code(),
            ErrorCode::kPermissionDenied);
}

TEST_F(UserTree, RequestFilesMustBeTheUsersRegularFiles) {
  File(home_path_ / "start", "--x\n");
  EXPECT_EQ(ReadUserFile(home_, "start", 256).content, "--x\n");

  File(home_path_ / "big", std::string(300, 'a'));
  EXPECT_NE(std::string(ErrorOf([&] { ReadUserFile(home_, "big", 256); }).what()).find("300 bytes"),
            std::string::npos);
  File(home_path_ / "rooted", "x", 0644, 0);
  EXPECT_NE(std::string(ErrorOf([&] { ReadUserFile(home_, "rooted", 256); }).what()).find("uid 0"),
            std::string::npos);
  File(home_path_ / "open", "x", 0666);
  EXPECT_EQ(ErrorOf([&] { ReadUserFile(home_, "open", 256); }).code(), ErrorCode::kInvalidArgument);
  fs::create_symlink("/etc/shadow", home_path_ / "link");
  EXPECT_NE(
      std::string(ErrorOf([&] { ReadUserFile(home_, "link", 256); }).what()).find("symbolic link"),
      std::string::npos);
  // A FIFO is refused at once instead of blocking for a writer.
  ASSERT_EQ(::mkfifo((home_path_ / "fifo").c_str(), 0644), 0);
  ASSERT_EQ(::chown((home_path_ / "fifo").c_str(), kUid, kGid), 0);
  EXPECT_NE(std::string(ErrorOf([&] { ReadUserFile(home_, "fifo", 256); }).what())
                .find("not a regular file"),
            std::string::npos);
}

TEST_F(UserTree, WritesReplaceAPlantedSymlinkAndLeaveItsTarget) {
  File(dir_.path() / "precious", "root's", 0644, 0);
  fs::create_symlink(dir_.path() / "precious", home_path_ / "status.xml");
  WriteUserFile(home_, "status.xml", "<vm/>\n", 0644);
  EXPECT_EQ(ReadFile(dir_.path() / "precious"), "root's");
  EXPECT_FALSE(fs::is_symlink(home_path_ / "status.xml"));
  EXPECT_EQ(ReadFile(home_path_ / "status.xml"), "<vm/>\n");
  struct stat st {};
  ASSERT_EQ(::stat((home_path_ / "status.xml").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, kUid);

  // An append to a hard link of someone else's file starts a new file.
  ASSERT_EQ(::link((dir_.path() / "precious").c_str(), (home_path_ / "vm.log").c_str()), 0);
  AppendUserFile(home_, "vm.log", "line\n");
  EXPECT_EQ(ReadFile(dir_.path() / "precious"), "root's");
  EXPECT_EQ(ReadFile(home_path_ / "vm.log"), "line\n");
  AppendUserFile(home_, "vm.log", "two\n");
  EXPECT_EQ(ReadFile(home_path_ / "vm.log"), "line\ntwo\n");

  fs::create_symlink(dir_.path() / "precious", home_path_ / "credentials");
  RemoveUserFile(home_, "credentials");
  EXPECT_FALSE(fs::exists(fs::symlink_status(home_path_ / "credentials")));
  EXPECT_EQ(ReadFile(dir_.path() / "precious"), "root's");
}

TEST_F(UserTree, FilesAreWrittenWithTheUsersOwnRights) {
  // Root could write here; the user cannot, and neither does the daemon.
  Mkdir(home_path_ / "readonly", 0555);
  auto readonly = OpenUserDir(home_, "readonly");
  ASSERT_TRUE(readonly);
  EXPECT_NE(std::string(ErrorOf([&] { WriteUserFile(*readonly, "status.xml", "x", 0644); }).what())
                .find("Permission denied"),
            std::string::npos);
  EXPECT_FALSE(fs::exists(home_path_ / "readonly/status.xml"));
}

TEST_F(UserTree, MovesNeverReplace) {
  File(home_path_ / "a", "1");
  File(home_path_ / "b", "2");
  File(home_path_ / "t", "old");
  EXPECT_EQ(MoveUserFile(home_, "a", home_, "t"), "t.1");
  EXPECT_EQ(MoveUserFile(home_, "b", home_, "t"), "t.2");
  EXPECT_EQ(ReadFile(home_path_ / "t"), "old");
  EXPECT_EQ(ReadFile(home_path_ / "t.2"), "2");
}

TEST_F(UserTree, LogsRotateIntoTarGz) {
  std::string first(5000, 'a');
  AppendUserFile(home_, "web.log", first);
  EXPECT_FALSE(RotateUserLog(home_, "web.log", 8192, 2));
  AppendUserFile(home_, "web.log", std::string(5000, 'b'));
  EXPECT_TRUE(RotateUserLog(home_, "web.log", 8192, 2));
  EXPECT_EQ(fs::file_size(home_path_ / "web.log"), 0u);
  AppendUserFile(home_, "web.log", std::string(9000, 'c'));
  EXPECT_TRUE(RotateUserLog(home_, "web.log", 8192, 2));
  AppendUserFile(home_, "web.log", std::string(9000, 'd'));
  EXPECT_TRUE(RotateUserLog(home_, "web.log", 8192, 2));
  EXPECT_FALSE(fs::exists(home_path_ / "web.log.3.tgz"));  // keep: 2

  // NAME.log.1.tgz holds the newest rotated log as NAME.log.
  std::unique_ptr<archive, decltype(&archive_read_free)> a(archive_read_new(), archive_read_free);
  archive_read_support_filter_gzip(a.get());
  archive_read_support_format_tar(a.get());
  ASSERT_EQ(archive_read_open_filename(a.get(), (home_path_ / "web.log.1.tgz").c_str(), 4096),
            ARCHIVE_OK);
  archive_entry* entry = nullptr;
  ASSERT_EQ(archive_read_next_header(a.get(), &entry), ARCHIVE_OK);
  EXPECT_STREQ(archive_entry_pathname(entry), "web.log");
  std::string data(9000, '\0');
  EXPECT_EQ(archive_read_data(a.get(), data.data(), data.size()), 9000);
  EXPECT_EQ(data, std::string(9000, 'd'));
  struct stat st {};
  ASSERT_EQ(::stat((home_path_ / "web.log.2.tgz").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, kUid);
}

TEST_F(UserTree, ScanFindsRequestsOldestFirstAndStrays) {
  Mkdir(home_path_ / "wirt");
  Mkdir(home_path_ / "wirt/service");
  Mkdir(home_path_ / "wirt/service/vm");
  Mkdir(home_path_ / "wirt/service/vm/web");
  Mkdir(home_path_ / "wirt/service/vm/Bad Name");
  Mkdir(home_path_ / "virsh");
  Mkdir(home_path_ / "virsh/dom-db");
  Mkdir(home_path_ / "virsh/history");
  File(home_path_ / "wirt/service/vm/web/config", "{}");
  File(home_path_ / "wirt/service/vm/web/stop", "");
  File(home_path_ / "wirt/service/vm/web/reboot", "");
  File(home_path_ / "wirt/service/vm/web/.start.swp", "");
  File(home_path_ / "virsh/dom-db/start", "");
  File(home_path_ / "virsh/notes", "");
  // db's start is older than web's stop.
  struct timespec times[2] = {{1000, 0}, {1000, 0}};
  ASSERT_EQ(::utimensat(AT_FDCWD, (home_path_ / "virsh/dom-db/start").c_str(), times, 0), 0);

  TreeScan scan = ScanTree(home_, kUid);
  ASSERT_EQ(scan.requests.size(), 2u);
  EXPECT_EQ(scan.requests[0].vm, "db");
  EXPECT_EQ(scan.requests[0].layout, Layout::kVirsh);
  EXPECT_EQ(scan.requests[1].vm, "web");
  EXPECT_EQ(scan.requests[1].file, "stop");
  std::set<std::string> strays;
  for (const auto& s : scan.strays) strays.insert(s.dir + "/" + s.name);
  EXPECT_EQ(strays, (std::set<std::string>{"wirt/service/vm/web/reboot", "wirt/service/vm/Bad Name",
                                           "virsh/notes"}));
  // The folders to watch, as descriptors of the folders read.
  std::set<fs::path> watched;
  for (const UniqueFd& fd : scan.watch) {
    watched.insert(fs::read_symlink("/proc/self/fd/" + std::to_string(fd.get())));
  }
  EXPECT_EQ(watched,
            (std::set<fs::path>{home_path_, home_path_ / "wirt", home_path_ / "wirt/service",
                                home_path_ / "wirt/service/vm", home_path_ / "wirt/service/vm/web",
                                home_path_ / "virsh", home_path_ / "virsh/dom-db"}));
  EXPECT_TRUE(scan.problems.empty());
}

TEST(WirtStatus, XmlIsEscapedAndTimesAreUtc) {
  VmStatus s;
  s.name = "web";
  s.user = "alice";
  s.uid = 1001;
  s.state = "failed";
  s.last_action = "start";
  s.last_outcome = "failed";
  s.last_message = "config: unknown key '<x>' & more";
  s.last_at = 0;
  std::string xml = StatusXml(s, 86400);
  EXPECT_NE(xml.find("<state>failed</state>"), std::string::npos);
  EXPECT_NE(xml.find("unknown key &apos;&lt;x&gt;&apos; &amp; more"), std::string::npos);
  EXPECT_NE(xml.find("<updated>1970-01-02T00:00:00Z</updated>"), std::string::npos);
  EXPECT_EQ(xml.find("<sandbox>"), std::string::npos);
  EXPECT_EQ(Timestamp(86400000001), "19700102T000000.000001Z");
  s.domain_xml = "<domain type='kvm'/>";
  EXPECT_NE(StatusXml(s, 0).find("<domain>&lt;domain type=&apos;kvm&apos;/&gt;</domain>"),
            std::string::npos);
}

TEST(WirtMail, GoesToSendmailWithOneLineHeaders) {
  TempDir dir;
  // A stand-in for the MTA: records its arguments and the message.
  const fs::path sendmail = dir.path() / "sendmail";
  WriteFileAtomic(sendmail,
                  "#!/bin/sh\necho \"$@\" > " + (dir.path() / "args").string() + "\ncat > " +
                      (dir.path() / "message").string() + "\n",
                  0755);
  SendMail(sendmail.string(), {"alice", "root"}, "wirt: start of web\nBcc: x", "start: failed");
  EXPECT_EQ(ReadFile(dir.path() / "args"), "-oi -- alice root\n");
  std::string message = ReadFile(dir.path() / "message");
  EXPECT_NE(message.find("To: alice, root\nSubject: wirt: start of web Bcc: x\n"),
            std::string::npos);
  EXPECT_NE(message.find("\n\nstart: failed\n"), std::string::npos);

  WriteFileAtomic(sendmail, "#!/bin/sh\nexit 75\n", 0755);
  EXPECT_EQ(ErrorOf([&] { SendMail(sendmail.string(), {"alice"}, "s", "b"); }).code(),
            ErrorCode::kUnavailable);
}

}  // namespace
}  // namespace ephemera::wirt
