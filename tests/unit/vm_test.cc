#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <thread>

#include "core/error.h"
#include "core/fs.h"
#include "core/netdev.h"
#include "core/tracked_process.h"
#include "image/catalog.h"
#include "unit/test_files.h"
#include "vm/console.h"
#include "vm/console_recorder.h"
#include "vm/qemu/accel.h"
#include "vm/qemu/command.h"
#include "vm/qemu/host.h"
#include "vm/qemu/memory_file.h"
#include "vm/qemu/qemu_driver.h"
#include "vm/qemu/qmp.h"

namespace ephemera {
namespace {

namespace fs = std::filesystem;
using test::TempDir;
using ::testing::Contains;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;

// The value after `flag` in argv (first occurrence), or "" if absent.
std::string ArgAfter(const std::vector<std::string>& argv, const std::string& flag) {
  for (std::size_t i = 0; i + 1 < argv.size(); ++i) {
    if (argv[i] == flag) return argv[i + 1];
  }
  return "";
}

std::vector<std::string> AllAfter(const std::vector<std::string>& argv, const std::string& flag) {
  std::vector<std::string> values;
  for (std::size_t i = 0; i + 1 < argv.size(); ++i) {
    if (argv[i] == flag) values.push_back(argv[i + 1]);
  }
  return values;
}

class QemuCommandTest : public ::testing::Test {
 protected:
  void SetUp() override {
    test::MakeFakeKernelImage(dir_.path(), "img");
    launch_.spec.image = ImageCatalog(dir_.path()).Get("img");
    launch_.spec.memory_mib = 256;
    launch_.spec.vcpus = 2;
  }
  TempDir dir_;
  QemuLaunch launch_ = MakeLaunch(SandboxId::Generate());

