// Boots the real default image under QEMU/TCG (no network) and checks that
// the driver leaves nothing behind, after a power-off and after a crash.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>

#include <cstdlib>
#include <fstream>
#include <thread>

#include "core/error.h"
#include "core/fs.h"
#include "image/catalog.h"
#include "unit/test_files.h"
#include "vm/console.h"
#include "vm/qemu/command.h"
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
    driver_ = std::make_unique<QemuDriver>(Options(config));
    spec_.image = ImageCatalog(ImageDir()).Get("default");
    spec_.memory_mib = 256;
  }

  void TearDown() override {
    // Whatever failed above, no VM outlives the test.
    for (const auto& id : driver_->List()) driver_->Destroy(id);
    cgroups_->RemoveBases();
  }

  QemuDriverOptions Options(VmConfig config = {}) {
    return {state_.path(), config, AccelChoice{Accel::kTcg, "tests run under TCG"}, cgroups_};
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
    EXPECT_FALSE(AnyProcessMentions(QemuProcessMarker(info.id)));
    EXPECT_FALSE(fs::exists(info.dir)) << info.dir;
    EXPECT_FALSE(fs::exists(info.dir / "disk.qcow2"));
    EXPECT_FALSE(fs::exists(info.dir / "qmp.sock"));
    EXPECT_TRUE(driver_->List().empty());
    EXPECT_THROW(driver_->Inspect(spec_.id), Error);
    // The shared base image is untouched.
    EXPECT_TRUE(fs::exists(spec_.image.rootfs->path));
  }

  test::TempDir state_;
  std::shared_ptr<const Cgroups> cgroups_ =
      std::make_shared<Cgroups>(Cgroups::Discover("ephemera-test-" + std::to_string(::getpid())));
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

// The VM's folder on a small tmpfs: a pause that runs out of space leaves
// the VM running and no partial state; with room, it saves and restores.
TEST_P(VmBootTest, APauseWithoutRoomKeepsTheVmRunningAndOneWithRoomRestoresIt) {
  const fs::path small = state_.path() / "vms";
  fs::create_directories(small);
  ASSERT_EQ(::mount("tmpfs", small.c_str(), "tmpfs", 0, "size=96m"), 0);
  struct Unmount {
    fs::path path;
    ~Unmount() { ::umount2(path.c_str(), MNT_DETACH); }
  } unmount{small};
  driver_ = std::make_unique<QemuDriver>(Options(VmConfig{.machine = GetParam()}));
  VmInfo info = BootToInit();
  const fs::path filler = small / "filler";
  {
    std::ofstream out(filler, std::ios::binary);
    std::string mib(1 << 20, 'x');
    while ((fs::space(small).available >> 20) > 8 && out.write(mib.data(), mib.size())) out.flush();
  }
  try {
    driver_->Pause(spec_.id);
    ADD_FAILURE() << "a pause without room passed";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kNoSpace) << e.what();
    EXPECT_THAT(e.what(), HasSubstr("it runs on"));
  }
  EXPECT_FALSE(fs::exists(info.dir / "saved-state"));
  EXPECT_FALSE(fs::exists(info.dir / "saved-state.part"));
  VmInfo after = driver_->Inspect(spec_.id);
  EXPECT_EQ(after.state, VmState::kRunning);  // continued, not left stopped
  EXPECT_EQ(after.pid, info.pid);

  fs::remove(filler);
  driver_->Pause(spec_.id);
  EXPECT_FALSE(ProcessExists(info.pid));
  EXPECT_EQ(driver_->Inspect(spec_.id).state, VmState::kSaved);
  VmInfo resumed = driver_->Resume(spec_.id);
  EXPECT_EQ(resumed.state, VmState::kRunning);
  EXPECT_NE(resumed.pid, info.pid);
  EXPECT_FALSE(fs::exists(info.dir / "saved-state"));
  // The restored guest runs: its init handles the ACPI power button.
  WaitForConsoleMarker(info.serial_log, "EPHEMERA_SSHD_READY", 60s, [] { return true; });
  EXPECT_TRUE(driver_->Shutdown(spec_.id, 30s)) << ConsoleTail(info.serial_log);
  driver_->Destroy(spec_.id);
  EXPECT_FALSE(fs::exists(info.dir));
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
  QemuDriver restarted(Options());
  ASSERT_EQ(restarted.List(), std::vector<SandboxId>{spec_.id});
  restarted.Destroy(spec_.id);
  ExpectNothingLeft(info);
}

