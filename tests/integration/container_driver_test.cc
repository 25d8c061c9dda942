// The container driver's start-up against the real host (root, cgroups,
// crun): what it refuses and why, and what an earlier run left that it
// removes. Containers themselves run in tests/e2e/container_test.cc.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include "container/container_driver.h"
#include "core/cgroup.h"
#include "core/error.h"
#include "core/fs.h"
#include "core/sandbox_id.h"
#include "unit/error_of.h"
#include "unit/test_files.h"

namespace ephemera {
namespace {

namespace fs = std::filesystem;
using test::ErrorOf;
using test::TempDir;
using test::WriteBytes;
using ::testing::HasSubstr;

class ContainerDriverTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fs::permissions(dir_.path(), fs::perms::others_exec, fs::perm_options::add);
    cgroups_ = std::make_shared<Cgroups>(Cgroups::Discover(Cgroups::SubtreeFor(State())));
  }
  void TearDown() override {
    for (const auto& name : cgroups_->List()) cgroups_->Remove(name);
    cgroups_->RemoveBases();
  }
  fs::path State() const { return dir_.path() / "state"; }
  ContainerDriverOptions Options() const {
    ContainerDriverOptions o;
    o.state_dir = State();
    o.max_containers = 4;
    o.cgroups = cgroups_;
    return o;
  }

  TempDir dir_;
  std::shared_ptr<Cgroups> cgroups_;
};

TEST_F(ContainerDriverTest, AMissingRuntimeIsNamed) {
  ContainerDriverOptions o = Options();
  o.config.runtime = "/nonexistent/crun";
  Error e = ErrorOf([&] { ContainerDriver driver(o); });
  EXPECT_EQ(e.code(), ErrorCode::kUnavailable);
  EXPECT_THAT(e.what(), HasSubstr("/nonexistent/crun"));
}

TEST_F(ContainerDriverTest, RuncIsRefusedWhereItWouldEscapeItsCgroup) {
  if (cgroups_->unified()) GTEST_SKIP() << "a cgroup v2 host: runc is accepted there";
  ContainerDriverOptions o = Options();
  o.config.runtime = "runc";
  Error e = ErrorOf([&] { ContainerDriver driver(o); });
  EXPECT_EQ(e.code(), ErrorCode::kUnavailable);
  EXPECT_THAT(e.what(), HasSubstr("cgroup v2"));
}

TEST_F(ContainerDriverTest, ABadSeccompProfileIsNamed) {
  const fs::path profile = dir_.path() / "profile.json";
  WriteBytes(profile, R"({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"],
      "action": "SCMP_ACT_PERHAPS"}]})");
  ContainerDriverOptions o = Options();
  o.config.seccomp_profile = profile;
  Error e = ErrorOf([&] { ContainerDriver driver(o); });
  EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
  EXPECT_THAT(e.what(), HasSubstr(profile.string()));
  EXPECT_THAT(e.what(), HasSubstr("SCMP_ACT_PERHAPS"));
}

TEST_F(ContainerDriverTest, AStateFolderOthersCannotSearchIsNamed) {
  fs::permissions(dir_.path(), fs::perms::others_exec, fs::perm_options::remove);
  Error e = ErrorOf([&] { ContainerDriver driver(Options()); });
  EXPECT_EQ(e.code(), ErrorCode::kUnavailable);
  EXPECT_THAT(e.what(), HasSubstr(dir_.path().string()));
  EXPECT_THAT(e.what(), HasSubstr("searchable"));
}

TEST_F(ContainerDriverTest, WhatNoContainerOwnsIsRemovedAtStart) {
  // A cgroup and an image mount point left by a run that crashed.
  const std::string stray = "ct-" + SandboxId::Generate().str();
  cgroups_->Create(stray, {});
  ASSERT_THAT(cgroups_->List(), ::testing::Contains(stray));
  const fs::path stale_mount = State() / "containers" / ".images" / "0123456789abcdef";
  MakeDirs(stale_mount, 0755);
  ContainerDriver driver(Options());
  EXPECT_THAT(cgroups_->List(), ::testing::Not(::testing::Contains(stray)));
  EXPECT_FALSE(fs::exists(stale_mount));
  EXPECT_TRUE(driver.List().empty());
  // The folders crun reaches as a container's root are searchable.
  struct stat st {};
  ASSERT_EQ(::stat((State() / "containers").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0711u);
}

}  // namespace
}  // namespace ephemera
