// Facts about the host that bound what a VM may ask for.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace ephemera {

std::uint64_t HostMemoryMib();  // MemTotal from /proc/meminfo
unsigned HostCpuCount();        // online CPUs
bool IsValidMac(const std::string& mac);

// The host's TSC rate in kHz, measured against CLOCK_MONOTONIC_RAW (or
// nullopt without an invariant TSC). Under TCG the guest's TSC runs at this
// rate; telling the guest kernel (tsc_early_khz=) spares it calibrating
// against the PIT, which on microvm hangs the boot when the host is busy.
std::optional<std::uint64_t> HostTscKhz();

}  // namespace ephemera
