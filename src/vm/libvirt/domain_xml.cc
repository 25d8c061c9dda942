#include "vm/libvirt/domain_xml.h"

#include <fmt/format.h>

#include <algorithm>
#include <regex>

#include "core/error.h"
#include "core/text.h"

namespace ephemera {

std::string BuildDomainXml(const LibvirtDomain& d) {
  const VmSpec& spec = *d.spec;
  const bool iso = spec.image.format == ImageFormat::kIso;
  std::string x;
  auto line = [&x](std::string_view text) {
    x += text;
    x += '\n';
  };
  line(fmt::format("<domain type='{}'>", d.kvm ? "kvm" : "qemu"));
  line(fmt::format("  <name>{}</name>", spec.id.str()));
  line(fmt::format("  <uuid>{}</uuid>", spec.id.str()));
  line("  <title>ephemera sandbox</title>");
  line("  <metadata>");
  line(fmt::format("    <{0}:sandbox xmlns:{0}='{1}'>", kLibvirtMetadataPrefix,
                   kLibvirtMetadataUri));
  line(fmt::format("      <{0}:owner>{1}</{0}:owner>", kLibvirtMetadataPrefix,
                   XmlEscape(spec.owner)));
  line(fmt::format("      <{0}:image>{1}</{0}:image>", kLibvirtMetadataPrefix,
                   XmlEscape(spec.image.name)));
  line(
      fmt::format("      <{0}:created>{1}</{0}:created>", kLibvirtMetadataPrefix, spec.created_at));
  line(fmt::format("    </{}:sandbox>", kLibvirtMetadataPrefix));
  line("  </metadata>");
  line(fmt::format("  <memory unit='MiB'>{}</memory>", spec.memory_mib));
  line(fmt::format("  <currentMemory unit='MiB'>{}</currentMemory>", spec.memory_mib));
  line(fmt::format("  <vcpu>{}</vcpu>", spec.vcpus));
  if (!spec.guest_files.empty()) {
    // Per-sandbox files through fw_cfg, as the qemu driver hands them.
    // Public ones inline; secret ones (the agent's token, a host key) by
    // the path of a file libvirt labels for QEMU, which reads it at start.
    line("  <sysinfo type='fwcfg'>");
    for (const auto& file : spec.guest_files) {
      if (!file.secret) {
        line(fmt::format("    <entry name='{}'>{}</entry>", XmlEscape(file.name),
                         XmlEscape(file.content)));
        continue;
      }
      auto found = std::find_if(d.secret_files.begin(), d.secret_files.end(),
                                [&](const auto& entry) { return entry.first == file.name; });
      if (found == d.secret_files.end()) {
        Fail(ErrorCode::kInvalidArgument,
             "guest file {} is secret and has no file of its own: libvirt would put it on "
             "QEMU's command line",
             file.name);
      }
      line(fmt::format("    <entry name='{}' file='{}'/>", XmlEscape(file.name),
                       XmlEscape(found->second.string())));
    }
    line("  </sysinfo>");
  }
  line("  <os>");
  line(fmt::format("    <type arch='x86_64' machine='{}'>hvm</type>", iso ? "pc" : "q35"));
  if (iso) {
    line("    <boot dev='hd'/>");
    line("    <boot dev='cdrom'/>");
  } else {
    std::string cmdline = spec.image.cmdline;
    if (!d.kvm && d.tsc_khz) cmdline += fmt::format(" tsc_early_khz={}", *d.tsc_khz);
    if (!spec.extra_cmdline.empty()) cmdline += " " + spec.extra_cmdline;
    line(fmt::format("    <kernel>{}</kernel>", XmlEscape(spec.image.kernel->path.string())));
    line(fmt::format("    <initrd>{}</initrd>", XmlEscape(spec.image.initrd->path.string())));
    line(fmt::format("    <cmdline>{}</cmdline>", XmlEscape(cmdline)));
  }
  line("  </os>");
  line("  <features>");
  line("    <acpi/>");
  line("    <apic/>");
  line("    <vmport state='off'/>");
  line("    <vmcoreinfo state='off'/>");
  if (!d.kvm && d.tcg_tb_size_mib) {
    // As the qemu driver bounds it: QEMU's default reserves 1 GiB per VM.
    line("    <tcg>");
    line(fmt::format("      <tb-cache unit='MiB'>{}</tb-cache>", d.tcg_tb_size_mib));
    line("    </tcg>");
  }
  line("  </features>");
  line(d.kvm ? "  <cpu mode='host-passthrough'/>" : "  <cpu mode='maximum'/>");
  line("  <clock offset='utc'>");
  line("    <timer name='rtc' tickpolicy='catchup'/>");
  line("    <timer name='pit' tickpolicy='delay'/>");
  line("    <timer name='hpet' present='no'/>");
  line("  </clock>");
  // A guest that powers off or reboots is done, as with the qemu driver.
  line("  <on_poweroff>destroy</on_poweroff>");
  line("  <on_reboot>destroy</on_reboot>");
  line("  <on_crash>destroy</on_crash>");
  line("  <pm>");
  line("    <suspend-to-mem enabled='yes'/>");
  line("    <suspend-to-disk enabled='yes'/>");
  line("  </pm>");
  line("  <devices>");
  line(fmt::format("    <emulator>{}</emulator>", XmlEscape(d.emulator)));
  if (iso) {
    line("    <disk type='file' device='cdrom'>");
    line("      <driver name='qemu' type='raw'/>");
    line(fmt::format("      <source file='{}'/>", XmlEscape(spec.image.iso->path.string())));
    line("      <target dev='hdc' bus='ide'/>");
    line("      <readonly/>");
    line("    </disk>");
  } else {
    line("    <disk type='file' device='disk'>");
    line("      <driver name='qemu' type='qcow2' discard='unmap'/>");
    line(fmt::format("      <source file='{}'/>", XmlEscape(d.overlay.string())));
    line("      <target dev='vda' bus='virtio'/>");
    line("    </disk>");
  }
  if (spec.nic) {
    line("    <interface type='network'>");
    line(fmt::format("      <source network='{}'/>", XmlEscape(d.network)));
    line(fmt::format("      <mac address='{}'/>", XmlEscape(spec.nic->mac)));
    line("      <model type='virtio'/>");
    if (!d.filter.empty()) {
      line(fmt::format("      <filterref filter='{}'>", XmlEscape(d.filter)));
      for (const auto& [name, value] : d.filter_parameters) {
        line(fmt::format("        <parameter name='{}' value='{}'/>", XmlEscape(name),
                         XmlEscape(value)));
      }
      line("      </filterref>");
    }
    line("    </interface>");
  }
  // `virsh console` attaches to the pty; virtlogd keeps a bounded log.
  line("    <serial type='pty'>");
  line(fmt::format("      <log file='{}' append='off'/>", XmlEscape(d.serial_log.string())));
  line("      <target type='isa-serial' port='0'/>");
  line("    </serial>");
  line("    <console type='pty'>");
  line("      <target type='serial' port='0'/>");
  line("    </console>");
  if (spec.agent_channel) {
    // The agent's port, off the guest's network; libvirt picks the socket's
    // path (a folder its QEMU user may write) and shows it in the live XML.
    line("    <channel type='unix'>");
    line("      <source mode='bind'/>");
    line(fmt::format("      <target type='virtio' name='{}'/>", kAgentChannelName));
    line("    </channel>");
  }
  line("    <memballoon model='virtio'/>");
  line("    <rng model='virtio'>");
  line("      <backend model='random'>/dev/urandom</backend>");
  line("    </rng>");
  line("  </devices>");
  line("</domain>");
  return x;
}

std::filesystem::path AgentSocketInDomainXml(std::string_view xml) {
  // libvirt writes the source before the target within each <channel>.
  static const std::regex channel(
      "<channel type='unix'>\\s*<source mode='bind' path='([^']+)'/>\\s*"
      "<target type='virtio' name='([^']+)'");
  for (std::cregex_iterator it(xml.data(), xml.data() + xml.size(), channel), end; it != end;
       ++it) {
    // Under libvirt's channel folder, named by the domain's number and
    // name (our UUID): nothing in it needs unescaping.
    if ((*it)[2].str() == kAgentChannelName && (*it)[1].str().find('&') == std::string::npos) {
      return (*it)[1].str();
    }
  }
  return {};
}

std::string BuildNetworkXml(const LibvirtNetwork& n) {
  std::string x;
  auto line = [&x](std::string_view text) {
    x += text;
    x += '\n';
  };
  line("<network xmlns:dnsmasq='http://libvirt.org/schemas/network/dnsmasq/1.0'>");
  line(fmt::format("  <name>{}</name>", XmlEscape(n.name)));
  line(fmt::format("  <bridge name='{}' stp='off' delay='0'/>", XmlEscape(n.bridge)));
  if (n.nat) line("  <forward mode='nat'/>");
  // The guest resolves names with the servers DHCP gives it, as the qemu
  // driver's do; libvirt's DNS on the bridge stays off.
  line("  <dns enable='no'/>");
  line(fmt::format("  <ip address='{}' netmask='{}'>", n.subnet.gateway().str(),
                   Subnet30::kNetmask));
  line("    <dhcp>");
  line(fmt::format("      <range start='{0}' end='{0}'/>", n.subnet.guest().str()));
  line(fmt::format("      <host mac='{}' ip='{}'/>", XmlEscape(n.guest_mac),
                   n.subnet.guest().str()));
  line("    </dhcp>");
  line("  </ip>");
  if (!n.dns_servers.empty()) {
    std::string servers;
    for (const auto& s : n.dns_servers) servers += (servers.empty() ? "" : ",") + s.str();
    line("  <dnsmasq:options>");
    line(fmt::format("    <dnsmasq:option value='dhcp-option=option:dns-server,{}'/>", servers));
    line("  </dnsmasq:options>");
  }
  line("</network>");
  return x;
}

std::string BuildIsolationFilterXml(const std::string& name, const Ipv4Cidr& subnet, Ipv4 gateway) {
  const std::string net = subnet.base.str();
  const std::string gw = gateway.str();
  // Before clean-traffic's own rules (it accepts all IPv4 out at -650):
  // the gateway first, then nothing else of the subnet, either way.
  return fmt::format(
      "<filter name='{0}' chain='root'>\n"
      "  <filterref filter='clean-traffic'/>\n"
      "  <rule action='accept' direction='out' priority='-950'><ip dstipaddr='{1}'/></rule>\n"
      "  <rule action='accept' direction='in' priority='-950'><ip srcipaddr='{1}'/></rule>\n"
      "  <rule action='drop' direction='out' priority='-940'>"
      "<ip dstipaddr='{2}' dstipmask='{3}'/></rule>\n"
      "  <rule action='drop' direction='in' priority='-940'>"
      "<ip srcipaddr='{2}' srcipmask='{3}'/></rule>\n"
      "</filter>\n",
      XmlEscape(name), gw, net, subnet.prefix);
}

}  // namespace ephemera