  static QemuLaunch MakeLaunch(const SandboxId& id) {
    return QemuLaunch{.binary = "/usr/bin/qemu-system-x86_64",
                      .machine = MachineType::kMicrovm,
                      .accel = Accel::kTcg,
                      .tcg_tb_size_mib = 64,
                      .tsc_khz = 2596122,
                      .spec = VmSpec(id),
                      .dir = VmDir::For("/var/lib/ephemera/vms", id)};
  }
};

TEST_F(QemuCommandTest, MicrovmKernelBootUnderTcg) {
  launch_.spec.extra_cmdline = "ephemera.x=1";
  auto argv = BuildQemuArgs(launch_);
  const std::string root = launch_.dir.root.string();
  EXPECT_EQ(argv[0], "/usr/bin/qemu-system-x86_64");
  EXPECT_THAT(ArgAfter(argv, "-machine"), HasSubstr("microvm"));
  EXPECT_EQ(ArgAfter(argv, "-accel"), "tcg,tb-size=64");
  EXPECT_EQ(ArgAfter(argv, "-m"), "256");
  EXPECT_EQ(ArgAfter(argv, "-smp"), "2");
  EXPECT_EQ(ArgAfter(argv, "-uuid"), launch_.spec.id.str());
  EXPECT_EQ(ArgAfter(argv, "-kernel"), launch_.spec.image.kernel->path.string());
  EXPECT_EQ(ArgAfter(argv, "-append"),
            "console=ttyS0 root=/dev/vda rw tsc_early_khz=2596122 ephemera.x=1");
  // The guest writes only to its own overlay, never to the shared base; QEMU
  // gets the overlay as descriptors (read-write and read-only), not a path.
  EXPECT_EQ(ArgAfter(argv, "-drive"),
            "id=root,file=/dev/fdset/1,format=qcow2,if=none,discard=unmap,cache=writeback");
  EXPECT_THAT(AllAfter(argv, "-add-fd"), ElementsAre("fd=6,set=1", "fd=7,set=1"));
  EXPECT_THAT(AllAfter(argv, "-device"), ElementsAre("virtio-blk-device,drive=root"));
  // Console and QMP are sockets the daemon listens on and hands over.
  EXPECT_THAT(AllAfter(argv, "-chardev"), ElementsAre("socket,id=serial0,fd=4,server=on,wait=off",
                                                      "socket,id=qmp,fd=3,server=on,wait=off"));
  EXPECT_EQ(ArgAfter(argv, "-mon"), "chardev=qmp,mode=control");
  EXPECT_EQ(ArgAfter(argv, "-sandbox"),
            "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny");
  EXPECT_THAT(argv, Contains("-S"));  // started paused: the console attaches first
  EXPECT_THAT(argv, Not(Contains("-daemonize")));
  EXPECT_THAT(argv, Not(Contains("-pidfile")));
  EXPECT_THAT(argv, Contains("-nodefaults"));
  EXPECT_EQ(ArgAfter(argv, "-netdev"), "");
  // No path of the VM's folder appears: QEMU could not open it anyway.
  for (const auto& arg : argv) EXPECT_THAT(arg, Not(HasSubstr(root))) << arg;
  launch_.seccomp_sandbox = false;
  EXPECT_THAT(BuildQemuArgs(launch_), Not(Contains("-sandbox")));
}

TEST_F(QemuCommandTest, KvmQ35WithNicAndGuestFiles) {
  launch_.accel = Accel::kKvm;
  launch_.machine = MachineType::kQ35;
  launch_.spec.nic = NicSpec{"eph-1234abcd", "52:54:00:12:34:56"};
  launch_.spec.guest_files = {{"opt/ephemera/endpoint_authorized_keys", "ssh-ed25519 AAAA"}};
  auto argv = BuildQemuArgs(launch_);
  EXPECT_EQ(ArgAfter(argv, "-machine"), "q35,mem-merge=off");
  EXPECT_EQ(ArgAfter(argv, "-accel"), "kvm");
  EXPECT_EQ(ArgAfter(argv, "-cpu"), "host");
  EXPECT_THAT(ArgAfter(argv, "-append"),
              ::testing::Not(HasSubstr("tsc_early_khz")));  // KVM has kvmclock
  EXPECT_EQ(ArgAfter(argv, "-netdev"), "tap,id=net0,fd=5");
  EXPECT_THAT(
      AllAfter(argv, "-device"),
      ElementsAre("virtio-blk-pci,drive=root", "virtio-net-pci,netdev=net0,mac=52:54:00:12:34:56"));
  EXPECT_EQ(ArgAfter(argv, "-fw_cfg"), "name=opt/ephemera/endpoint_authorized_keys,file=/dev/fd/9");
  EXPECT_THAT(argv, Not(Contains(HasSubstr("virtserialport"))));  // no agent asked for
}

TEST_F(QemuCommandTest, TheAgentChannelIsAVirtioSerialPortOnAnInheritedSocket) {
  launch_.spec.agent_channel = true;
  auto argv = BuildQemuArgs(launch_);
  EXPECT_THAT(AllAfter(argv, "-device"),
              ElementsAre("virtio-blk-device,drive=root", "virtio-serial-device",
                          "virtserialport,chardev=agent0,name=org.ephemera.agent.0"));
  EXPECT_THAT(AllAfter(argv, "-chardev"), Contains("socket,id=agent0,fd=8,server=on,wait=off"));
  launch_.machine = MachineType::kQ35;
  EXPECT_THAT(BuildQemuArgs(launch_), Contains("virtio-serial-pci"));
}

TEST_F(QemuCommandTest, SnapshotTemplateAndClonesMapOneMemoryFileByTheSameBackendId) {
  launch_.memory = GuestMemory::kSharedFile;
  auto tmpl = BuildQemuArgs(launch_);
  EXPECT_EQ(ArgAfter(tmpl, "-machine"), "microvm,acpi=on,mem-merge=off,memory-backend=mem0");
  EXPECT_EQ(ArgAfter(tmpl, "-object"),
            "memory-backend-file,id=mem0,size=256M,mem-path=/proc/self/fd/48,share=on");
  EXPECT_EQ(ArgAfter(tmpl, "-m"), "256");
  launch_.memory = GuestMemory::kPrivateFile;
  auto clone = BuildQemuArgs(launch_);
  EXPECT_EQ(ArgAfter(clone, "-object"),
            "memory-backend-file,id=mem0,size=256M,mem-path=/proc/self/fd/48,share=off");
  // Everything else the same: a migration stream loads only into its own machine.
  std::erase(tmpl, ArgAfter(tmpl, "-object"));
  std::erase(clone, ArgAfter(clone, "-object"));
  EXPECT_EQ(tmpl, clone);
  // A paused clone's saved state has all its memory: plain RAM, same id.
  launch_.memory = GuestMemory::kPrivateFile;
  auto resumed = BuildQemuArgs(launch_);
  UseAnonymousMemory(resumed);
  EXPECT_EQ(ArgAfter(resumed, "-object"), "memory-backend-ram,id=mem0,size=256M");
  EXPECT_EQ(ArgAfter(resumed, "-machine"), "microvm,acpi=on,mem-merge=off,memory-backend=mem0");
  launch_.memory = GuestMemory::kAnonymous;
  auto plain = BuildQemuArgs(launch_);
  EXPECT_THROW(UseAnonymousMemory(plain), Error);
  EXPECT_THAT(BuildQemuArgs(launch_), Not(Contains("-object")));
  EXPECT_EQ(ArgAfter(BuildQemuArgs(launch_), "-machine"), "microvm,acpi=on,mem-merge=off");
  launch_.mem_merge = true;  // vm.ksm
  EXPECT_EQ(ArgAfter(BuildQemuArgs(launch_), "-machine"), "microvm,acpi=on,mem-merge=on");
}

TEST_F(QemuCommandTest, IsoBootsOnPcFromCdrom) {
  test::WriteFakeIso(dir_.path() / "live.iso");
  fs::create_directories(dir_.path() / "live");
  fs::rename(dir_.path() / "live.iso", dir_.path() / "live" / "live.iso");
  test::WriteBytes(dir_.path() / "live" / "manifest.json",
                   R"({"version":1,"format":"iso","iso":"live.iso"})");
  launch_.spec.image = ImageCatalog(dir_.path()).Get("live");
  auto argv = BuildQemuArgs(launch_);
  EXPECT_EQ(ArgAfter(argv, "-machine"), "pc,mem-merge=off");
  EXPECT_THAT(ArgAfter(argv, "-drive"), HasSubstr("media=cdrom,readonly=on"));
  EXPECT_EQ(ArgAfter(argv, "-kernel"), "");
}

TEST_F(QemuCommandTest, RefusesOptionInjection) {
  launch_.spec.nic = NicSpec{"tap0,script=/tmp/evil", "52:54:00:12:34:56"};
  EXPECT_THROW(BuildQemuArgs(launch_), Error);
}

// What a clone's QEMU could try against its template's memory once sealed:
// it opens it read-write by its /proc path, as QEMU 7.2 does.
TEST(MemoryFileTest, ASealedTemplateIsReadableAndPrivatelyWritableButNeverChanged) {
  UniqueFd file = MakeMemoryFile(1);
  const std::size_t size = 1 << 20;
  {
    void* shared = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, file.get(), 0);
    ASSERT_NE(shared, MAP_FAILED);
    static_cast<char*>(shared)[100] = 'T';  // the template writes its memory
    ::munmap(shared, size);
  }
  SealMemoryFile(file.get());
  const std::string path = "/proc/self/fd/" + std::to_string(file.get());
  UniqueFd reopened(::open(path.c_str(), O_RDWR | O_CLOEXEC));
  ASSERT_TRUE(reopened) << std::strerror(errno);
  EXPECT_EQ(::pwrite(reopened.get(), "X", 1, 100), -1);
  EXPECT_EQ(errno, EPERM);
  EXPECT_EQ(::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, reopened.get(), 0),
            MAP_FAILED);
  EXPECT_NE(::ftruncate(reopened.get(), 0), 0);
  EXPECT_NE(::fallocate(reopened.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, 4096), 0);
  EXPECT_NE(::fcntl(reopened.get(), F_ADD_SEALS, 0), 0);  // no more seals, none removed
  // A clone's private mapping: its writes are its own.
  void* mapped = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE, reopened.get(), 0);
  ASSERT_NE(mapped, MAP_FAILED);
  char* clone = static_cast<char*>(mapped);
  EXPECT_EQ(clone[100], 'T');
  clone[100] = 'C';
  ::munmap(mapped, size);
  char byte = 0;
  ASSERT_EQ(::pread(file.get(), &byte, 1, 100), 1);
  EXPECT_EQ(byte, 'T');
}

