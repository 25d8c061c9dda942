// Facts about the host that bound what a VM may ask for.
#pragma once

#include <cstdint>
#include <string>

namespace ephemera {

std::uint64_t HostMemoryMib();  // MemTotal from /proc/meminfo
unsigned HostCpuCount();        // online CPUs
// True when /sys/class/net/NAME exists and is a TUN/TAP device.
bool IsTapDevice(const std::string& name);
bool IsValidMac(const std::string& mac);

}  // namespace ephemera
