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
}

}  // namespace
}  // namespace ephemera