TEST(AccelTest, AutoFallsBackToTcgWithReason) {
  KvmProbe unusable{false, "/dev/kvm is the PVM flavour of KVM"};
  AccelChoice choice = ChooseAccel(Accel::kAuto, unusable);
  EXPECT_EQ(choice.accel, Accel::kTcg);
  EXPECT_THAT(choice.reason, HasSubstr("PVM"));
  EXPECT_EQ(ChooseAccel(Accel::kAuto, KvmProbe{true, "ok"}).accel, Accel::kKvm);
  EXPECT_EQ(ChooseAccel(Accel::kTcg, KvmProbe{true, "ok"}).accel, Accel::kTcg);
  try {
    ChooseAccel(Accel::kKvm, unusable);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kUnavailable);
    EXPECT_THAT(e.what(), HasSubstr("PVM"));
  }
}

TEST(AccelTest, ProbeDetectsMissingDeviceAndPvmModule) {
  EXPECT_FALSE(ProbeKvm("/nonexistent/kvm").usable);
  EXPECT_THAT(ProbeKvm("/nonexistent/kvm").reason, HasSubstr("cannot be opened"));
  TempDir sysfs;
  fs::create_directories(sysfs.path() / "kvm_pvm");
  if (::access("/dev/kvm", R_OK | W_OK) == 0) {
    KvmProbe probe = ProbeKvm("/dev/kvm", sysfs.path().string());
    EXPECT_FALSE(probe.usable);
    EXPECT_THAT(probe.reason, HasSubstr("PVM"));
  }
}