std::string ProcStatusField(pid_t pid, const std::string& field) {
  std::string status = ReadFile("/proc/" + std::to_string(pid) + "/status");
  auto at = status.find("\n" + field + ":");
  if (at == std::string::npos) return "";
  auto start = status.find_first_not_of(" \t", at + field.size() + 2);
  return status.substr(start, status.find('\n', start) - start);
}

TEST_P(VmBootTest, QemuRunsUnprivilegedUnderSeccompInACgroupWithLimits) {
  VmInfo info = BootToInit();
  // Its own uid and gid (not root, not shared), no supplementary groups,
  // no capabilities, QEMU's seccomp filter on.
  std::string uids = ProcStatusField(info.pid, "Uid");
  EXPECT_THAT(uids, ::testing::StartsWith("3000000\t3000000\t3000000")) << uids;
  EXPECT_THAT(ProcStatusField(info.pid, "Gid"), ::testing::StartsWith("3000000\t"));
  EXPECT_EQ(ProcStatusField(info.pid, "Groups"), "");
  EXPECT_EQ(ProcStatusField(info.pid, "CapEff"), "0000000000000000");
  EXPECT_EQ(ProcStatusField(info.pid, "Seccomp"), "2");
  EXPECT_EQ(ProcStatusField(info.pid, "NoNewPrivs"), "1");
  // The VM's folder (disk, sockets, guest files) is closed to that uid: it
  // works only on the descriptors it was handed.
  struct stat dir {};
  ASSERT_EQ(::stat(info.dir.c_str(), &dir), 0);
  EXPECT_EQ(dir.st_uid, 0u);
  EXPECT_EQ(dir.st_mode & 0777, 0700u);
  // In a cgroup of its own, named by the VM, with its memory and pids capped.
  std::string cgroups = ReadFile("/proc/" + std::to_string(info.pid) + "/cgroup");
  EXPECT_THAT(cgroups, ::testing::HasSubstr(spec_.id.str())) << cgroups;
  const std::string cgroup = "vm-" + spec_.id.str();
  EXPECT_THAT(cgroups_->Pids(cgroup), ::testing::Contains(info.pid));
  bool memory_capped = false, pids_capped = false;
  for (const auto& base : cgroups_->bases()) {
    for (const char* file : {"memory.limit_in_bytes", "memory.max"}) {
      if (fs::exists(base / cgroup / file)) {
        EXPECT_EQ(std::stoull(ReadFile(base / cgroup / file)), (256ull + 192 + 32) << 20);
        memory_capped = true;
      }
    }
    if (fs::exists(base / cgroup / "pids.max")) {
      EXPECT_EQ(ReadFile(base / cgroup / "pids.max"), "512\n");
      pids_capped = true;
    }
  }
  EXPECT_TRUE(memory_capped);
  EXPECT_TRUE(pids_capped);
  driver_->Destroy(spec_.id);
  ExpectNothingLeft(info);
  EXPECT_EQ(cgroups_->List(), std::vector<std::string>{}) << "the VM's cgroup outlived it";
}

TEST_P(VmBootTest, ARestartedDriverAdoptsARunningQemuAndItsConsole) {
  VmInfo info = BootToInit();
  WaitForConsoleMarker(info.serial_log, "EPHEMERA_SSHD_READY", 60s, [] { return true; });
  driver_.reset();  // the daemon stops; QEMU goes on
  ASSERT_TRUE(ProcessExists(info.pid));
  driver_ = std::make_unique<QemuDriver>(Options());
  VmInfo adopted = driver_->Inspect(spec_.id);
  EXPECT_EQ(adopted.state, VmState::kRunning);
  EXPECT_EQ(adopted.pid, info.pid);
  // The console is recorded again: the guest's power-off messages land.
  const auto before = fs::file_size(info.serial_log);
  EXPECT_TRUE(driver_->Shutdown(spec_.id, 30s)) << ConsoleTail(info.serial_log);
  EXPECT_GT(fs::file_size(info.serial_log), before);
  driver_->Destroy(spec_.id);
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
