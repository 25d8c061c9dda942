#include "vm/qemu/accel.h"

#include <fcntl.h>
#include <linux/kvm.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "core/error.h"
#include "core/unique_fd.h"

namespace ephemera {

namespace {

// Runs a real-mode guest whose only instruction is HLT. A KVM that cannot
// enter a guest at all fails here instead of hanging a sandbox later.
std::string RunHltGuest(int kvm_fd) {
  UniqueFd vm(::ioctl(kvm_fd, KVM_CREATE_VM, 0));
  if (!vm) return fmt::format("KVM_CREATE_VM failed: {}", std::strerror(errno));
  constexpr std::size_t kMemSize = 0x1000;
  void* mem = ::mmap(nullptr, kMemSize, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) return "mmap of guest memory failed";
  static_cast<unsigned char*>(mem)[0] = 0xf4;  // hlt
  std::string failure;
  kvm_userspace_memory_region region{};
  region.slot = 0;
  region.guest_phys_addr = 0x1000;
  region.memory_size = kMemSize;
  region.userspace_addr = reinterpret_cast<std::uint64_t>(mem);
  UniqueFd vcpu;
  int run_size = 0;
  kvm_run* run = nullptr;
  kvm_sregs sregs{};
  kvm_regs regs{};
  if (::ioctl(vm.get(), KVM_SET_USER_MEMORY_REGION, &region) < 0) {
    failure = fmt::format("KVM_SET_USER_MEMORY_REGION failed: {}", std::strerror(errno));
  } else if (vcpu.reset(::ioctl(vm.get(), KVM_CREATE_VCPU, 0)); !vcpu) {
    failure = fmt::format("KVM_CREATE_VCPU failed: {}", std::strerror(errno));
  } else if ((run_size = ::ioctl(kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0)) <= 0) {
    failure = "KVM_GET_VCPU_MMAP_SIZE failed";
  } else if ((run = static_cast<kvm_run*>(::mmap(nullptr, run_size, PROT_READ | PROT_WRITE,
                                                 MAP_SHARED, vcpu.get(), 0))) == MAP_FAILED) {
    run = nullptr;
    failure = "mmap of kvm_run failed";
  } else if (::ioctl(vcpu.get(), KVM_GET_SREGS, &sregs) < 0) {
    failure = fmt::format("KVM_GET_SREGS failed: {}", std::strerror(errno));
  } else {
    sregs.cs.base = 0;
    sregs.cs.selector = 0;
    regs.rip = 0x1000;
    regs.rflags = 0x2;
    if (::ioctl(vcpu.get(), KVM_SET_SREGS, &sregs) < 0 ||
        ::ioctl(vcpu.get(), KVM_SET_REGS, &regs) < 0) {
      failure = fmt::format("setting vCPU registers failed: {}", std::strerror(errno));
    } else if (::ioctl(vcpu.get(), KVM_RUN, 0) < 0) {
      failure = fmt::format("KVM_RUN failed: {}", std::strerror(errno));
    } else if (run->exit_reason != KVM_EXIT_HLT) {
      failure = fmt::format("test guest exited with reason {} instead of HLT", run->exit_reason);
    }
  }
  if (run) ::munmap(run, run_size);
  ::munmap(mem, kMemSize);
  return failure;
}

}  // namespace

KvmProbe ProbeKvm(const std::string& device, const std::string& sysfs_module_dir) {
  KvmProbe probe;
  UniqueFd kvm(::open(device.c_str(), O_RDWR | O_CLOEXEC));
  if (!kvm) {
    probe.reason = fmt::format("{} cannot be opened: {}", device, std::strerror(errno));
    return probe;
  }
  int version = ::ioctl(kvm.get(), KVM_GET_API_VERSION, 0);
  if (version != KVM_API_VERSION) {
    probe.reason =
        fmt::format("{} reports KVM API version {}, expected {}", device, version, KVM_API_VERSION);
    return probe;
  }
  std::error_code ec;
  if (std::filesystem::exists(std::filesystem::path(sysfs_module_dir) / "kvm_pvm", ec)) {
    probe.reason = fmt::format(
        "{} is the PVM flavour of KVM (kvm_pvm is loaded), which boots only "
        "PVM-enabled guest kernels",
        device);
    return probe;
  }
  std::string failure = RunHltGuest(kvm.get());
  if (!failure.empty()) {
    probe.reason = fmt::format("{} cannot run a guest: {}", device, failure);
    return probe;
  }
  probe.usable = true;
  probe.reason = fmt::format("{} ran a test guest", device);
  return probe;
}

AccelChoice ChooseAccel(Accel requested, const KvmProbe& probe) {
  switch (requested) {
    case Accel::kTcg:
      return {Accel::kTcg, "TCG requested by configuration"};
    case Accel::kKvm:
      if (!probe.usable)
        Fail(ErrorCode::kUnavailable, "accel 'kvm' requested but {}", probe.reason);
      return {Accel::kKvm, "KVM requested by configuration: " + probe.reason};
    case Accel::kAuto:
      if (probe.usable) return {Accel::kKvm, "KVM is usable: " + probe.reason};
      return {Accel::kTcg, "falling back to TCG (software emulation): " + probe.reason};
  }
  Fail(ErrorCode::kInternal, "unknown accelerator");
}

}  // namespace ephemera