TEST(HostTest, TscRateIsPlausible) {
  auto khz = HostTscKhz();
  if (khz) {
    EXPECT_GT(*khz, 100'000u);     // > 100 MHz
    EXPECT_LT(*khz, 10'000'000u);  // < 10 GHz
  }
}

TEST(HostTest, MacAndTapChecks) {
  EXPECT_TRUE(IsValidMac("52:54:00:ab:cd:ef"));
  EXPECT_FALSE(IsValidMac("53:54:00:ab:cd:ef"));  // multicast
  EXPECT_FALSE(IsValidMac("52:54:00:ab:cd"));
  EXPECT_FALSE(IsValidMac("52-54-00-ab-cd-ef"));
  EXPECT_FALSE(IsTunTapDevice("lo"));  // exists, but is no TAP
  EXPECT_FALSE(IsTunTapDevice("../../etc"));
  EXPECT_FALSE(IsTunTapDevice("ephemera-none0"));
  EXPECT_GT(HostMemoryMib(), 0u);
  EXPECT_GE(HostCpuCount(), 1u);
}

TEST(TrackedProcessTest, UntrustedPidfilesAreIgnored) {
  TempDir dir;
  EXPECT_FALSE(TrackedProcess::Find(dir.path() / "absent.pid", dir.path()));
  test::WriteBytes(dir.path() / "garbage.pid", "12ab\n");
  EXPECT_FALSE(TrackedProcess::Find(dir.path() / "garbage.pid", dir.path()));
  // A live process that is not this VM's QEMU (pid reuse) is not trusted.
  test::WriteBytes(dir.path() / "self.pid", std::to_string(::getpid()) + "\n");
  EXPECT_FALSE(TrackedProcess::Find(dir.path() / "self.pid", dir.path()));
}

// A QMP peer on a unix socket speaking a scripted conversation.
class FakeQmpServer {
 public:
  FakeQmpServer(fs::path path, std::vector<std::string> replies)
      : path_(std::move(path)), replies_(std::move(replies)) {
    listen_fd_ = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path_.c_str(), sizeof addr.sun_path - 1);
    if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
        ::listen(listen_fd_, 1) != 0) {
      throw std::runtime_error("fake QMP bind failed");
    }
    thread_ = std::thread([this] { Serve(); });
  }
  ~FakeQmpServer() {
    thread_.join();
    ::close(listen_fd_);
  }
  std::vector<std::string> received;

 private:
  void Serve() {
    int fd = ::accept(listen_fd_, nullptr, nullptr);
    auto send_line = [fd](const std::string& s) {
      (void)!::write(fd, (s + "\r\n").data(), s.size() + 2);
    };
    send_line(R"({"QMP": {"version": {}, "capabilities": []}})");
    std::string pending;
    for (const auto& reply : replies_) {
      char c;
      std::string line;
      while (::read(fd, &c, 1) == 1 && c != '\n') line.push_back(c);
      received.push_back(line);
      send_line(reply);
    }
    ::close(fd);
  }
  fs::path path_;
  std::vector<std::string> replies_;
  int listen_fd_ = -1;
  std::thread thread_;
};

