#include <gtest/gtest.h>

#include "config/config.h"
#include "core/error.h"

namespace ephemera {
namespace {

// Expects ParseConfig(yaml) to fail with a message containing `needle`.
void ExpectConfigError(const std::string& yaml, const std::string& needle) {
  try {
    ParseConfig(yaml);
    ADD_FAILURE() << "accepted: " << yaml;
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(ConfigTest, EmptyDocumentGivesDefaults) {
  Config c = ParseConfig("");
  EXPECT_EQ(c.state_dir, "/var/lib/ephemera");
  EXPECT_EQ(c.image_dir, "/var/cache/ephemera/images");
  EXPECT_EQ(c.vm.accel, Accel::kAuto);
  EXPECT_EQ(c.vm.machine, MachineType::kMicrovm);
  EXPECT_EQ(c.defaults.memory_mib, 256u);
  EXPECT_EQ(c.network.pool.str(), "172.16.0.0/16");
  EXPECT_EQ(c.socket, "/run/ephemera/ephemera.sock");
  EXPECT_EQ(c.socket_mode, 0660u);
  EXPECT_EQ(c.socket_group, "");
  EXPECT_FALSE(c.destroy_on_exit);
  EXPECT_EQ(c.limits.max_sandboxes, 16u);
  ASSERT_EQ(c.network.dns_servers.size(), 1u);
  EXPECT_EQ(c.network.dns_servers[0].str(), "1.1.1.1");
  EXPECT_FALSE(c.network.outbound_nat);
  EXPECT_EQ(c.network.forward_port_first, 10000);
  EXPECT_EQ(c.network.forward_port_last, 15000);
}

TEST(ConfigTest, ReadsNetwork) {
  Config c = ParseConfig(R"(
network:
  pool: 10.99.0.0/20
  dns_servers: [9.9.9.9, 149.112.112.112]
  outbound_nat: true
  forward_address: 127.0.0.1
  forward_ports: 20000-20010
)");
  EXPECT_EQ(c.network.pool.str(), "10.99.0.0/20");
  EXPECT_EQ(c.network.dns_servers.size(), 2u);
  EXPECT_TRUE(c.network.outbound_nat);
  EXPECT_EQ(c.network.forward_address, "127.0.0.1");
  EXPECT_EQ(c.network.forward_port_first, 20000);
  EXPECT_EQ(c.network.forward_port_last, 20010);
}

TEST(ConfigTest, ReadsEveryKey) {
  Config c = ParseConfig(R"(
state_dir: /srv/eph
image_dir: /srv/images
log: {level: debug, format: json}
vm:
  qemu_binary: /opt/qemu/bin/qemu-system-x86_64
  machine: q35
  accel: tcg
  tcg_tb_size_mib: 128
  powerdown_timeout_ms: 1000
defaults: {image: other, memory_mib: 512, vcpus: 2}
)");
  EXPECT_EQ(c.state_dir, "/srv/eph");
  EXPECT_EQ(c.log.format, "json");
  EXPECT_EQ(c.vm.machine, MachineType::kQ35);
  EXPECT_EQ(c.vm.accel, Accel::kTcg);
  EXPECT_EQ(c.vm.tcg_tb_size_mib, 128u);
  EXPECT_EQ(c.defaults.image, "other");
  EXPECT_EQ(c.defaults.vcpus, 2u);
}

TEST(ConfigTest, ErrorsNameTheKey) {
  ExpectConfigError("vm: {accel: fast}", "'vm.accel'");
  ExpectConfigError("vm: {acel: tcg}", "'vm.acel' is unknown");
  ExpectConfigError("bogus: 1", "'bogus' is unknown");
  ExpectConfigError("state_dir: relative/path", "'state_dir'");
  ExpectConfigError("defaults: {memory_mib: 64}", "'defaults.memory_mib'");
  ExpectConfigError("defaults: {vcpus: 0}", "'defaults.vcpus'");
  ExpectConfigError("defaults: {vcpus: many}", "'defaults.vcpus': expected an integer");
  ExpectConfigError("log: {level: loud}", "'log.level'");
  ExpectConfigError("vm: [1, 2]", "'vm': expected a mapping");
  ExpectConfigError("vm: {tcg_tb_size_mib: -5}", "'vm.tcg_tb_size_mib'");
  ExpectConfigError("key: [unclosed", "not valid YAML");
  ExpectConfigError("network: {pool: 'fd00::/64'}", "'network.pool'");
  ExpectConfigError("socket_mode: rw", "'socket_mode'");
  ExpectConfigError("socket_group: 'a b'", "'socket_group': 'a b' is not a group name");
  EXPECT_EQ(ParseConfig("socket_group: kvm").socket_group, "kvm");
  ExpectConfigError("socket: run/x.sock", "'socket'");
  ExpectConfigError("limits: {max_sandboxes: 0}", "'limits.max_sandboxes'");
  ExpectConfigError("limits: {default_ttl_seconds: 100, max_ttl_seconds: 10}",
                    "'limits.default_ttl_seconds'");
  ExpectConfigError("limits: {max_sandbox: 3}", "'limits.max_sandbox' is unknown");
  ExpectConfigError("destroy_on_exit: maybe", "'destroy_on_exit'");
  ExpectConfigError("network: {pool: 10.0.0.0/31}", "too small");
  ExpectConfigError("network: {pool: 10.0.0.1/24}", "host bits");
  ExpectConfigError("network: {forward_ports: 15000-10000}", "reversed");
  ExpectConfigError("network: {forward_ports: 10000}", "'network.forward_ports'");
  ExpectConfigError("network: {forward_ports: 0-10}", "'network.forward_ports'");
  ExpectConfigError("network: {dns_servers: 1.1.1.1}", "expected a list");
  ExpectConfigError("network: {dns_servers: [nameserver]}", "'network.dns_servers'");
  ExpectConfigError("network: {outbound_nat: perhaps}", "'network.outbound_nat'");
  ExpectConfigError("network: {forward_address: localhost}", "'network.forward_address'");
}

TEST(ConfigTest, WarmPoolsAndPauseLimits) {
  Config c = ParseConfig(
      "pool: [{image: default, memory_mib: 512, vcpus: 2, size: 3}, {image: other}]\n"
      "limits: {max_paused_seconds: 600, max_paused_per_owner: 2, max_exposed_ports: 3}\n");
  ASSERT_EQ(c.pools.size(), 2u);
  EXPECT_EQ(c.pools[0].image, "default");
  EXPECT_EQ(c.pools[0].memory_mib, 512u);
  EXPECT_EQ(c.pools[0].vcpus, 2u);
  EXPECT_EQ(c.pools[0].size, 3u);
  EXPECT_EQ(c.pools[1].memory_mib, 256u);  // the defaults
  EXPECT_EQ(c.pools[1].size, 1u);
  EXPECT_EQ(c.limits.max_paused_seconds, 600u);
  EXPECT_EQ(c.limits.max_paused_per_owner, 2u);
  EXPECT_EQ(c.limits.max_exposed_ports, 3u);
  EXPECT_TRUE(ParseConfig("").pools.empty());  // off by default
  ExpectConfigError("pool: [{image: default, size: 100}]", "'pool[0].size'");
  ExpectConfigError("pool: [{image: default, memory_mib: 64}]", "'pool[0].memory_mib'");
  ExpectConfigError("pool: [{image: default, colour: red}]", "'pool[0].colour' is unknown");
  ExpectConfigError("pool: [{image: default}, {image: default}]", "listed twice");
  ExpectConfigError("limits: {max_paused_seconds: 0}", "'limits.max_paused_seconds'");
  EXPECT_FALSE(ParseConfig("").vm.snapshots);
  EXPECT_TRUE(ParseConfig("vm: {snapshots: true}").vm.snapshots);
  EXPECT_FALSE(ParseConfig("").vm.ksm);
  EXPECT_TRUE(ParseConfig("vm: {ksm: true}").vm.ksm);
  ExpectConfigError("vm: {snapshots: maybe}", "'vm.snapshots'");
}

TEST(ConfigTest, RemoteFrontDoorsAreOffUntilAsked) {
  Config c = ParseConfig("");
  EXPECT_FALSE(c.remote.listen);
  EXPECT_FALSE(c.anweddol.listen);
  EXPECT_FALSE(c.anweddol.web_listen);
  EXPECT_TRUE(c.remote.access_tokens);
  EXPECT_FALSE(c.remote.insecure_http);
  EXPECT_EQ(c.anweddol.rsa_bits, 4096u);
}

TEST(ConfigTest, ReadsRemoteAndAnweddol) {
  Config c = ParseConfig(R"(
remote:
  listen: "[::1]:8443"
  tls_certificate: /etc/ephemera/cert.pem
  tls_key: /etc/ephemera/key.pem
  access_tokens: false
  allow: [10.0.0.0/8, any]
  deny: [10.9.0.0/16]
  rate_limit_per_minute: 120
anweddol:
  listen: 0.0.0.0:6150
  web_listen: 127.0.0.1:8080
  web_tls: true
  one_time_keys: true
  rsa_bits: 2048
)");
  ASSERT_TRUE(c.remote.listen);
  EXPECT_EQ(c.remote.listen->address, "::1");
  EXPECT_EQ(c.remote.listen->port, 8443);
  EXPECT_EQ(c.remote.listen->str(), "[::1]:8443");
  EXPECT_EQ(c.remote.tls_key, "/etc/ephemera/key.pem");
  EXPECT_FALSE(c.remote.access_tokens);
  EXPECT_EQ(c.remote.allow.size(), 2u);
  EXPECT_EQ(c.remote.rate_limit_per_minute, 120u);
  EXPECT_EQ(c.anweddol.listen->str(), "0.0.0.0:6150");
  EXPECT_TRUE(c.anweddol.web_tls);
  EXPECT_TRUE(c.anweddol.one_time_keys);
  EXPECT_EQ(c.anweddol.rsa_bits, 2048u);
}

TEST(ConfigTest, BadListenAddressesAndTlsFilesNameTheKey) {
  ExpectConfigError("remote: {listen: 'localhost:8443'}", "'remote.listen'");
  ExpectConfigError("remote: {listen: '127.0.0.1'}", "no port");
  ExpectConfigError("remote: {listen: '127.0.0.1:99999'}", "port must be 0 to 65535");
  ExpectConfigError("remote: {listen: '::1:80'}", "'remote.listen'");
  ExpectConfigError("anweddol: {web_listen: '1.2.3.4:x'}", "'anweddol.web_listen'");
  ExpectConfigError("remote: {tls_certificate: /a/cert.pem}", "go together");
  ExpectConfigError("remote: {tls_key: key.pem, tls_certificate: /a/c.pem}", "absolute path");
  ExpectConfigError("anweddol: {rsa_bits: 1024}", "'anweddol.rsa_bits'");
  ExpectConfigError("remote: {alow: []}", "'remote.alow' is unknown");
}

TEST(ConfigTest, ReadsRegistriesImagesAndPullSettings) {
  Config c = ParseConfig(R"(
registries:
  - host: registry.example:5000
    ca_file: /etc/ephemera/registry-ca.pem
    credentials_file: /etc/ephemera/auth.json
  - host: 127.0.0.1:5001
    insecure: true
images:
  kt-debian:
    kernel: docker://registry.example:5000/kt/kernel:6.1
    rootfs: docker://registry.example:5000/kt/debian:12
    headroom_mib: 512
  own-kernel:
    rootfs: docker://registry.example:5000/kt/ubuntu:24.04
pull:
  stall_timeout_seconds: 10
  cache_max_mib: 20480
)");
  ASSERT_EQ(c.registries.size(), 2u);
  EXPECT_EQ(c.registries[0].host, "registry.example:5000");
  EXPECT_FALSE(c.registries[0].insecure);
  EXPECT_EQ(c.registries[0].ca_file, "/etc/ephemera/registry-ca.pem");
  EXPECT_EQ(c.registries[0].credentials_file, "/etc/ephemera/auth.json");
  EXPECT_TRUE(c.registries[1].insecure);
  ASSERT_EQ(c.images.count("kt-debian"), 1u);
  EXPECT_EQ(c.images["kt-debian"].rootfs, "docker://registry.example:5000/kt/debian:12");
  EXPECT_EQ(c.images["kt-debian"].headroom_mib, 512u);
  // No kernel: the rootfs boots its own.
  EXPECT_EQ(c.images["own-kernel"].kernel, "");
  EXPECT_EQ(c.images["own-kernel"].rootfs, "docker://registry.example:5000/kt/ubuntu:24.04");
  EXPECT_EQ(c.pull.stall_timeout_seconds, 10u);
  EXPECT_EQ(c.pull.cache_max_mib, 20480u);
  EXPECT_EQ(c.pull.connect_timeout_seconds, 15u);
}

TEST(ConfigTest, WirtIsOffUntilAskedAndItsKeysAreChecked) {
  Config off = ParseConfig("");
  EXPECT_FALSE(off.wirt.enabled);
  EXPECT_EQ(off.wirt.group, "vmguests");
  Config c = ParseConfig(R"(
wirt:
  enabled: true
  group: labusers
  max_sandboxes_per_user: 2
  max_memory_mib_per_user: 1024
  log_max_kib: 64
  log_keep: 3
  history_keep: 50
  mail: true
  sendmail: /usr/lib/sendmail
  workers: 2
)");
  EXPECT_TRUE(c.wirt.enabled);
  EXPECT_EQ(c.wirt.group, "labusers");
  EXPECT_EQ(c.wirt.max_sandboxes_per_user, 2u);
  EXPECT_EQ(c.wirt.max_memory_mib_per_user, 1024u);
  EXPECT_EQ(c.wirt.log_max_bytes, 64u * 1024);
  EXPECT_EQ(c.wirt.log_keep, 3u);
  EXPECT_EQ(c.wirt.history_keep, 50u);
  EXPECT_TRUE(c.wirt.mail);
  EXPECT_EQ(c.wirt.sendmail, "/usr/lib/sendmail");
  EXPECT_EQ(c.wirt.workers, 2u);
  ExpectConfigError("wirt: {group: 'a:b'}", "'wirt.group'");
  ExpectConfigError("wirt: {workers: 0}", "'wirt.workers'");
  ExpectConfigError("wirt: {polling: true}", "wirt.polling");
}

TEST(ConfigTest, ContainersHaveDefaultsAndTheirKeysAreChecked) {
  Config d = ParseConfig("");
  EXPECT_TRUE(d.container.enabled);
  EXPECT_EQ(d.container.runtime, "crun");
  EXPECT_EQ(d.container.uid_base, 1000000000u);
  EXPECT_TRUE(d.container.seccomp_profile.empty());
  EXPECT_EQ(d.anweddol.kind, SandboxKind::kVm);
  Config c = ParseConfig(R"(
container:
  runtime: runc
  uid_base: 2000000000
  seccomp_profile: /etc/ephemera/seccomp.json
  max_pids: 256
  disk_mib: 2048
  io_weight: 50
  image_idle_seconds: 0
anweddol:
  kind: container
)");
  EXPECT_EQ(c.container.runtime, "runc");
  EXPECT_EQ(c.container.uid_base, 2000000000u);
  EXPECT_EQ(c.container.seccomp_profile, "/etc/ephemera/seccomp.json");
  EXPECT_EQ(c.container.max_pids, 256u);
  EXPECT_EQ(c.container.disk_mib, 2048u);
  EXPECT_EQ(c.container.io_weight, 50u);
  EXPECT_EQ(c.container.image_idle_seconds, 0u);
  EXPECT_EQ(c.anweddol.kind, SandboxKind::kContainer);
  ExpectConfigError("container: {runtime: docker}", "'container.runtime'");
  ExpectConfigError("container: {seccomp_profile: rel.json}", "'container.seccomp_profile'");
  ExpectConfigError("container: {io_weight: 0}", "'container.io_weight'");
  // Every sandbox's range of 65536 uids must fit below the last uid.
  ExpectConfigError("limits: {max_sandboxes: 16384}\ncontainer: {uid_base: 3300000000}",
                    "'container.uid_base'");
  ExpectConfigError("anweddol: {kind: jail}", "'anweddol.kind'");
  ExpectConfigError("container: {privileged: true}", "container.privileged");
}

TEST(ConfigTest, BadRegistriesAndImagesNameTheKey) {
  ExpectConfigError("registries: {host: x}", "'registries': expected a list");
  ExpectConfigError("registries: [x]", "'registries[0]': expected a mapping");
  ExpectConfigError("registries: [{host: 'https://x'}]", "'registries[0].host'");
  ExpectConfigError("registries: [{host: x}, {host: x}]", "listed twice");
  ExpectConfigError("registries: [{host: x, ca_file: rel.pem}]", "must be an absolute path");
  ExpectConfigError("registries: [{host: x, insecure: true, ca_file: /ca.pem}]",
                    "has no use for a ca_file");
  ExpectConfigError("registries: [{host: x, password: y}]", "'registries[0].password' is unknown");
  ExpectConfigError("images: {a: {kernel: oci:/k}}", "'images.a.rootfs': an image needs");
  ExpectConfigError("images: {a: {kernel: '', rootfs: oci:/r}}", "'images.a.kernel': an empty");
  ExpectConfigError("images: {a: {kernel: oci:/k, rootfs: oci:/r, size: 1}}",
                    "'images.a.size' is unknown");
  ExpectConfigError("pull: {stall_timeout_seconds: 0}", "'pull.stall_timeout_seconds'");
  ExpectConfigError("pull: {cache_max_mib: -1}", "'pull.cache_max_mib'");
}

}  // namespace
}  // namespace ephemera
