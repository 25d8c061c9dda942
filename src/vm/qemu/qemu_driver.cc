#include "vm/qemu/qemu_driver.h"

#include <sys/stat.h>

#include <spdlog/spdlog.h>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/fs.h"
#include "core/netdev.h"
#include "core/subprocess.h"
#include "core/tracked_process.h"
#include "vm/qemu/command.h"
#include "vm/qemu/host.h"
#include "vm/qemu/qmp.h"
#include "vm/qemu/vm_dir.h"

namespace ephemera {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace {

constexpr unsigned kMinMemoryMib = 128;
constexpr auto kLaunchTimeout = 30s;

fs::path RequireProgram(const std::string& name, const std::string& package) {
  auto path = FindProgram(name);
  if (!path) {
    Fail(ErrorCode::kUnavailable, "'{}' not found (install the Debian package {})", name, package);
  }
  return *path;
}

bool IsValidGuestFileName(const std::string& name) {
  // QEMU reserves names outside opt/; keep ours to a plain character set.
  if (name.rfind("opt/", 0) != 0 || name.size() > 55) return false;
  for (char c : name) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '/' && c != '_' && c != '.' &&
        c != '-') {
      return false;
    }
  }
  return name.find("..") == std::string::npos;
}

}  // namespace

QemuDriver::QemuDriver(QemuDriverOptions options) : options_(std::move(options)) {
  qemu_binary_ = RequireProgram(options_.vm.qemu_binary, "qemu-system-x86");
  qemu_img_binary_ = RequireProgram(options_.vm.qemu_img_binary, "qemu-utils");
  MakeDirs(vms_dir(), 0700);
  if (options_.accel.accel == Accel::kTcg && options_.vm.machine == MachineType::kMicrovm) {
    tsc_khz_ = HostTscKhz();
    spdlog::info("qemu: host TSC {} kHz, passed to microvm guests",
                 tsc_khz_ ? std::to_string(*tsc_khz_) : "unknown (not invariant)");
  }
}

void QemuDriver::Validate(const VmSpec& spec) const {
  const std::uint64_t host_mib = HostMemoryMib();
  if (spec.memory_mib < kMinMemoryMib || spec.memory_mib > host_mib) {
    Fail(ErrorCode::kInvalidArgument,
         "memory_mib {} is out of range [{}, {}] (the host has {} MiB)", spec.memory_mib,
         kMinMemoryMib, host_mib, host_mib);
  }
  const unsigned host_cpus = HostCpuCount();
  if (spec.vcpus < 1 || spec.vcpus > host_cpus) {
    Fail(ErrorCode::kInvalidArgument, "vcpus {} is out of range [1, {}] (the host's CPUs)",
         spec.vcpus, host_cpus);
  }
  const Image& image = spec.image;
  if (image.format == ImageFormat::kKernel) {
    if (!image.kernel || !image.initrd || !image.rootfs) {
      Fail(ErrorCode::kInvalidArgument, "image '{}' lacks a kernel, initrd or rootfs", image.name);
    }
    for (const ImageFile* file : {&*image.kernel, &*image.initrd, &*image.rootfs}) {
      if (!fs::is_regular_file(file->path)) {
        Fail(ErrorCode::kNotFound, "image '{}' file {} is missing", image.name,
             file->path.string());
      }
    }
  } else if (!image.iso || !fs::is_regular_file(image.iso->path)) {
    Fail(ErrorCode::kNotFound, "image '{}' has no ISO file", image.name);
  }
  if (spec.nic) {
    if (!IsTunTapDevice(spec.nic->tap)) {
      Fail(ErrorCode::kInvalidArgument, "TAP device '{}' does not exist", spec.nic->tap);
    }
    if (!IsValidMac(spec.nic->mac)) {
      Fail(ErrorCode::kInvalidArgument, "'{}' is not a unicast MAC address", spec.nic->mac);
    }
  }
  for (const auto& file : spec.guest_files) {
    if (!IsValidGuestFileName(file.name)) {
      Fail(ErrorCode::kInvalidArgument,
           "guest file name '{}' must start with opt/ and use [A-Za-z0-9/_.-]", file.name);
    }
  }
}

VmInfo QemuDriver::Start(const VmSpec& spec) {
  Validate(spec);
  VmDir dir = VmDir::For(vms_dir(), spec.id);
  if (::mkdir(dir.root.c_str(), 0700) != 0) {
    if (errno == EEXIST)
      Fail(ErrorCode::kAlreadyExists, "a VM with id {} already exists", spec.id.str());
    FailErrno(fmt::format("cannot create {}", dir.root.string()), errno);
  }
  try {
    CreateFiles(spec, dir);
    Launch(spec, dir);
    return Inspect(spec.id);
  } catch (...) {
    try {
      Destroy(spec.id);
    } catch (const Error& cleanup) {
      spdlog::error("vm {}: cleanup after failed start: {}", spec.id.str(), cleanup.what());
    }
    throw;
  }
}

