// The XML documents the libvirt driver hands to libvirt, built by pure
// functions so that each is tested as text: a sandbox's domain (after
// Anweddol's container domain), its isolated network (a /30 of ephemera's
// pool, DHCP for exactly the guest's MAC), and the network filter that keeps
// guests on a shared bridge from reaching each other.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/ipv4.h"
#include "vm/vm.h"

namespace ephemera {

// ephemera's own <metadata> element, so that reconcile can tell its
// domains from an operator's.
inline constexpr std::string_view kLibvirtMetadataUri = "https://ephemera.dev/xmlns/sandbox/1";
inline constexpr std::string_view kLibvirtMetadataPrefix = "ephemera";

struct LibvirtDomain {
  const VmSpec* spec = nullptr;
  bool kvm = false;                      // domain type kvm (host CPU) or qemu (TCG)
  std::string emulator;                  // the QEMU binary
  std::filesystem::path overlay;         // the qcow2 clone (kernel images)
  std::filesystem::path serial_log;      // virtlogd writes the console here
  std::optional<std::uint64_t> tsc_khz;  // passed to guests under TCG
  unsigned tcg_tb_size_mib = 0;          // TCG translation cache (0: QEMU's own, 1 GiB)
  // How the NIC attaches: a libvirt network by name, optionally with a
  // network filter and its parameters.
  std::string network;
  std::string filter;
  std::vector<std::pair<std::string, std::string>> filter_parameters;
  // Where each secret guest file (by name) waits for QEMU to read it:
  // referenced by path, never inlined, so that no command line or domain
  // XML holds its content.
  std::vector<std::pair<std::string, std::filesystem::path>> secret_files;
};

std::string BuildDomainXml(const LibvirtDomain& domain);

// The host end of the guest agent's channel in a live domain's XML, where
// libvirt chose its path; empty when the domain has none.
std::filesystem::path AgentSocketInDomainXml(std::string_view xml);

struct LibvirtNetwork {
  std::string name;    // the libvirt network's name
  std::string bridge;  // the bridge device libvirt makes for it
  Subnet30 subnet;
  std::string guest_mac;
  std::vector<Ipv4> dns_servers;  // offered by DHCP (libvirt's own DNS is off)
  bool nat = false;
};

std::string BuildNetworkXml(const LibvirtNetwork& network);

// A filter for one guest on a shared bridge: libvirt's clean-traffic (no
// spoofed MAC, IP or ARP), and no IP traffic with any address of the
// bridge's subnet but its gateway, either way.
std::string BuildIsolationFilterXml(const std::string& name, const Ipv4Cidr& subnet, Ipv4 gateway);

}  // namespace ephemera