TEST(QmpClientTest, NegotiatesSkipsEventsAndReportsErrors) {
  TempDir dir;
  fs::path sock = dir.path() / "qmp.sock";
  std::vector<std::string> replies = {
      R"({"return": {}})",
      R"({"event": "POWERDOWN", "timestamp": {}}
{"return": {"status": "running", "running": true}})",
      R"({"error": {"class": "GenericError", "desc": "no such thing"}})"};
  auto server = std::make_unique<FakeQmpServer>(sock, replies);
  {
    QmpClient client = QmpClient::Connect(sock);
    auto status = client.Execute("query-status");
    EXPECT_EQ(status["status"], "running");
    ASSERT_EQ(client.events().size(), 1u);
    EXPECT_EQ(client.events()[0]["event"], "POWERDOWN");
    try {
      client.Execute("bogus", {{"x", 1}});
      FAIL();
    } catch (const Error& e) {
      EXPECT_THAT(e.what(), HasSubstr("no such thing"));
    }
  }
  server.reset();
}

TEST(QmpClientTest, AbsentSocketIsUnavailable) {
  TempDir dir;
  try {
    QmpClient::Connect(dir.path() / "none.sock", std::chrono::milliseconds(50));
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kUnavailable);
  }
}

TEST(ConsoleTest, FindsMarkerSplitAcrossWritesAndTimesOut) {
  TempDir dir;
  fs::path log = dir.path() / "serial.log";
  std::thread writer([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(30));
    test::WriteBytes(log, "boot...\nEPHEMERA_GU");
    std::this_thread::sleep_for(std::chrono::milliseconds(30));
    test::WriteBytes(log, "boot...\nEPHEMERA_GUEST_INIT\n");
  });
  auto waited = WaitForConsoleMarker(log, "EPHEMERA_GUEST_INIT", std::chrono::seconds(5),
                                     [] { return true; });
  writer.join();
  EXPECT_GE(waited.count(), 25);
  try {
    WaitForConsoleMarker(log, "NEVER", std::chrono::milliseconds(50), [] { return true; });
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kTimeout);
    EXPECT_THAT(e.what(), HasSubstr("EPHEMERA_GUEST_INIT"));  // the console tail is quoted
  }
  try {
    WaitForConsoleMarker(log, "NEVER", std::chrono::seconds(5), [] { return false; });
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kUnavailable);
  }
}

class QemuDriverValidationTest : public ::testing::Test {
 protected:
  QemuDriverValidationTest()
      : driver_({state_.path(), VmConfig{}, AccelChoice{Accel::kTcg, "test"}}) {
    ::chmod(images_.path().c_str(), 0755);  // as an image cache is
    test::MakeFakeKernelImage(images_.path(), "img");
    spec_.image = ImageCatalog(images_.path()).Get("img");
  }
  void ExpectRejected(const std::string& needle, ErrorCode code = ErrorCode::kInvalidArgument) {
    try {
      driver_.Start(spec_);
      ADD_FAILURE() << "started";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), code) << e.what();
      EXPECT_THAT(e.what(), HasSubstr(needle));
    }
    // Nothing is left behind by a refused start.
    EXPECT_TRUE(driver_.List().empty());
    EXPECT_FALSE(fs::exists(state_.path() / "vms" / spec_.id.str()));
  }
  TempDir state_;
  TempDir images_;
  QemuDriver driver_;
  VmSpec spec_{SandboxId::Generate()};
};

TEST_F(QemuDriverValidationTest, RejectsBadSpecsLeavingNothing) {
  spec_.memory_mib = 64;
  ExpectRejected("memory_mib 64 is out of range");
  spec_.memory_mib = 1u << 30;
  ExpectRejected("out of range");
  spec_.memory_mib = 256;
  spec_.vcpus = 0;
  ExpectRejected("vcpus 0");
  spec_.vcpus = 1;
  spec_.nic = NicSpec{"ephemera-none0", "52:54:00:00:00:01"};
  ExpectRejected("TAP device 'ephemera-none0' does not exist");
  spec_.nic.reset();
  spec_.guest_files = {{"etc/passwd", "x"}};
  ExpectRejected("must start with opt/");
  spec_.guest_files.clear();
  fs::remove(spec_.image.kernel->path);
  ExpectRejected("is missing", ErrorCode::kNotFound);
}