void QemuDriver::CreateFiles(const VmSpec& spec, const VmDir& dir) const {
  if (spec.image.format == ImageFormat::kKernel) {
    // The copy-on-write clone: the base stays read-only and shared.
    auto result = RunProcess({qemu_img_binary_.string(), "create", "-q", "-f", "qcow2", "-F",
                              std::string(DiskFormatName(spec.image.rootfs_format)), "-b",
                              spec.image.rootfs->path.string(), dir.overlay().string()},
                             kLaunchTimeout);
    if (!result.ok()) {
      std::string detail = result.err.empty() ? result.out : result.err;
      while (!detail.empty() && detail.back() == '\n') detail.pop_back();
      ErrorCode code = detail.find("No space left") != std::string::npos
                           ? ErrorCode::kResourceExhausted
                           : ErrorCode::kFailedPrecondition;
      Fail(code, "cannot clone base disk {}: {}", spec.image.rootfs->path.string(), detail);
    }
  }
  for (std::size_t i = 0; i < spec.guest_files.size(); ++i) {
    WriteFileAtomic(dir.guest_file(i), spec.guest_files[i].content, 0600);
  }
  nlohmann::json metadata = {
      {"id", spec.id.str()},
      {"image", spec.image.name},
      {"image_version", spec.image.version},
      {"image_sha256", spec.image.PrimarySha256()},
      {"memory_mib", spec.memory_mib},
      {"vcpus", spec.vcpus},
      {"machine", std::string(MachineTypeName(options_.vm.machine))},
      {"accel", std::string(AccelName(options_.accel.accel))},
      {"tap", spec.nic ? spec.nic->tap : ""},
  };
  WriteFileAtomic(dir.metadata(), metadata.dump(2) + "\n", 0600);
}

void QemuDriver::Launch(const VmSpec& spec, const VmDir& dir) const {
  QemuLaunch launch{.binary = qemu_binary_.string(),
                    .machine = options_.vm.machine,
                    .accel = options_.accel.accel,
                    .tcg_tb_size_mib = options_.vm.tcg_tb_size_mib,
                    .tsc_khz = tsc_khz_,
                    .spec = spec,
                    .dir = dir};
  // With -daemonize, QEMU returns once the VM is set up (or has failed), so
  // its exit status and stderr say whether the start worked.
  ProcessResult result = RunProcess(BuildQemuArgs(launch), kLaunchTimeout);
  if (!result.ok()) {
    std::string detail = result.err;
    while (!detail.empty() && detail.back() == '\n') detail.pop_back();
    Fail(ErrorCode::kFailedPrecondition, "QEMU failed to start VM {}: {}", spec.id.str(),
         detail.empty() ? "exit status " + std::to_string(result.exit_code) : detail);
  }
  if (!TrackedProcess::Find(dir.pidfile(), dir.root)) {
    Fail(ErrorCode::kInternal, "QEMU reported success but VM {} is not running", spec.id.str());
  }
  spdlog::info("vm {}: started ({} MiB, {} vCPU, {}, {})", spec.id.str(), spec.memory_mib,
               spec.vcpus, MachineTypeName(options_.vm.machine), AccelName(options_.accel.accel));
}

VmInfo QemuDriver::Inspect(const SandboxId& id) {
  VmDir dir = VmDir::For(vms_dir(), id);
  if (!fs::is_directory(dir.root)) Fail(ErrorCode::kNotFound, "no VM with id {}", id.str());
  VmInfo info{id, VmState::kShutoff, 0, dir.root, dir.serial_log()};
  auto process = TrackedProcess::Find(dir.pidfile(), dir.root);
  if (!process) return info;
  info.pid = process->pid();
  info.state = VmState::kRunning;
  try {
    auto status = QmpClient::Connect(dir.qmp_socket(), 2s).Execute("query-status");
    if (status.value("status", std::string()) == "paused") info.state = VmState::kPaused;
  } catch (const Error&) {
    // The process may be exiting; its liveness is the authority.
    if (!process->Alive()) info.state = VmState::kShutoff;
  }
  return info;
}

bool QemuDriver::Shutdown(const SandboxId& id, std::chrono::milliseconds timeout) {
  VmDir dir = VmDir::For(vms_dir(), id);
  auto process = TrackedProcess::Find(dir.pidfile(), dir.root);
  if (!process) return true;
  try {
    QmpClient::Connect(dir.qmp_socket(), 2s).Execute("system_powerdown");
  } catch (const Error& e) {
    if (!process->Alive()) return true;
    spdlog::warn("vm {}: system_powerdown failed: {}", id.str(), e.what());
    return false;
  }
  return process->WaitExit(timeout);
}

void QemuDriver::Destroy(const SandboxId& id) {
  VmDir dir = VmDir::For(vms_dir(), id);
  if (auto process = TrackedProcess::Find(dir.pidfile(), dir.root)) {
    // A hard stop: the disk is thrown away, so nothing needs flushing.
    process->Kill();
    if (!process->WaitExit(10s)) {
      Fail(ErrorCode::kInternal, "QEMU pid {} of VM {} did not exit after SIGKILL", process->pid(),
           id.str());
    }
  }
  RemoveAll(dir.root);
}

std::vector<SandboxId> QemuDriver::List() {
  std::vector<SandboxId> ids;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(vms_dir(), ec)) {
    std::string name = entry.path().filename().string();
    if (entry.is_directory() && SandboxId::IsValid(name)) ids.push_back(SandboxId::Parse(name));
  }
  std::sort(ids.begin(), ids.end());
  return ids;
}

}  // namespace ephemera
