// Network-interface facts read through ioctls, so they are right inside any
// network namespace (sysfs shows the namespace it was mounted in).
#pragma once

#include <string>

namespace ephemera {

// True when interface `name` exists in this network namespace and is a
// TUN/TAP device.
bool IsTunTapDevice(const std::string& name);

}  // namespace ephemera
