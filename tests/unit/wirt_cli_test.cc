// The `wirt` command against a temporary home: what it writes is what the
// daemon's contract (wirt/request.h) accepts, and it reads the daemon's
// answers back. The daemon's part is played by the test.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <chrono>
#include <ctime>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <thread>

#include "cli/wirt_tree.h"
#include "core/fs.h"
#include "core/subprocess.h"
#include "unit/test_files.h"
#include "wirt/request.h"

namespace ephemera::wirt_cli {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kKey[] =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICMlrwWUCzppjndxoAf4EgBns1LNU54Kb+TenDh3U3sn alice@laptop";

ProcessResult Wirt(const fs::path& home, std::vector<std::string> args) {
  args.insert(args.begin(), {WIRT_CLI, "--home", home.string()});
  return RunProcess(args);
}

unsigned ModeOf(const fs::path& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) return 0;
  return st.st_mode & 07777;
}

std::string Utc(std::chrono::system_clock::time_point when) {
  std::time_t t = std::chrono::system_clock::to_time_t(when);
  std::tm tm{};
  ::gmtime_r(&t, &tm);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return text;
}

std::string StatusXml(const std::string& state, const std::string& updated,
                      const std::string& outcome = "ok", const std::string& message = "") {
  return R"(<?xml version="1.0" encoding="UTF-8"?>
<vm name="vm1" owner="alice" uid="1001">
  <state>)" +
         state + R"(</state>
  <autostart>yes</autostart>
  <sandbox>0e0fac62-c3de-49a6-a5d8-341958b5eaf5</sandbox>
  <image>default</image>
  <address>172.16.0.2</address>
  <ssh host="host.example" port="10001" username="user_1"/>
  <created>2026-12-05T11:00:00Z</created>
  <expires>2026-12-05T12:00:00Z</expires>
  <updated>)" +
         updated + R"(</updated>
  <last_request action="start" outcome=")" +
         outcome + R"(" at=")" + updated + R"(">)" + message + R"(</last_request>
</vm>
)";
}

void WriteStatus(const Tree& tree, const std::string& name, const std::string& xml) {
  fs::create_directories(tree.InfoDir(name));
  WriteFileAtomic(tree.StatusFile(name), xml, 0644);
}

// Plays the daemon: waits for the request file, takes it, then answers.
std::thread AnswerLikeTheDaemon(const Tree& tree, std::string name, std::string request,
                                std::string xml) {
  return std::thread([=] {
    fs::path file = tree.ServiceDir(name) / request;
    auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (!fs::exists(file) && std::chrono::steady_clock::now() < give_up)
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    fs::remove(file);
    WriteStatus(tree, name, xml);
  });
}

