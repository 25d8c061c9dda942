// Boots the real default image under QEMU/TCG (no network) and checks that
// the driver leaves nothing behind, after a power-off and after a crash.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <cstdlib>
#include <thread>

#include "core/error.h"
#include "core/fs.h"
#include "image/catalog.h"
#include "unit/test_files.h"
#include "vm/console.h"
#include "vm/qemu/qemu_driver.h"

namespace ephemera {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using ::testing::HasSubstr;

fs::path ImageDir() {
  const char* dir = std::getenv("EPHEMERA_IMAGE_DIR");
  return dir ? dir : "/var/cache/ephemera/images";
}

// Whether `pid` is still there after a grace period: an exited daemonized
// QEMU is a zombie until init reaps it, which takes a moment.
bool ProcessExists(pid_t pid) {
  auto deadline = std::chrono::steady_clock::now() + 5s;
  while (::kill(pid, 0) == 0 || errno != ESRCH) {
    if (std::chrono::steady_clock::now() > deadline) return true;
    std::this_thread::sleep_for(10ms);
  }
  return false;
}

// Whether any process's command line mentions `needle` (a VM directory).
bool AnyProcessMentions(const std::string& needle) {
  for (const auto& entry : fs::directory_iterator("/proc")) {
    std::string name = entry.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::string cmdline;
    try {
      cmdline = ReadFile(entry.path() / "cmdline");
    } catch (const Error&) {
      continue;
    }
    for (char& c : cmdline) c = c ? c : ' ';
    if (cmdline.find(needle) != std::string::npos) return true;
  }
  return false;
}

class VmBootTest : public ::testing::TestWithParam<MachineType> {
 protected:
  void SetUp() override {
    VmConfig config;
    config.machine = GetParam();
    driver_ = std::make_unique<QemuDriver>(
        QemuDriverOptions{state_.path(), config, AccelChoice{Accel::kTcg, "tests run under TCG"}});
    spec_.image = ImageCatalog(ImageDir()).Get("default");
    spec_.memory_mib = 256;
  }

  void TearDown() override {
    // Whatever failed above, no VM outlives the test.
    for (const auto& id : driver_->List()) driver_->Destroy(id);
  }

  VmInfo BootToInit() {
    VmInfo info = driver_->Start(spec_);
    EXPECT_EQ(info.state, VmState::kRunning);
    EXPECT_GT(info.pid, 1);
    WaitForConsoleMarker(info.serial_log, "EPHEMERA_GUEST_INIT", 90s,
                         [&] { return driver_->Inspect(spec_.id).state != VmState::kShutoff; });
    return info;
  }

  void ExpectNothingLeft(const VmInfo& info) {
    EXPECT_FALSE(ProcessExists(info.pid)) << "QEMU pid " << info.pid << " still exists";
    EXPECT_FALSE(AnyProcessMentions(info.dir.string() + "/"));
    EXPECT_FALSE(fs::exists(info.dir)) << info.dir;
    EXPECT_FALSE(fs::exists(info.dir / "disk.qcow2"));
    EXPECT_FALSE(fs::exists(info.dir / "qmp.sock"));
    EXPECT_TRUE(driver_->List().empty());
    EXPECT_THROW(driver_->Inspect(spec_.id), Error);
    // The shared base image is untouched.
    EXPECT_TRUE(fs::exists(spec_.image.rootfs->path));
  }

  test::TempDir state_;
  std::unique_ptr<QemuDriver> driver_;
  VmSpec spec_{SandboxId::Generate()};
};

TEST_P(VmBootTest, BootsToInitPowersOffOverQmpAndLeavesNothing) {
  VmInfo info = BootToInit();
  EXPECT_TRUE(fs::exists(info.dir / "disk.qcow2"));
  EXPECT_TRUE(fs::exists(info.dir / "qmp.sock"));
  // Graceful power-off needs the guest's init to handle the ACPI button,
  // which it does once its sshd is up.
  WaitForConsoleMarker(info.serial_log, "EPHEMERA_SSHD_READY", 60s, [] { return true; });
  EXPECT_TRUE(driver_->Shutdown(spec_.id, 30s)) << ConsoleTail(info.serial_log);
  EXPECT_EQ(driver_->Inspect(spec_.id).state, VmState::kShutoff);
  driver_->Destroy(spec_.id);
  ExpectNothingLeft(info);
  driver_->Destroy(spec_.id);  // idempotent
}

TEST_P(VmBootTest, KilledQemuIsNoticedAndCleanedUp) {
  VmInfo info = BootToInit();
  ASSERT_EQ(::kill(info.pid, SIGKILL), 0);
  auto deadline = std::chrono::steady_clock::now() + 10s;
  while (driver_->Inspect(spec_.id).state != VmState::kShutoff) {
    ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "driver never noticed the dead QEMU";
    std::this_thread::sleep_for(20ms);
  }
  // A driver created afresh (a restarted daemon) finds and removes the remains.
  QemuDriver restarted({state_.path(), VmConfig{}, AccelChoice{Accel::kTcg, "test"}});
  ASSERT_EQ(restarted.List(), std::vector<SandboxId>{spec_.id});
  restarted.Destroy(spec_.id);
  ExpectNothingLeft(info);
}

TEST_P(VmBootTest, DuplicateIdIsRefusedWithoutHarmingTheFirst) {
  VmInfo info = driver_->Start(spec_);
  try {
    driver_->Start(spec_);
    FAIL() << "second start with the same id succeeded";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kAlreadyExists);
  }
  EXPECT_EQ(driver_->Inspect(spec_.id).state, VmState::kRunning);
  driver_->Destroy(spec_.id);
  ExpectNothingLeft(info);
}

INSTANTIATE_TEST_SUITE_P(Machines, VmBootTest,
                         ::testing::Values(MachineType::kMicrovm, MachineType::kQ35),
                         [](const auto& info) { return std::string(MachineTypeName(info.param)); });

}  // namespace
}  // namespace ephemera
