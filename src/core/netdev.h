// Network-interface facts read through ioctls, so they are right inside any
// network namespace (sysfs shows the namespace it was mounted in).
#pragma once

#include <string>

#include "core/unique_fd.h"

namespace ephemera {

// True when interface `name` exists in this network namespace and is a
// TUN/TAP device.
bool IsTunTapDevice(const std::string& name);

// A queue of the existing TAP `name` (IFF_VNET_HDR, as QEMU uses it), to
// hand to QEMU as -netdev tap,fd=N so that QEMU itself needs no
// privilege over network devices. kNotFound if there is no such TAP.
UniqueFd OpenTap(const std::string& name);

// A new TAP that exists only while the descriptor is open, down, with no
// address and attached to nothing: a NIC backend for a VM that must have
// one but must reach nobody (a snapshot template). Its name in `*name`.
UniqueFd OpenScratchTap(std::string* name);

}  // namespace ephemera