TEST(WirtCliTest, CreateWritesAConfigTheDaemonAccepts) {
  test::TempDir home;
  fs::path key_file = home.path() / "keys.pub";
  test::WriteBytes(key_file, std::string("# my laptop\n\n") + kKey + "\n");
  ProcessResult r = Wirt(home.path(), {"create", "vm1", "--image", "default", "--memory", "1024",
                                       "--vcpus", "2", "--ttl", "3600", "--ssh-key", kKey,
                                       "--ssh-key", key_file.string(), "--autostart"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  Tree tree(home.path());
  fs::path config = tree.ServiceDir("vm1") / "config";
  wirt::VmConfig parsed = wirt::ParseVmConfig(ReadFile(config));
  EXPECT_EQ(parsed.image, "default");
  EXPECT_EQ(parsed.memory_mib, 1024u);
  EXPECT_EQ(parsed.vcpus, 2u);
  EXPECT_EQ(parsed.ttl_seconds, 3600);
  EXPECT_EQ(parsed.ssh_keys, (std::vector<std::string>{kKey, kKey}));
  EXPECT_EQ(parsed.autostart, true);
  EXPECT_EQ(ModeOf(config), 0644u);
  for (const char* folder : {"wirt", "wirt/service", "wirt/service/vm", "wirt/service/vm/vm1"})
    EXPECT_EQ(ModeOf(home.path() / folder), 0755u) << folder;
  // No temporary file left behind.
  EXPECT_EQ(std::distance(fs::directory_iterator(tree.ServiceDir("vm1")), {}), 1);
}

TEST(WirtCliTest, CreateRefusesABadNameABadKeyAndAnOverwriteWithoutForce) {
  test::TempDir home;
  Tree tree(home.path());
  ProcessResult bad_name = Wirt(home.path(), {"create", "Bad..Name"});
  EXPECT_EQ(bad_name.exit_code, 2);
  EXPECT_THAT(bad_name.err, HasSubstr("wirt: "));
  EXPECT_FALSE(fs::exists(home.path() / "wirt"));

  ProcessResult bad_key = Wirt(home.path(), {"create", "vm1", "--ssh-key", "ssh-ed25519 AAAA"});
  EXPECT_EQ(bad_key.exit_code, 2);
  EXPECT_THAT(bad_key.err, HasSubstr("ssh key"));
  EXPECT_FALSE(fs::exists(tree.ServiceDir("vm1") / "config"));

  ASSERT_EQ(Wirt(home.path(), {"create", "vm1", "--vcpus", "1"}).exit_code, 0);
  ProcessResult again = Wirt(home.path(), {"create", "vm1", "--vcpus", "4"});
  EXPECT_EQ(again.exit_code, 1);
  EXPECT_THAT(again.err, HasSubstr("--force"));
  EXPECT_EQ(wirt::ParseVmConfig(ReadFile(tree.ServiceDir("vm1") / "config")).vcpus, 1u);
  ASSERT_EQ(Wirt(home.path(), {"create", "vm1", "--vcpus", "4", "--force"}).exit_code, 0);
  EXPECT_EQ(wirt::ParseVmConfig(ReadFile(tree.ServiceDir("vm1") / "config")).vcpus, 4u);
}

TEST(WirtCliTest, RequestsWriteTheActionsFileWithItsParameters) {
  test::TempDir home;
  Tree tree(home.path());
  struct Case {
    std::vector<std::string> args;
    std::string file, content;
  };
  for (const Case& c : {Case{{"start", "vm1"}, "start", ""}, Case{{"stop", "vm1"}, "stop", ""},
                        Case{{"autostart", "vm1", "--disable"}, "autostart", "--disable\n"},
                        Case{{"shutdown", "vm1", "--mode", "acpi"}, "shutdown", "--mode acpi\n"},
                        Case{{"destroy", "vm1"}, "destroy", ""}}) {
    ProcessResult r = Wirt(home.path(), c.args);
    ASSERT_EQ(r.exit_code, 0) << c.file << ": " << r.err;
    fs::path file = tree.ServiceDir("vm1") / c.file;
    EXPECT_EQ(ReadFile(file), c.content) << c.file;
    EXPECT_EQ(ModeOf(file), 0644u) << c.file;
  }
  EXPECT_EQ(ModeOf(tree.ServiceDir("vm1")), 0755u);
  EXPECT_EQ(ModeOf(home.path() / "wirt"), 0755u);
}

TEST(WirtCliTest, BadParametersAreRefusedAndNothingIsWritten) {
  test::TempDir home;
  Tree tree(home.path());
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"start", "vm1", "--", "--disable"},
        {"autostart", "vm1", "--", "--bogus"},
        {"shutdown", "vm1", "--mode", "reboot"},
        {"start", "vm1", "--bogus"},
        {"start", "-vm1"}}) {
    ProcessResult r = Wirt(home.path(), args);
    EXPECT_EQ(r.exit_code, 2) << args[0] << " " << args.back();
    EXPECT_THAT(r.err, HasSubstr("wirt: "));
    EXPECT_FALSE(fs::exists(tree.ServiceDir("vm1") / args[0])) << args[0];
  }
}

