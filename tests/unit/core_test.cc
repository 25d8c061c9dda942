#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>
#include <sstream>

#include <map>
#include <set>

#include "core/egress.h"
#include "core/error.h"
#include "core/fs.h"
#include "core/random.h"
#include "core/sandbox.h"
#include "core/sandbox_id.h"
#include "core/subprocess.h"
#include "core/text.h"
#include "unit/test_files.h"

namespace ephemera {
namespace {

TEST(TextTest, EscapeForLogLeavesOneSafeLine) {
  EXPECT_EQ(EscapeForLog("plain text"), "plain text");
  EXPECT_EQ(EscapeForLog("a\nb\r\tc\\"), "a\\nb\\r\\tc\\\\");
  // A guest forging a log line, or a terminal escape, stays visible and inert.
  EXPECT_EQ(EscapeForLog("\n[info] sandbox destroyed\x1b[2J"),
            "\\n[info] sandbox destroyed\\x1b[2J");
  EXPECT_EQ(EscapeForLog(std::string("\xff\x00", 2)), "\\xff\\x00");
  EXPECT_EQ(EscapeForLog("0123456789", 4), "...6789");
}

TEST(EgressPolicyTest, AllowListsTakeAddressesCidrsAndDomainsInACanonicalForm) {
  EgressPolicy p = MakeEgressPolicy(
      "allow", {"Example.TEST.", "10.1.0.0/16", "203.0.113.7", "example.test", "a-b.c9.org"});
  EXPECT_EQ(p.mode, EgressMode::kAllow);
  EXPECT_EQ(p.Text(), "allow 10.1.0.0/16 203.0.113.7/32 a-b.c9.org example.test");
  EXPECT_EQ(ParseEgress(p.Text()), p);
  EXPECT_EQ(ParseEgress("none").mode, EgressMode::kNone);
  EXPECT_EQ(ParseEgress("all").mode, EgressMode::kAll);
  EXPECT_TRUE(MakeEgressPolicy("all", {}).Entries().empty());
}

TEST(EgressPolicyTest, BadModesAndEntriesAreNamed) {
  auto error_of = [](std::string_view mode, std::vector<std::string> allow) -> std::string {
    try {
      MakeEgressPolicy(mode, allow);
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
      return e.what();
    }
    return "(no error)";
  };
  EXPECT_THAT(error_of("some", {}), ::testing::HasSubstr("not one of none, all, allow"));
  EXPECT_THAT(error_of("allow", {}), ::testing::HasSubstr("at least one entry"));
  EXPECT_THAT(error_of("none", {"example.test"}), ::testing::HasSubstr("takes no allow-list"));
  for (const char* bad : {"10.0.0.1/8", "300.1.1.1", "localhost", "-a.test", "a..test", "a_b.test",
                          "*.example.test", "exa mple.test", "1.2.3.4/33", ""}) {
    EXPECT_THAT(error_of("allow", {bad}), ::testing::HasSubstr("egress allow entry")) << bad;
  }
  EXPECT_THAT(error_of("allow", {std::string(64, 'a') + ".test"}),
              ::testing::HasSubstr("egress allow entry"));
  EXPECT_THAT(error_of("allow", std::vector<std::string>(kMaxEgressEntries + 1, "a.test")),
              ::testing::HasSubstr("at most 64"));
  EXPECT_THROW(ParseEgress(""), Error);
}

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

// Runs `spec` to its end and returns what it wrote to the pipe it got as `at`.
std::string SpawnAndRead(SpawnSpec spec, int at, int* exit_status = nullptr) {
  int out[2];
  EXPECT_EQ(::pipe2(out, O_CLOEXEC), 0);
  spec.fds.emplace_back(out[1], at);
  SpawnedProcess p = Spawn(spec);
  ::close(out[1]);
  std::string text;
  char buffer[4096];
  ssize_t n;
  while ((n = ::read(out[0], buffer, sizeof buffer)) > 0) text.append(buffer, n);
  ::close(out[0]);
  int status = 0;
  ::waitpid(p.pid, &status, 0);
  if (exit_status) *exit_status = WEXITSTATUS(status);
  return text;
}

TEST(SpawnTest, TheChildGetsExactlyTheDescriptorsItIsHanded) {
  int pipe_fds[2];
  ASSERT_EQ(::pipe(pipe_fds), 0);  // without O_CLOEXEC: must still not leak
  int stray[2] = {::fcntl(pipe_fds[0], F_DUPFD, 100), ::fcntl(pipe_fds[1], F_DUPFD, 100)};
  ::close(pipe_fds[0]);
  ::close(pipe_fds[1]);
  SpawnSpec spec;
  spec.argv = {"sh", "-c", "echo to-five >&5; ls /proc/self/fd"};
  int five[2];
  ASSERT_EQ(::pipe2(five, O_CLOEXEC), 0);
  spec.fds = {{five[1], 5}};
  std::string listing = SpawnAndRead(spec, 1);
  ::close(five[1]);
  char buffer[64] = {};
  ASSERT_GT(::read(five[0], buffer, sizeof buffer - 1), 0);
  EXPECT_EQ(std::string(buffer), "to-five\n");
  ::close(five[0]);
  // 0, 1, 2, 5 and the directory ls opened (3); never the stray pipe.
  EXPECT_THAT(listing, ::testing::HasSubstr("5\n"));
  EXPECT_THAT(listing, ::testing::Not(::testing::HasSubstr(std::to_string(stray[0]) + "\n")));
  EXPECT_THAT(listing, ::testing::Not(::testing::HasSubstr(std::to_string(stray[1]) + "\n")));
  ::close(stray[0]);
  ::close(stray[1]);
}

TEST(SpawnTest, DropsToTheGivenUidWithNoGroupsInASessionOfItsOwn) {
  SpawnSpec spec;
  spec.argv = {"sh", "-c", "id -u; id -g; id -G; ps -o sid= -p $$; echo $$"};
  spec.uid = 3000123;
  spec.gid = 3000123;
  std::string out = SpawnAndRead(spec, 1);
  std::istringstream lines(out);
  std::string uid, gid, groups, sid, pid;
  std::getline(lines, uid);
  std::getline(lines, gid);
  std::getline(lines, groups);
  std::getline(lines, sid);
  std::getline(lines, pid);
  EXPECT_EQ(uid, "3000123");
  EXPECT_EQ(gid, "3000123");
  EXPECT_EQ(groups, "3000123");
  sid.erase(0, sid.find_first_not_of(' '));
  EXPECT_EQ(sid, pid) << "not the leader of a session of its own";
}

TEST(SpawnTest, AFailedStepIsNamedAndNothingRuns) {
  SpawnSpec spec;
  spec.argv = {"sh", "-c", "exit 0"};
  spec.cgroup_procs = {"/nonexistent/cgroup.procs"};
  try {
    Spawn(spec);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kUnavailable);
    EXPECT_THAT(e.what(), ::testing::HasSubstr("could not join its cgroup"));
  }
  spec.cgroup_procs.clear();
  spec.argv = {"ephemera-no-such-program"};
  EXPECT_THROW(Spawn(spec), Error);
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
