// A root filesystem that carries its distribution's kernel serves as its
// own kernel image (Debian and Ubuntu: /boot/vmlinuz-VERSION; Fedora also
// /lib/modules/VERSION/vmlinuz). The compressed kernel is unpacked to the
// ELF vmlinux inside it, booted through its PVH entry as the default image
// is (no self-decompression under TCG). The initrd is ephemera's own: the
// default image's busybox and /init, with this kernel's modules for the
// virtio disk and NIC, ext4 and fw_cfg taken from the tree's
// /lib/modules/VERSION, so DHCP and the root mount work as for any image.
// Every path is resolved inside the tree: its links cannot lead out.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ephemera::oci {

struct TreeKernel {
  std::string version;  // "6.1.0-13-amd64"
  std::string path;     // in the tree, "boot/vmlinuz-6.1.0-13-amd64"
};

// The tree's kernel (the highest version when there are several), or none.
std::optional<TreeKernel> FindTreeKernel(const std::filesystem::path& root);

// The ELF vmlinux inside a bzImage (its payload, any compression
// libarchive reads: gzip, xz, zstd, lz4, bzip2), checked for the PVH note
// QEMU boots it by. kFailedPrecondition naming `what` otherwise.
std::string UnpackBzImage(std::string_view bzimage, const std::string& what);

// Whether an ELF64 kernel carries the Xen PVH entry note (type 18).
bool HasPvhEntry(std::string_view elf);

// The modules of `wanted` (names as in /sys/module) and their dependencies
// from modules.dep, dependencies first, as paths under
// lib/modules/VERSION; built-in ones (modules.builtin) are left out.
// kFailedPrecondition for a module the kernel has neither way.
std::vector<std::string> ModuleClosure(const std::string& modules_dep,
                                       const std::string& modules_builtin,
                                       const std::vector<std::string>& wanted,
                                       const std::string& what);

// Writes OUT/vmlinux and OUT/initrd.img for the tree's kernel, the initrd
// from `base_initrd` (ephemera's, gzip'd newc cpio) without its modules,
// plus the kernel's own.
void ExtractTreeKernel(const std::filesystem::path& root, const TreeKernel& kernel,
                       const std::filesystem::path& base_initrd, const std::filesystem::path& out,
                       const std::string& what);

}  // namespace ephemera::oci
