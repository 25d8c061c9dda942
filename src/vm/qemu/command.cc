#include "vm/qemu/command.h"

#include <fmt/format.h>

#include "core/error.h"

namespace ephemera {

void CheckQemuOptionValue(const std::string& what, const std::string& value) {
  // ',' separates QEMU sub-options (escaping is ",,"); refuse rather than escape
  // so that no path can smuggle in an extra option.
  if (value.find(',') != std::string::npos || value.find('\n') != std::string::npos) {
    Fail(ErrorCode::kInvalidArgument,
         "{} '{}' contains a ',' or newline, which QEMU options cannot carry", what, value);
  }
}

std::string QemuProcessMarker(const SandboxId& id) { return "-uuid " + id.str() + " "; }

void UseAnonymousMemory(std::vector<std::string>& argv) {
  constexpr std::string_view kFile = "memory-backend-file,id=mem0,";
  for (std::string& arg : argv) {
    if (!arg.starts_with(kFile)) continue;
    const std::size_t size = arg.find("size=");
    arg = "memory-backend-ram,id=mem0," + arg.substr(size, arg.find(',', size) - size);
    return;
  }
  Fail(ErrorCode::kInvalidArgument, "the command line maps no memory file");
}

std::vector<std::string> BuildQemuArgs(const QemuLaunch& launch) {
  const VmSpec& spec = launch.spec;
  const VmDir& dir = launch.dir;
  const bool microvm = launch.machine == MachineType::kMicrovm;
  const bool iso = spec.image.format == ImageFormat::kIso;
  for (const auto& path : {dir.root.string(), launch.binary}) CheckQemuOptionValue("path", path);

  std::vector<std::string> args = {launch.binary};
  auto add = [&args](std::initializer_list<std::string> items) {
    args.insert(args.end(), items.begin(), items.end());
  };
  add({"-name", fmt::format("ephemera-{},debug-threads=on", spec.id.ShortName())});
  add({"-uuid", spec.id.str()});
  const bool file_memory = launch.memory != GuestMemory::kAnonymous;
  if (file_memory && iso) {
    Fail(ErrorCode::kInvalidArgument, "a live ISO's VM cannot map its memory from a snapshot");
  }
  // Same backend id on both sides: the migration stream names RAM by it.
  // Not mergeable unless asked: pages KSM shares between VMs are a timing channel.
  const std::string options = std::string(launch.mem_merge ? ",mem-merge=on" : ",mem-merge=off") +
                              (file_memory ? ",memory-backend=mem0" : "");
  if (iso) {
    // Firmware boot of a live ISO, as Anweddol's domain XML does.
    add({"-machine", "pc" + options});
  } else if (microvm) {
    // No PCI, no firmware: the fastest path to the guest kernel under TCG.
    add({"-machine", "microvm,acpi=on" + options});
  } else {
    add({"-machine", "q35" + options});
  }
  if (file_memory) {
    // Through /proc/self/fd: QEMU 7.2 takes only a path; the daemon sealed
    // the file against writes, so a private mapping is all QEMU can have.
    add({"-object",
         fmt::format("memory-backend-file,id=mem0,size={}M,mem-path=/proc/self/fd/{},share={}",
                     spec.memory_mib, kMemoryFd,
                     launch.memory == GuestMemory::kSharedFile ? "on" : "off")});
  }
  if (launch.accel == Accel::kKvm) {
    add({"-accel", "kvm", "-cpu", "host"});
  } else {
    add({"-accel", fmt::format("tcg,tb-size={}", launch.tcg_tb_size_mib), "-cpu", "max"});
  }
  add({"-m", std::to_string(spec.memory_mib), "-smp", std::to_string(spec.vcpus)});
  // A guest reboot ends the VM: a sandbox that reboots is done, like one that powers off.
  add({"-nodefaults", "-no-user-config", "-display", "none", "-no-reboot"});
  // Paused until the daemon has attached the console, so no boot line is lost.
  add({"-S"});
  if (launch.seccomp_sandbox) {
    // QEMU's own seccomp filter: no obsolete syscalls, no set*id, no new
    // processes, no scheduler or resource changes (as libvirt runs it).
    add({"-sandbox", "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"});
  }

  const std::string blk = microvm && !iso ? "virtio-blk-device" : "virtio-blk-pci";
  const std::string net = microvm && !iso ? "virtio-net-device" : "virtio-net-pci";
  if (iso) {
    CheckQemuOptionValue("ISO path", spec.image.iso->path.string());
    add({"-drive", fmt::format("id=cd0,file={},format=raw,media=cdrom,readonly=on,if=ide",
                               spec.image.iso->path.string())});
    add({"-boot", "order=d"});
  } else {
    CheckQemuOptionValue("kernel path", spec.image.kernel->path.string());
    CheckQemuOptionValue("initrd path", spec.image.initrd->path.string());
    std::string cmdline = spec.image.cmdline;
    if (microvm && launch.accel == Accel::kTcg && launch.tsc_khz) {
      cmdline += fmt::format(" tsc_early_khz={}", *launch.tsc_khz);
    }
    if (!spec.extra_cmdline.empty()) cmdline += " " + spec.extra_cmdline;
    add({"-kernel", spec.image.kernel->path.string(), "-initrd", spec.image.initrd->path.string(),
         "-append", cmdline});
    add({"-add-fd", fmt::format("fd={},set=1", kDiskFd), "-add-fd",
         fmt::format("fd={},set=1", kDiskReadOnlyFd)});
    if (launch.backing_fd) add({"-add-fd", fmt::format("fd={},set=2", kBackingFd)});
    add({"-drive", "id=root,file=/dev/fdset/1,format=qcow2,if=none,discard=unmap,cache=writeback"});
    add({"-device", fmt::format("{},drive=root", blk)});
  }
  if (spec.nic) {
    CheckQemuOptionValue("TAP name", spec.nic->tap);
    CheckQemuOptionValue("MAC address", spec.nic->mac);
    add({"-netdev", fmt::format("tap,id=net0,fd={}", kTapFd)});
    add({"-device", fmt::format("{},netdev=net0,mac={}", net, spec.nic->mac)});
  }
  for (std::size_t i = 0; i < spec.guest_files.size(); ++i) {
    CheckQemuOptionValue("guest file name", spec.guest_files[i].name);
    // Read through the descriptor: the VM's folder is closed to QEMU's uid.
    add({"-fw_cfg", fmt::format("name={},file=/dev/fd/{}", spec.guest_files[i].name,
                                kFirstGuestFileFd + static_cast<int>(i))});
  }
  if (spec.agent_channel && !iso) {
    // The agent's port: the daemon's channel into the guest, off its network.
    add({"-device", microvm ? "virtio-serial-device" : "virtio-serial-pci"});
    add({"-chardev", fmt::format("socket,id=agent0,fd={},server=on,wait=off", kAgentFd)});
    add({"-device", fmt::format("virtserialport,chardev=agent0,name={}", kAgentChannelName)});
  }
  add({"-chardev", fmt::format("socket,id=serial0,fd={},server=on,wait=off", kConsoleFd), "-serial",
       "chardev:serial0"});
  add({"-chardev", fmt::format("socket,id=qmp,fd={},server=on,wait=off", kQmpFd), "-mon",
       "chardev=qmp,mode=control"});
  return args;
}

}  // namespace ephemera
