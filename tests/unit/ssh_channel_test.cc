// The shell text the SSH channel runs (ssh_channel.h), checked as text and
// by a real sh: words reach the program exactly, whatever they hold.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "core/subprocess.h"
#include "guest/ssh_channel.h"

namespace ephemera {
namespace {

using namespace std::chrono_literals;
using ::testing::HasSubstr;

TEST(ShellQuoteTest, EveryByteStaysLiteral) {
  EXPECT_EQ(ShellQuote(""), "''");
  EXPECT_EQ(ShellQuote("a b"), "'a b'");
  EXPECT_EQ(ShellQuote("it's"), "'it'\\''s'");
  for (const std::string word : {"$(id)", "`id`", "a;b", "\"q\"", "x\ny", "*", "-n", "''"}) {
    ProcessResult r = RunProcess({"sh", "-c", "printf '%s' " + ShellQuote(word)}, 10s);
    EXPECT_EQ(r.out, word);
  }
}

TEST(ShellCommandForTest, ReportsItsPidThenSetsTheEnvironmentFolderAndProgram) {
  GuestCommand command;
  command.argv = {"sh", "-c", "echo \"$GREETING\" $(pwd) \"$1\"", "zero", "one's"};
  command.env = {{"GREETING", "hi; there"}};
  command.cwd = "/tmp";
  const std::string script = ShellCommandFor(command);
  EXPECT_THAT(script, ::testing::StartsWith("printf 'ephemera-pid %s\\n' $$ >&2; "));
  ProcessResult r = RunProcess({"sh", "-c", script}, 10s);
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_EQ(r.out, "hi; there /tmp one's\n");
  EXPECT_THAT(r.err, ::testing::MatchesRegex("ephemera-pid [0-9]+\n"));

  command.cwd = "/no/such/folder";
  r = RunProcess({"sh", "-c", ShellCommandFor(command)}, 10s);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.out, "");
}

}  // namespace
}  // namespace ephemera
