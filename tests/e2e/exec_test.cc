// Programs and files in a real guest (QEMU under TCG, the default image's
// agent): exec with both streams, stdin, a terminal, a timeout that kills
// children; files both ways with matching SHA-256, folders as tar, and
// paths resolved by the guest, never by the host.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "core/base64.h"
#include "core/sha256.h"
#include "core/subprocess.h"
#include "e2e/daemon_fixture.h"
#include "e2e/http_client.h"

namespace ephemera {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;
using test::Curl;
using test::CurlResult;
using ::testing::HasSubstr;

class ExecTest : public test::DaemonTest {};

TEST_F(ExecTest, ExecStreamsOutputTakesInputAndPassesTheStatusOn) {
  json s = Create({"--memory", "256"});
  const std::string id = s["id"];

  ExpectExecsBehaveAsDockerExec(id, s["username"]);
  ProcessResult r;
  r = RunProcess(Cli({"exec", "--timeout", "1", id, "--", "sleep", "60"}), 60s);
  EXPECT_EQ(r.exit_code, 124);

  ExpectLargeOutputStreamsInBoundedMemory(id);

  // Bad requests get clear errors; the daemon goes on.
  CurlResult bad = Api("POST", "/v1/sandboxes/" + id + "/exec/0123456789abcdef/signal",
                       {"--data-binary", R"({"signal": "TERM"})"});
  EXPECT_EQ(bad.status, 404);
  EXPECT_EQ(RunProcess(Cli({"exec", id, "--", "true"}), 60s).exit_code, 0);
}

TEST_F(ExecTest, FilesGoBothWaysAndPathsStayInsideTheGuest) {
  // Room for 200 MiB in the guest's /tmp (a tmpfs of half its memory).
  json s = Create({"--memory", "768"});
  const std::string id = s["id"];
  const std::filesystem::path here = state_.path();
  ExpectAFileRoundTrip(id, 200, "root");

  // The guest resolves paths: its links and its "..", never the host's.
  const std::string marker = "ephemera-exec-test-" + id;
  Exec(id, {{"argv", {"ln", "-s", "/etc/hostname", "/tmp/link"}}, {"user", "root"}});
  CurlResult got = Api("GET", "/v1/sandboxes/" + id + "/files?path=/tmp/link");
  EXPECT_EQ(got.status, 200);
  EXPECT_EQ(got.body, Exec(id, {{"argv", {"cat", "/etc/hostname"}}}).out);
  CurlResult put = Api("PUT", "/v1/sandboxes/" + id + "/files?path=/tmp/../../tmp/" + marker,
                       {"--data-binary", "inside"});
  EXPECT_EQ(put.status, 200) << put.body;
  EXPECT_EQ(Exec(id, {{"argv", {"cat", "/tmp/" + marker}}}).out, "inside");
  EXPECT_FALSE(std::filesystem::exists("/tmp/" + marker)) << "written on the host";
  got = Api("GET", "/v1/sandboxes/" + id + "/files?path=/tmp/no-such-file");
  EXPECT_EQ(got.status, 404);
  got = Api("GET", "/v1/sandboxes/" + id + "/files?path=relative");
  EXPECT_EQ(got.status, 400);

  // Folders travel as tar.
  ProcessResult r = RunProcess(Cli({"cp", id + ":/etc/ssh", (here / "ssh.tar").string()}), 60s);
  ASSERT_TRUE(r.ok()) << r.err;
  EXPECT_THAT(RunChecked({"tar", "-t", "-f", (here / "ssh.tar").string()}).out,
              HasSubstr("./sshd_config"));
  std::filesystem::create_directories(here / "tree" / "sub");
  { std::ofstream(here / "tree" / "sub" / "file.txt") << "in a tar"; }
  RunChecked(
      {"tar", "-c", "-f", (here / "tree.tar").string(), "-C", (here / "tree").string(), "."});
  r = RunProcess(Cli({"cp", "--tar", (here / "tree.tar").string(), id + ":/tmp/unpacked"}), 60s);
  ASSERT_TRUE(r.ok()) << r.err;
  EXPECT_EQ(Exec(id, {{"argv", {"cat", "/tmp/unpacked/sub/file.txt"}}}).out, "in a tar");
}

}  // namespace
}  // namespace ephemera
