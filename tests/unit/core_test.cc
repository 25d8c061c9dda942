#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <map>
#include <set>

#include "core/error.h"
#include "core/fs.h"
#include "core/random.h"
#include "core/sandbox.h"
#include "core/sandbox_id.h"
#include "core/subprocess.h"
#include "unit/test_files.h"

namespace ephemera {
namespace {

TEST(SandboxIdTest, GeneratedIdsAreValidDistinctUuid4) {
  std::set<std::string> seen;
  for (int i = 0; i < 1000; ++i) {
    SandboxId id = SandboxId::Generate();
    EXPECT_TRUE(SandboxId::IsValid(id.str())) << id.str();
    EXPECT_EQ(id.str()[14], '4');
    seen.insert(id.str());
  }
  EXPECT_EQ(seen.size(), 1000u);
}

TEST(SandboxIdTest, ParseRejectsMalformed) {
  EXPECT_NO_THROW(SandboxId::Parse("123e4567-e89b-42d3-a456-426614174000"));
  for (const char* bad : {"", "123e4567-e89b-12d3-a456-426614174000",  // version 1
                          "123E4567-E89B-42D3-A456-426614174000",      // uppercase
                          "123e4567e89b42d3a456426614174000", "../../etc/passwd",
                          "123e4567-e89b-42d3-c456-426614174000"}) {  // wrong variant
    try {
      SandboxId::Parse(bad);
      ADD_FAILURE() << "accepted " << bad;
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
    }
  }
}

TEST(RandomTest, StringUsesOnlyAlphabetAndAllOfIt) {
  std::string s = RandomString(20000, "abc");
  std::map<char, int> counts;
  for (char c : s) counts[c]++;
  ASSERT_EQ(counts.size(), 3u);
  for (auto& [c, n] : counts) {
    EXPECT_GT(n, 6000) << c;  // ~6667 expected; far from biased
    EXPECT_LT(n, 7300) << c;
  }
  EXPECT_NE(RandomString(120, kAlphanumeric), RandomString(120, kAlphanumeric));
}

TEST(SandboxStateTest, TransitionsOnlyMoveForward) {
  using S = SandboxState;
  EXPECT_TRUE(IsAllowedTransition(S::kCreating, S::kProvisioning));
  EXPECT_TRUE(IsAllowedTransition(S::kProvisioning, S::kReady));
  EXPECT_TRUE(IsAllowedTransition(S::kReady, S::kDestroying));
  EXPECT_TRUE(IsAllowedTransition(S::kFailed, S::kDestroying));
  EXPECT_FALSE(IsAllowedTransition(S::kReady, S::kCreating));
  EXPECT_FALSE(IsAllowedTransition(S::kDestroying, S::kReady));
  EXPECT_FALSE(IsAllowedTransition(S::kFailed, S::kReady));
  EXPECT_EQ(ParseState("ready"), S::kReady);
  EXPECT_THROW(ParseState("bogus"), Error);
}

TEST(SubprocessTest, CapturesOutputAndExitCode) {
  ProcessResult r = RunProcess({"sh", "-c", "echo out; echo err >&2; exit 3"});
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_EQ(r.out, "out\n");
  EXPECT_EQ(r.err, "err\n");
}

TEST(SubprocessTest, ChildrenInheritNoDescriptorsButStdio) {
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);  // deliberately without O_CLOEXEC
  int high = ::fcntl(fds[0], F_DUPFD, 100);
  ASSERT_GE(high, 100);
  ProcessResult r = RunProcess({"sh", "-c", "ls /proc/self/fd"});
  for (int fd : {fds[0], fds[1], high}) ::close(fd);
  // 0, 1, 2 and the directory ls itself opened; never our pipe.
  EXPECT_THAT(r.out, ::testing::Not(::testing::HasSubstr(std::to_string(high))));
  EXPECT_THAT(r.out, ::testing::HasSubstr("2\n"));
}

TEST(SubprocessTest, MissingProgramIsUnavailable) {
  try {
    RunProcess({"ephemera-no-such-program"});
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kUnavailable);
    EXPECT_NE(std::string(e.what()).find("ephemera-no-such-program"), std::string::npos);
  }
}

TEST(SubprocessTest, DeadlineKillsTheProcess) {
  auto start = std::chrono::steady_clock::now();
  try {
    RunProcess({"sleep", "10"}, std::chrono::milliseconds(200));
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kTimeout);
  }
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
}

TEST(SubprocessTest, RunCheckedQuotesStderr) {
  try {
    RunChecked({"sh", "-c", "echo broken thing >&2; exit 1"});
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("broken thing"), std::string::npos);
  }
}

TEST(FsTest, AtomicWriteAndIdempotentRemove) {
  test::TempDir dir;
  auto file = dir.path() / "a" / "b.txt";
  MakeDirs(file.parent_path());
  WriteFileAtomic(file, "hello", 0600);
  EXPECT_EQ(ReadFile(file), "hello");
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(file.parent_path()), {}), 1);
  RemoveAll(dir.path() / "a");
  RemoveAll(dir.path() / "a");  // second time: nothing there, still fine
  EXPECT_FALSE(std::filesystem::exists(file));
  try {
    ReadFile(file);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kNotFound);
    EXPECT_NE(std::string(e.what()).find(file.string()), std::string::npos);
  }
}

TEST(ErrorTest, ContextIsPrefixedAndCodeKept) {
  Error e(ErrorCode::kNotFound, "file x");
  Error wrapped = e.WithContext("image 'default'");
  EXPECT_STREQ(wrapped.what(), "image 'default': file x");
  EXPECT_EQ(wrapped.code(), ErrorCode::kNotFound);
}

}  // namespace
}  // namespace ephemera
