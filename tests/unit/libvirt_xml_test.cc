// The libvirt driver's XML documents, checked as text (they are built by
// pure functions; the e2e tests hand them to a real libvirtd).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "core/error.h"
#include "image/catalog.h"
#include "unit/error_of.h"
#include "unit/test_files.h"
#include "vm/libvirt/domain_xml.h"

namespace ephemera {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::Not;

class DomainXmlTest : public ::testing::Test {
 protected:
  void SetUp() override {
    test::MakeFakeKernelImage(dir_.path(), "img");
    spec_.image = ImageCatalog(dir_.path()).Get("img");
    spec_.memory_mib = 384;
    spec_.vcpus = 2;
    spec_.owner = "local";
    spec_.created_at = 1700000000;
    spec_.nic = NicSpec{"eph1234", "52:54:00:12:34:56", {}, {}, false};
    spec_.guest_files = {{"opt/ephemera/endpoint_authorized_keys", "ssh-ed25519 AAAA x\n"}};
    domain_.spec = &spec_;
    domain_.emulator = "/usr/bin/qemu-system-x86_64";
    domain_.overlay = "/var/lib/ephemera/libvirt/id/disk.qcow2";
    domain_.serial_log = "/var/lib/ephemera/libvirt/id/console.log";
    domain_.network = "eph-1234";
  }
  void UseIso() {
    fs::create_directories(dir_.path() / "live");
    test::WriteFakeIso(dir_.path() / "live" / "live.iso");
    test::WriteBytes(dir_.path() / "live" / "manifest.json",
                     R"({"version":1,"format":"iso","iso":"live.iso"})");
    spec_.image = ImageCatalog(dir_.path()).Get("live");
  }
  test::TempDir dir_;
  VmSpec spec_{SandboxId::Generate()};
  LibvirtDomain domain_;
};

TEST_F(DomainXmlTest, AKernelImageBootsDirectlyOnQ35UnderTcgWithItsOverlay) {
  domain_.tsc_khz = 2596122;
  std::string xml = BuildDomainXml(domain_);
  EXPECT_THAT(xml, HasSubstr("<domain type='qemu'>"));
  EXPECT_THAT(xml, HasSubstr("<name>" + spec_.id.str() + "</name>"));
  EXPECT_THAT(xml, HasSubstr("<uuid>" + spec_.id.str() + "</uuid>"));
  EXPECT_THAT(xml, HasSubstr("machine='q35'>hvm</type>"));
  EXPECT_THAT(xml, HasSubstr("<kernel>" + spec_.image.kernel->path.string() + "</kernel>"));
  EXPECT_THAT(xml, HasSubstr("<initrd>" + spec_.image.initrd->path.string() + "</initrd>"));
  EXPECT_THAT(xml, HasSubstr(" tsc_early_khz=2596122</cmdline>"));
  EXPECT_THAT(xml, HasSubstr("<source file='/var/lib/ephemera/libvirt/id/disk.qcow2'/>"));
  EXPECT_THAT(xml, HasSubstr("type='qcow2'"));
  EXPECT_THAT(xml, HasSubstr("<memory unit='MiB'>384</memory>"));
  EXPECT_THAT(xml, HasSubstr("<vcpu>2</vcpu>"));
  EXPECT_THAT(xml, HasSubstr("<cpu mode='maximum'/>"));
  EXPECT_THAT(xml, Not(HasSubstr("device='cdrom'")));
  EXPECT_THAT(xml, Not(HasSubstr("<tcg>")));  // none set: QEMU's own
  domain_.tcg_tb_size_mib = 128;
  EXPECT_THAT(BuildDomainXml(domain_),
              HasSubstr("<tcg>\n      <tb-cache unit='MiB'>128</tb-cache>\n    </tcg>"));
  domain_.kvm = true;  // no translation under KVM
  EXPECT_THAT(BuildDomainXml(domain_), Not(HasSubstr("<tcg>")));
}

TEST_F(DomainXmlTest, ASecretGuestFileGoesByPathNeverInline) {
  const std::string key = "-----BEGIN OPENSSH PRIVATE KEY-----\n";
  spec_.guest_files.push_back({"opt/ephemera/ssh_host_ed25519_key", key, true});
  // Without a file of its own it would end up on QEMU's command line.
  Error e = test::ErrorOf([&] { BuildDomainXml(domain_); });
  EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
  EXPECT_THAT(e.what(), HasSubstr("opt/ephemera/ssh_host_ed25519_key is secret"));

  domain_.secret_files = {{"opt/ephemera/ssh_host_ed25519_key", "/var/lib/e/id/fw_cfg-0"}};
  std::string xml = BuildDomainXml(domain_);
  EXPECT_THAT(xml, HasSubstr("<entry name='opt/ephemera/ssh_host_ed25519_key' "
                             "file='/var/lib/e/id/fw_cfg-0'/>"));
  EXPECT_THAT(xml, HasSubstr("<entry name='opt/ephemera/endpoint_authorized_keys'>ssh-ed25519 "
                             "AAAA x\n</entry>"));
  EXPECT_THAT(xml, Not(HasSubstr("PRIVATE KEY")));
}

TEST_F(DomainXmlTest, TheAgentsChannelIsAVirtioPortWhosePathLibvirtPicks) {
  EXPECT_THAT(BuildDomainXml(domain_), Not(HasSubstr("<channel")));
  spec_.agent_channel = true;
  EXPECT_THAT(BuildDomainXml(domain_),
              HasSubstr("<channel type='unix'>\n      <source mode='bind'/>\n      <target "
                        "type='virtio' name='org.ephemera.agent.0'/>\n    </channel>"));
}

TEST(AgentSocketInDomainXmlTest, TakesTheAgentsChannelAloneFromALiveDomain) {
  // As libvirt 9.0 shows a running domain (virsh dumpxml).
  const std::string live = R"(<domain type='qemu' id='3'>
  <devices>
    <channel type='unix'>
      <source mode='bind' path='/var/lib/libvirt/qemu/channel/target/domain-3-x/org.qemu.guest_agent.0'/>
      <target type='virtio' name='org.qemu.guest_agent.0' state='disconnected'/>
      <alias name='channel0'/>
    </channel>
    <channel type='unix'>
      <source mode='bind' path='/var/lib/libvirt/qemu/channel/target/domain-3-x/org.ephemera.agent.0'/>
      <target type='virtio' name='org.ephemera.agent.0' state='connected'/>
      <alias name='channel1'/>
      <address type='virtio-serial' controller='0' bus='0' port='2'/>
    </channel>
  </devices>
</domain>)";
  EXPECT_EQ(AgentSocketInDomainXml(live),
            "/var/lib/libvirt/qemu/channel/target/domain-3-x/org.ephemera.agent.0");
  EXPECT_EQ(AgentSocketInDomainXml("<domain><devices/></domain>"), "");
  // The defined form, before libvirt picked a path, has none either.
  EXPECT_EQ(AgentSocketInDomainXml("<channel type='unix'>\n<source mode='bind'/>\n<target "
                                   "type='virtio' name='org.ephemera.agent.0'/>"),
            "");
}