TEST_F(QemuDriverValidationTest, AnImageTheUnprivilegedQemuCannotReadIsRefused) {
  ::chmod(spec_.image.kernel->path.c_str(), 0600);
  ExpectRejected("not readable by QEMU's unprivileged user", ErrorCode::kFailedPrecondition);
  ::chmod(spec_.image.kernel->path.c_str(), 0644);
  ::chmod(images_.path().c_str(), 0700);
  ExpectRejected("needs o+x", ErrorCode::kFailedPrecondition);
}

TEST_F(QemuDriverValidationTest, CorruptBaseDiskFailsCloneLeavingNothing) {
  // A qcow2 header whose body is garbage: qemu-img refuses it as a backing file.
  std::string broken = std::string("QFI\xfb\x00\x00\x00\x03", 8) + std::string(504, '\xff');
  test::WriteBytes(spec_.image.rootfs->path, broken);
  spec_.image.rootfs_format = DiskFormat::kQcow2;
  ExpectRejected("cannot clone base disk", ErrorCode::kFailedPrecondition);
}

TEST_F(QemuDriverValidationTest, DestroyAndShutdownOfUnknownVmAreNoOps) {
  EXPECT_NO_THROW(driver_.Destroy(spec_.id));
  EXPECT_NO_THROW(driver_.Destroy(spec_.id));
  EXPECT_TRUE(driver_.Shutdown(spec_.id, std::chrono::milliseconds(10)));
  EXPECT_THROW(driver_.Inspect(spec_.id), Error);
}

TEST(ConsoleRecorderTest, AFloodedConsoleStaysWithinItsBoundAndKeepsTheNewestOutput) {
  TempDir dir;
  const fs::path socket = dir.path() / "console.sock";
  const fs::path log = dir.path() / "serial.log";
  UniqueFd listener(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, socket.c_str(), sizeof addr.sun_path - 1);
  ASSERT_EQ(::bind(listener.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(::listen(listener.get(), 1), 0);
  constexpr std::size_t kBound = 64 * 1024;
  ConsoleRecorder recorder(kBound);
  SandboxId id = SandboxId::Generate();
  recorder.Attach(id, socket, log);
  EXPECT_TRUE(recorder.Recording(id));
  {
    // As a guest writing to its console without pause: 8 MiB, then a last line.
    UniqueFd guest(::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
    ASSERT_TRUE(guest);
    std::string chunk(4096, 'x');
    for (int i = 0; i < 2048; ++i) {
      ASSERT_EQ(::write(guest.get(), chunk.data(), chunk.size()), 4096);
    }
    std::string last = "\nthe last line\n";
    ASSERT_EQ(::write(guest.get(), last.data(), last.size()), static_cast<ssize_t>(last.size()));
  }
  for (int i = 0; i < 500 && recorder.Recording(id); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_FALSE(recorder.Recording(id)) << "a closed console is forgotten";
  fs::path previous = log;
  previous += ".1";
  const auto total = fs::file_size(log) + (fs::exists(previous) ? fs::file_size(previous) : 0);
  EXPECT_LE(total, kBound);
  EXPECT_GT(total, kBound / 4);
  EXPECT_THAT(ConsoleTail(log, 3), HasSubstr("the last line"));
}

TEST(ConsoleRecorderTest, AConsoleNobodyServesIsAClearError) {
  TempDir dir;
  ConsoleRecorder recorder;
  try {
    recorder.Attach(SandboxId::Generate(), dir.path() / "none.sock", dir.path() / "log");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kUnavailable);
    EXPECT_THAT(e.what(), HasSubstr("none.sock"));
  }
}

TEST(QemuDriverTest, MissingQemuIsNamed) {
  TempDir state;
  VmConfig config;
  config.qemu_binary = "qemu-system-nonexistent";
  try {
    QemuDriver driver({state.path(), config, AccelChoice{Accel::kTcg, "test"}});
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kUnavailable);
    EXPECT_THAT(e.what(), HasSubstr("qemu-system-nonexistent"));
    EXPECT_THAT(e.what(), HasSubstr("qemu-system-x86"));
  }
}

}  // namespace
}  // namespace ephemera
