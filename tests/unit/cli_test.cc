#include <gtest/gtest.h>
#include <sys/stat.h>

#include <thread>

#include <algorithm>
#include <fstream>

#include "cli/remembered.h"
#include "cli/sandbox_access.h"
#include "unit/test_files.h"

namespace ephemera::cli {
namespace {

TEST(RememberedTest, SecretsLiveInA0600FileAndConcurrentWritersLoseNothing) {
  test::TempDir dir;
  auto file = dir.path() / "ephemera" / "sandboxes.json";
  std::vector<std::thread> writers;
  for (int i = 0; i < 8; ++i) {
    writers.emplace_back([&, i] {
      Remembered(file).Put("id-" + std::to_string(i), {{"password", "p"}});
    });
  }
  for (auto& t : writers) t.join();
  Remembered remembered(file);
  for (int i = 0; i < 8; ++i) EXPECT_TRUE(remembered.Get("id-" + std::to_string(i))) << i;
  struct stat st {};
  ASSERT_EQ(::stat(file.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  ASSERT_EQ(::stat(file.parent_path().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  remembered.Forget("id-3");
  EXPECT_FALSE(remembered.Get("id-3"));
  EXPECT_TRUE(remembered.Get("id-4"));
}

nlohmann::json GoodAnswer() {
  return {{"id", "0e0fac62-c3de-49a6-a5d8-341958b5eaf5"},
          {"host", "sandbox.example.test"},
          {"port", 10022},
          {"username", "user_12345"},
          {"password", std::string(120, 'a')},
          {"token", std::string(255, 'T')},
          {"host_key", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHx+/="}};
}

TEST(SandboxAccessTest, AnswersWithinTheContractAreKept) {
  SandboxAccess a = ParseSandboxAccess(GoodAnswer());
  EXPECT_EQ(a.username, "user_12345");
  EXPECT_EQ(a.port, 10022);
  EXPECT_EQ(ParseSandboxAccess(ToJson(a)).host_key, a.host_key);  // remembered as it came
  for (const char* host : {"10.0.0.7", "::1", "fd00::7", "host-1.example"}) {
    auto answer = GoodAnswer();
    answer["host"] = host;
    EXPECT_NO_THROW(ParseSandboxAccess(answer)) << host;
  }
}

TEST(SandboxAccessTest, WhatAHostileServerCouldSmuggleIsRefusedNamingTheField) {
  const std::vector<std::pair<const char*, nlohmann::json>> hostile = {
      {"username", "-oProxyCommand=touch /tmp/pwned"},
      {"username", "root user"},
      {"username", "User"},
      {"host", "-oProxyCommand=x"},
      {"host", "evil.example\n* ssh-ed25519 AAAA"},
      {"host", "a b"},
      {"host_key", "ssh-ed25519 AAAA\n* ssh-rsa BBBB"},
      {"host_key", "ssh-dss AAAA"},
      {"host_key", "ssh-ed25519"},
      {"port", 0},
      {"port", 70000},
      {"port", "22"},
      {"password", "with\nnewline"},
      {"token", "tok en"},
  };
  for (const auto& [field, value] : hostile) {
    auto answer = GoodAnswer();
    answer[field] = value;
    try {
      ParseSandboxAccess(answer);
      ADD_FAILURE() << field << " = " << value.dump() << " accepted";
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find(field), std::string::npos) << e.what();
    }
  }
}

TEST(SandboxAccessTest, SshArgvPutsTheHostAfterTheEndOfOptions) {
  SandboxAccess a = ParseSandboxAccess(GoodAnswer());
  auto argv = SshArgv(a, "/tmp/kh", {"uname", "-a"});
  auto dashes = std::find(argv.begin(), argv.end(), "--");
  ASSERT_NE(dashes, argv.end());
  EXPECT_EQ(*(dashes + 1), "sandbox.example.test");
  EXPECT_EQ(std::vector<std::string>(dashes + 2, argv.end()),
            (std::vector<std::string>{"uname", "-a"}));
  auto user = std::find(argv.begin(), argv.end(), "-l");
  ASSERT_NE(user, argv.end());
  EXPECT_EQ(*(user + 1), "user_12345");
  EXPECT_LT(user, dashes);
  EXPECT_EQ(KnownHostsLine(a),
            "[sandbox.example.test]:10022 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHx+/=\n");
}

TEST(PrivateFileTest, PlantedSymlinksNeverReceiveTheSecrets) {
  test::TempDir dir;
  auto folder = dir.path() / "ephemera";
  auto file = folder / "sandboxes.json";
  auto victim = dir.path() / "victim";
  test::WriteBytes(victim, "untouched");
  ::mkdir(folder.c_str(), 0700);
  // At the fixed names the old writer used, and at the file itself.
  std::filesystem::create_symlink(victim, folder / "sandboxes.json.tmp");
  std::filesystem::create_symlink(victim, folder / "sandboxes.json.lock");
  Remembered remembered(file);
  EXPECT_THROW(remembered.Put("id", {{"password", "secret"}}), std::runtime_error);  // the lock
  std::filesystem::remove(folder / "sandboxes.json.lock");
  remembered.Put("id", {{"password", "secret"}});
  std::ifstream in(victim);
  std::string content((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(content, "untouched");
  EXPECT_FALSE(std::filesystem::is_symlink(file));
  // A symlinked secrets file is not read through either.
  std::filesystem::remove(file);
  std::filesystem::create_symlink(victim, file);
  EXPECT_THROW(remembered.Get("id"), std::runtime_error);
}

TEST(PrivateFileTest, AFolderOthersCanWriteIsMadePrivateAndASymlinkedOneRefused) {
  test::TempDir dir;
  auto folder = dir.path() / "ephemera";
  ::mkdir(folder.c_str(), 0777);
  ::chmod(folder.c_str(), 0777);
  Remembered(folder / "sandboxes.json").Put("id", {{"password", "p"}});
  struct stat st {};
  ASSERT_EQ(::stat(folder.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  auto elsewhere = dir.path() / "elsewhere";
  ::mkdir(elsewhere.c_str(), 0700);
  auto linked = dir.path() / "linked";
  std::filesystem::create_symlink(elsewhere, linked);
  EXPECT_THROW(Remembered(linked / "sandboxes.json").Put("id", {{"password", "p"}}),
               std::runtime_error);
  EXPECT_TRUE(std::filesystem::is_empty(elsewhere));
}

}  // namespace
}  // namespace ephemera::cli
