// Facts about the host that bound what a VM may ask for.
#pragma once

#include <cstdint>
#include <string>

namespace ephemera {

std::uint64_t HostMemoryMib();  // MemTotal from /proc/meminfo
unsigned HostCpuCount();        // online CPUs
bool IsValidMac(const std::string& mac);

}  // namespace ephemera
