// A guest that fills the host's disk and floods its console, on a small
// tmpfs state folder: the console log stays bounded, creates are refused
// with a clear 507, and the guest can still be destroyed completely.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "core/fs.h"
#include "core/subprocess.h"
#include "e2e/daemon_fixture.h"
#include "e2e/http_client.h"
#include "guest/ssh_session.h"

namespace ephemera {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using nlohmann::json;
using ::testing::HasSubstr;

class FullDiskTest : public test::DaemonTest {
 protected:
  void SetUp() override {
    MountStateTmpfs("160m");
    DaemonTest::SetUp();
  }
  void TearDown() override {
    DaemonTest::TearDown();
    UnmountStateTmpfs();
  }
  std::string ExtraConfig() const override { return "limits: {min_free_disk_mib: 24}\n"; }
  std::uint64_t FreeMib() const { return fs::space(state_.path() / "state").available >> 20; }
};

TEST_F(FullDiskTest, AGuestFillingTheDiskIsBoundedRefusedAndStillDestroyed) {
  json s = Create();
  const std::string id = s["id"];
  SshSession client(s["host"], s["port"].get<std::uint16_t>(), s["username"], 30s);
  ASSERT_TRUE(client.AuthenticateWithPassword(s["password"]));
  const std::string sudo = "echo '" + s["password"].get<std::string>() + "' | sudo -S -p '' ";
  // The console, flooded for 20 s: well over the 1 MiB bound.
  client.Execute(sudo + "sh -c 'timeout 20 yes flooding-the-serial-console >/dev/ttyS0'", 60s);
  // The disk: the guest writes to its overlay, then the rest of the host's
  // space goes too, so that even the store cannot write.
  CommandResult dd =
      client.Execute(sudo + "dd if=/dev/zero of=/fill bs=1M count=100 conv=fsync", 120s);
  EXPECT_EQ(dd.exit_status, 0) << dd.err;
  EXPECT_LT(FreeMib(), 80u) << "the guest's writes did not reach the host";
  {
    std::ofstream filler(state_.path() / "state" / "filler", std::ios::binary);
    std::string mib(1 << 20, 'x');
    while (filler.write(mib.data(), mib.size())) {
    }
  }
  EXPECT_EQ(FreeMib(), 0u);

  const fs::path vm = state_.path() / "state" / "vms" / id;
  fs::path rotated = vm / "serial.log";
  rotated += ".1";
  const auto console =
      fs::file_size(vm / "serial.log") + (fs::exists(rotated) ? fs::file_size(rotated) : 0);
  EXPECT_LE(console, 1024u * 1024) << "the console log is not bounded";
  EXPECT_TRUE(fs::exists(rotated)) << "the flood was too small to test the bound";

  // A create now is refused, clearly, as storage (not as "too many").
  test::CurlResult refused = test::Curl({"--unix-socket", socket_.string(), "-X", "POST", "-d",
                                         "{}", "http://localhost/v1/sandboxes"});
  EXPECT_EQ(refused.status, 507) << refused.body;
  EXPECT_THAT(refused.body, HasSubstr("disk"));
  // The guest that filled it is still destroyed, completely.
  Output(Cli({"destroy", id}));
  std::this_thread::sleep_for(1500ms);  // a record removal retried by the reaper, if any
  ExpectNothingLeft();
  fs::remove(state_.path() / "state" / "filler");
  EXPECT_GT(FreeMib(), 150u);
  EXPECT_TRUE(RunProcess(Cli({"status"})).ok());
}

}  // namespace
}  // namespace ephemera