TEST_F(DomainXmlTest, FollowsAnweddolsContainerDomain) {
  std::string xml = BuildDomainXml(domain_);
  for (const char* part :
       {"<acpi/>", "<apic/>", "<vmport state='off'/>", "<vmcoreinfo state='off'/>",
        "<clock offset='utc'>", "<timer name='rtc' tickpolicy='catchup'/>",
        "<timer name='pit' tickpolicy='delay'/>", "<timer name='hpet' present='no'/>",
        "<suspend-to-mem enabled='yes'/>", "<suspend-to-disk enabled='yes'/>",
        "<memballoon model='virtio'/>", "<model type='virtio'/>",
        "<on_poweroff>destroy</on_poweroff>", "<on_reboot>destroy</on_reboot>"}) {
    EXPECT_THAT(xml, HasSubstr(part));
  }
  // ephemera's metadata, for reconcile.
  EXPECT_THAT(xml, HasSubstr("<ephemera:sandbox xmlns:ephemera='" +
                             std::string(kLibvirtMetadataUri) + "'>"));
  EXPECT_THAT(xml, HasSubstr("<ephemera:owner>local</ephemera:owner>"));
  EXPECT_THAT(xml, HasSubstr("<ephemera:image>img</ephemera:image>"));
  EXPECT_THAT(xml, HasSubstr("<ephemera:created>1700000000</ephemera:created>"));
  // The endpoint key through fw_cfg, the console for virsh console.
  EXPECT_THAT(xml, HasSubstr("<sysinfo type='fwcfg'>"));
  EXPECT_THAT(xml, HasSubstr("<entry name='opt/ephemera/endpoint_authorized_keys'>ssh-ed25519 "
                             "AAAA x\n</entry>"));
  EXPECT_THAT(xml, HasSubstr("<serial type='pty'>"));
  EXPECT_THAT(xml, HasSubstr("<log file='/var/lib/ephemera/libvirt/id/console.log'"));
  EXPECT_THAT(xml, HasSubstr("<source network='eph-1234'/>"));
  EXPECT_THAT(xml, HasSubstr("<mac address='52:54:00:12:34:56'/>"));
  EXPECT_THAT(xml, Not(HasSubstr("filterref")));
}

