// The guest contract (DESIGN.md) added to a root filesystem imported from
// an OCI image that lacks it, at import, on the unpacked tree: nothing is
// mounted, and nothing is patched per sandbox. A distro root filesystem
// with systemd, openssh-server and sudo (as kernel-testing's images are)
// gets:
//   - the `endpoint` account (locked until its per-sandbox key arrives),
//     its sudo rule for /bin/anweddol_container_setup.sh, and that script;
//   - ephemera's sshd_config (AllowUsers endpoint, one ed25519 host key),
//     and no host keys from the image: each sandbox gets its own;
//   - ephemera-guest.service, early in boot: the host key and the endpoint
//     key from fw_cfg (the same script the default image's rcS runs);
//   - the sandbox's /30 taken by the initrd (kGuestContractCmdline):
//     container images often have neither a DHCP client nor udev;
//   - console gettys, module-load units and apt's timers masked, and a
//     volatile journal (they only slow a sandbox's boot);
//   - every password of the image locked (root:root in kernel-testing's
//     images), and an empty machine-id, so that no well-known secret or
//     shared identity reaches a running sandbox.
#pragma once

#include <filesystem>
#include <string>

namespace ephemera::oci {

enum class GuestContract {
  kPresent,  // the tree follows the contract already (the default image)
  kAdded,
};

// Where the booted kernel's modules are: elsewhere (a kernel image's,
// whose modules the tree lacks: module loads are masked), or in the tree
// (its own kernel).
enum class KernelModules { kElsewhere, kInTree };

// Every write resolves inside `root` (symlinks in the tree cannot lead
// out). kFailedPrecondition naming `what` for a tree that lacks what the
// contract needs (systemd, sudo, an ssh unit) or has an `endpoint`
// account of its own.
GuestContract AdoptGuestContract(const std::filesystem::path& root, const std::string& what,
                                 KernelModules modules = KernelModules::kElsewhere);

// What the kernel command line needs for a tree the contract was added to:
// the default kernel image's initrd then takes the address by DHCP.
inline constexpr char kGuestContractCmdline[] = " ephemera.dhcp=initrd";

// The TCG translation cache such a tree's boot needs: systemd, its
// libraries and a distribution's tools outgrow 64 MiB, and a full cache
// is flushed and every block translated again (docs/benchmarks.md:
// create to SSH-ready, 128 vs 32 MiB).
inline constexpr unsigned kGuestContractTcgTbSizeMib = 128;

}  // namespace ephemera::oci
