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

class ExecTest : public test::DaemonTest {
 protected:
  // The daemon's peak resident memory (VmHWM), in KiB.
  long PeakMemoryKib() const {
    std::ifstream status("/proc/" + std::to_string(daemon_) + "/status");
    for (std::string line; std::getline(status, line);) {
      if (line.rfind("VmHWM:", 0) == 0) return std::stol(line.substr(6));
    }
    return -1;
  }
  std::string Sha256OfFile(const std::filesystem::path& path) {
    ProcessResult r = RunChecked({"sha256sum", path.string()}, 60s);
    return r.out.substr(0, 64);
  }
};

TEST_F(ExecTest, ExecStreamsOutputTakesInputAndPassesTheStatusOn) {
  json s = Create({"--memory", "256"});
  const std::string id = s["id"];

  ExpectExecsBehaveAsDockerExec(id, s["username"]);
  ProcessResult r;
  r = RunProcess(Cli({"exec", "--timeout", "1", id, "--", "sleep", "60"}), 60s);
  EXPECT_EQ(r.exit_code, 124);

  // 100 MiB of output streams through without the daemon holding it.
  const long before = PeakMemoryKib();
  r = RunProcess({"bash", "-c",
                  [&] {
                    std::string line;
                    for (const std::string& arg :
                         Cli({"exec", id, "--", "head", "-c", "104857600", "/dev/zero"})) {
                      line += arg + " ";
                    }
                    return line + "| wc -c";
                  }()},
                 300s);
  EXPECT_EQ(r.out, "104857600\n") << r.err;
  const long after = PeakMemoryKib();
  EXPECT_LT(after - before, 16 * 1024)
      << "peak memory went from " << before << " to " << after << " KiB";

  // Bad requests get clear errors; the daemon goes on.
  CurlResult bad = Api("POST", "/v1/sandboxes/" + id + "/exec/0123456789abcdef/signal",
                       {"--data-binary", R"({"signal": "TERM"})"});
  EXPECT_EQ(bad.status, 404);
  EXPECT_EQ(RunProcess(Cli({"exec", id, "--", "true"}), 60s).exit_code, 0);
}

TEST_F(ExecTest, FilesGoBothWaysAndPathsStayInsideTheGuest) {
  json s = Create({"--memory", "256"});
  const std::string id = s["id"];
  const std::filesystem::path here = state_.path();

  // Up: 32 MiB of random bytes, mode kept; down: 64 MiB made in the guest.
  RunChecked({"dd", "if=/dev/urandom", "of=" + (here / "up.bin").string(), "bs=1M", "count=32",
              "status=none"});
  std::filesystem::permissions(here / "up.bin", std::filesystem::perms(0640));
  ProcessResult r = RunProcess(Cli({"cp", (here / "up.bin").string(), id + ":/tmp/up.bin"}), 300s);
  ASSERT_TRUE(r.ok()) << r.err;
  ExecResult e = Exec(id, {{"argv", {"sh", "-c", "sha256sum /tmp/up.bin; stat -c %a /tmp/up.bin"}},
                           {"user", "root"}});
  EXPECT_EQ(e.out, Sha256OfFile(here / "up.bin") + "  /tmp/up.bin\n640\n");

  e = Exec(
      id,
      {{"argv",
        {"sh", "-c", "head -c 67108864 /dev/urandom > /tmp/down.bin && sha256sum /tmp/down.bin"}},
       {"user", "root"}});
  ASSERT_EQ(e.exit["code"], 0) << e.err;
  r = RunProcess(Cli({"cp", id + ":/tmp/down.bin", (here / "down.bin").string()}), 300s);
  ASSERT_TRUE(r.ok()) << r.err;
  EXPECT_EQ(std::filesystem::file_size(here / "down.bin"), 67108864u);
  EXPECT_EQ(Sha256OfFile(here / "down.bin") + "  /tmp/down.bin\n", e.out);

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
  r = RunProcess(Cli({"cp", id + ":/etc/ssh", (here / "ssh.tar").string()}), 60s);
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