TEST(WirtCliTest, StatusAndListReadTheDaemonsAnswers) {
  test::TempDir home;
  Tree tree(home.path());
  WriteStatus(tree, "vm1",
              StatusXml("running", "2026-12-05T11:00:05Z", "ok", "started &amp; &lt;ready&gt;"));
  ProcessResult text = Wirt(home.path(), {"status", "vm1"});
  ASSERT_EQ(text.exit_code, 0) << text.err;
  EXPECT_THAT(text.out, HasSubstr("vm1: running"));
  EXPECT_THAT(text.out, HasSubstr("user_1@host.example -p 10001"));
  EXPECT_THAT(text.out, HasSubstr("start ok at 2026-12-05T11:00:05Z: started & <ready>"));

  ProcessResult as_json = Wirt(home.path(), {"status", "vm1", "--json"});
  ASSERT_EQ(as_json.exit_code, 0) << as_json.err;
  auto j = nlohmann::json::parse(as_json.out);
  EXPECT_EQ(j["state"], "running");
  EXPECT_EQ(j["autostart"], true);
  EXPECT_EQ(j["ssh"]["port"], 10001);
  EXPECT_EQ(j["last_request"]["message"], "started & <ready>");

  ProcessResult xml = Wirt(home.path(), {"status", "vm1", "--xml"});
  EXPECT_EQ(xml.out, ReadFile(tree.StatusFile("vm1")));

  fs::create_directories(tree.ServiceDir("vm2"));
  fs::create_directories(home.path() / "virsh" / "dom-old1");
  ProcessResult none = Wirt(home.path(), {"status", "vm2"});
  EXPECT_EQ(none.exit_code, 0);
  EXPECT_THAT(none.out, HasSubstr("vm2: no status yet (the daemon has not answered)"));
  ProcessResult unknown = Wirt(home.path(), {"status", "vm3"});
  EXPECT_EQ(unknown.exit_code, 1);
  EXPECT_THAT(unknown.err, HasSubstr("wirt: no VM named vm3"));

  ProcessResult list = Wirt(home.path(), {"list"});
  ASSERT_EQ(list.exit_code, 0) << list.err;
  EXPECT_THAT(list.out, testing::ContainsRegex("vm1 +running +yes +user_1@host.example -p 10001"));
  EXPECT_THAT(list.out, testing::ContainsRegex("vm2 +- +- +-"));
  EXPECT_THAT(list.out, testing::ContainsRegex("old1 +- +- +-"));
  auto listed = nlohmann::json::parse(Wirt(home.path(), {"list", "--json"}).out);
  ASSERT_EQ(listed.size(), 3u);
  EXPECT_EQ(listed[1]["name"], "vm1");  // sorted: old1, vm1, vm2
  EXPECT_EQ(listed[1]["state"], "running");
}

TEST(WirtCliTest, StartWaitReturnsOnceTheDaemonAnswersRunning) {
  test::TempDir home;
  Tree tree(home.path());
  // No info folder yet: wirt watches its parent until the daemon makes it.
  std::string later = Utc(std::chrono::system_clock::now() + std::chrono::seconds(1));
  std::thread daemon = AnswerLikeTheDaemon(tree, "vm1", "start", StatusXml("running", later));
  ProcessResult r = Wirt(home.path(), {"start", "vm1", "--wait", "--timeout", "5"});
  daemon.join();
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("vm1: running"));
  EXPECT_THAT(r.out, HasSubstr("wirt ssh vm1"));
}

TEST(WirtCliTest, StartWaitFailsWithTheDaemonsMessage) {
  test::TempDir home;
  Tree tree(home.path());
  // An older answer that must not be taken for this request's.
  WriteStatus(tree, "vm1", StatusXml("failed", "2026-01-01T00:00:00Z", "failed", "old failure"));
  std::string later = Utc(std::chrono::system_clock::now() + std::chrono::seconds(1));
  std::thread daemon = AnswerLikeTheDaemon(
      tree, "vm1", "start", StatusXml("failed", later, "failed", "no space for the disk"));
  ProcessResult r = Wirt(home.path(), {"start", "vm1", "--wait", "--timeout", "5"});
  daemon.join();
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.out, HasSubstr("vm1: failed"));
  EXPECT_THAT(r.err, HasSubstr("wirt: vm1: start failed: no space for the disk"));
  EXPECT_THAT(r.err, Not(HasSubstr("old failure")));
}

TEST(WirtCliTest, WaitWithoutADaemonTimesOut) {
  test::TempDir home;
  ProcessResult r = Wirt(home.path(), {"stop", "vm1", "--wait", "--timeout", "0.3"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("is ephemerad running?"));
  EXPECT_TRUE(fs::exists(Tree(home.path()).ServiceDir("vm1") / "stop"));  // left for the daemon
}

TEST(WirtTreeTest, StatusXmlIsReadElementByElement) {
  VmStatus s = ParseStatusXml(StatusXml("stopping", "2026-12-05T11:00:05Z", "rejected",
                                        "start: parameter &apos;x&apos; &#x41;&#66;"));
  EXPECT_EQ(s.name, "vm1");
  EXPECT_EQ(s.uid, "1001");
  EXPECT_EQ(s.state, "stopping");
  EXPECT_EQ(s.sandbox, "0e0fac62-c3de-49a6-a5d8-341958b5eaf5");
  EXPECT_EQ(s.ssh_username, "user_1");
  EXPECT_EQ(s.last_outcome, "rejected");
  EXPECT_EQ(s.last_message, "start: parameter 'x' AB");
  EXPECT_EQ(SshSummary(ParseStatusXml("<vm name=\"a\"><state>stopped</state></vm>")), "-");
}

}  // namespace
}  // namespace ephemera::wirt_cli