TEST_F(DomainXmlTest, AnIsoIsAnIdeCdromOnMachinePcBootingHdThenCdrom) {
  UseIso();
  domain_.kvm = true;
  std::string xml = BuildDomainXml(domain_);
  EXPECT_THAT(xml, HasSubstr("<domain type='kvm'>"));
  EXPECT_THAT(xml, HasSubstr("<cpu mode='host-passthrough'/>"));
  EXPECT_THAT(xml, HasSubstr("machine='pc'>hvm</type>"));
  EXPECT_THAT(xml, HasSubstr("<boot dev='hd'/>\n    <boot dev='cdrom'/>"));
  EXPECT_THAT(xml, HasSubstr("<disk type='file' device='cdrom'>"));
  EXPECT_THAT(xml, HasSubstr("<source file='" + spec_.image.iso->path.string() + "'/>"));
  EXPECT_THAT(xml, HasSubstr("bus='ide'"));
  EXPECT_THAT(xml, HasSubstr("<readonly/>"));
  EXPECT_THAT(xml, Not(HasSubstr("<kernel>")));
  EXPECT_THAT(xml, Not(HasSubstr("qcow2")));
}

TEST_F(DomainXmlTest, OutsideTextIsEscapedAndControlCharactersRefused) {
  spec_.owner = "o'wner<&>\"";
  domain_.filter = "ephemera-x";
  domain_.filter_parameters = {{"IP", "192.168.1.2'/>"}};
  std::string xml = BuildDomainXml(domain_);
  EXPECT_THAT(xml, HasSubstr("<ephemera:owner>o&apos;wner&lt;&amp;&gt;&quot;</ephemera:owner>"));
  EXPECT_THAT(xml, HasSubstr("<parameter name='IP' value='192.168.1.2&apos;/&gt;'/>"));
  spec_.owner = std::string("a\x01", 2);
  EXPECT_THROW(BuildDomainXml(domain_), Error);
}

TEST(NetworkXmlTest, OneSlash30WithDhcpForTheGuestAloneAndOptionalNat) {
  LibvirtNetwork n;
  n.name = "eph-1234";
  n.bridge = "eph1234";
  n.subnet.network = Ipv4::Parse("10.201.0.4");
  n.guest_mac = "52:54:00:aa:bb:cc";
  std::string xml = BuildNetworkXml(n);
  EXPECT_THAT(xml, HasSubstr("<name>eph-1234</name>"));
  EXPECT_THAT(xml, HasSubstr("<bridge name='eph1234'"));
  EXPECT_THAT(xml, HasSubstr("<ip address='10.201.0.5' netmask='255.255.255.252'>"));
  EXPECT_THAT(xml, HasSubstr("<range start='10.201.0.6' end='10.201.0.6'/>"));
  EXPECT_THAT(xml, HasSubstr("<host mac='52:54:00:aa:bb:cc' ip='10.201.0.6'/>"));
  EXPECT_THAT(xml, Not(HasSubstr("<forward")));
  EXPECT_THAT(xml, Not(HasSubstr("dnsmasq:option ")));
  n.nat = true;
  n.dns_servers = {Ipv4::Parse("10.0.0.53"), Ipv4::Parse("10.0.0.54")};
  xml = BuildNetworkXml(n);
  EXPECT_THAT(xml, HasSubstr("<forward mode='nat'/>"));
  EXPECT_THAT(xml, HasSubstr("dhcp-option=option:dns-server,10.0.0.53,10.0.0.54"));
}

TEST(FilterXmlTest, CleanTrafficPlusNoTrafficWithTheSubnetButItsGatewayFirst) {
  std::string xml = BuildIsolationFilterXml("ephemera-x", Ipv4Cidr::Parse("192.168.123.0/24"),
                                            Ipv4::Parse("192.168.123.1"));
  EXPECT_THAT(xml, HasSubstr("<filter name='ephemera-x' chain='root'>"));
  EXPECT_THAT(xml, HasSubstr("<filterref filter='clean-traffic'/>"));
  EXPECT_THAT(xml, HasSubstr("action='accept' direction='out' priority='-950'><ip "
                             "dstipaddr='192.168.123.1'/>"));
  EXPECT_THAT(xml, HasSubstr("action='drop' direction='out' priority='-940'><ip "
                             "dstipaddr='192.168.123.0' dstipmask='24'/>"));
  EXPECT_THAT(xml, HasSubstr("action='drop' direction='in' priority='-940'><ip "
                             "srcipaddr='192.168.123.0' srcipmask='24'/>"));
}

}  // namespace
}  // namespace ephemera
