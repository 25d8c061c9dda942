// The OCI runtime spec a container sandbox gets: namespaces, uid maps,
// capabilities, masked paths, devices and the guest files' mount.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>

#include "container/runtime_spec.h"
#include "container/seccomp_profile.h"

namespace ephemera {
namespace {

using nlohmann::json;
using ::testing::Contains;
using ::testing::HasSubstr;
using ::testing::Not;

RuntimeSpecInput Input() {
  RuntimeSpecInput in;
  in.hostname = "sandbox-12345678";
  in.rootfs = "/var/lib/ephemera/containers/x/rootfs";
  in.host_uid = 1000065536;
  in.guest_files = "/var/lib/ephemera/containers/x/upper/guest";
  in.capabilities = DefaultContainerCapabilities();
  in.seccomp = json{{"defaultAction", "SCMP_ACT_ERRNO"}};
  in.seccomp_bpf_base64 = "AAAA";
  return in;
}

std::vector<std::string> Strings(const json& array) {
  std::vector<std::string> out;
  for (const auto& v : array) out.push_back(v.get<std::string>());
  return out;
}

TEST(ContainerSpecTest, EveryNamespaceAndTheUidRange) {
  json spec = BuildRuntimeSpec(Input());
  std::vector<std::string> types;
  for (const auto& ns : spec["linux"]["namespaces"]) {
    types.push_back(ns["type"]);
    EXPECT_FALSE(ns.contains("path")) << "every namespace is new, none joined";
  }
  EXPECT_THAT(types, ::testing::UnorderedElementsAre("user", "pid", "network", "ipc", "uts",
                                                     "mount", "cgroup"));
  EXPECT_EQ(types.front(), "user");  // the others belong to it
  for (const char* map : {"uidMappings", "gidMappings"}) {
    ASSERT_EQ(spec["linux"][map].size(), 1u);
    EXPECT_EQ(spec["linux"][map][0]["containerID"], 0);
    EXPECT_EQ(spec["linux"][map][0]["hostID"], 1000065536);
    EXPECT_EQ(spec["linux"][map][0]["size"], 65536);
  }
  EXPECT_EQ(spec["hostname"], "sandbox-12345678");
  EXPECT_EQ(spec["root"]["path"], "/var/lib/ephemera/containers/x/rootfs");
}

TEST(ContainerSpecTest, TheFieldsDefaultCapabilitiesAndNothingPowerful) {
  json process = BuildRuntimeSpec(Input())["process"];
  for (const char* set : {"bounding", "effective", "permitted"}) {
    auto caps = Strings(process["capabilities"][set]);
    EXPECT_THAT(caps, Contains("CAP_SETUID"));  // sudo and sshd need it
    EXPECT_THAT(caps, Contains("CAP_SYS_CHROOT"));
    for (const char* denied : {"CAP_SYS_ADMIN", "CAP_NET_ADMIN", "CAP_SYS_MODULE", "CAP_SYS_PTRACE",
                               "CAP_NET_RAW", "CAP_SYS_RAWIO", "CAP_MKNOD"}) {
      EXPECT_THAT(caps, Not(Contains(denied))) << set;
    }
  }
  EXPECT_TRUE(process["capabilities"]["ambient"].empty());
  EXPECT_TRUE(process["capabilities"]["inheritable"].empty());
  // sudo is part of the guest contract: setuid must work.
  EXPECT_EQ(process["noNewPrivileges"], false);
  EXPECT_EQ(process["user"]["uid"], 0);
  EXPECT_THAT(process["args"][2].get<std::string>(), HasSubstr("exec /usr/sbin/sshd -D"));
}

TEST(ContainerSpecTest, MaskedAndReadOnlyPathsAsTheOciDefaults) {
  json linux_section = BuildRuntimeSpec(Input())["linux"];
  auto masked = Strings(linux_section["maskedPaths"]);
  for (const char* path : {"/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/sched_debug",
                           "/proc/acpi", "/proc/scsi", "/sys/dev/block"}) {
    EXPECT_THAT(masked, Contains(path));
  }
  auto readonly = Strings(linux_section["readonlyPaths"]);
  for (const char* path : {"/proc/sys", "/proc/sysrq-trigger", "/proc/irq", "/proc/bus"}) {
    EXPECT_THAT(readonly, Contains(path));
  }
  // No host device is passed in: only what the runtime makes itself.
  EXPECT_FALSE(linux_section.contains("devices"));
  EXPECT_EQ(linux_section["seccomp"]["defaultAction"], "SCMP_ACT_ERRNO");
}

TEST(ContainerSpecTest, GuestFilesWhereFwCfgPutsThemAndTheHostsFirmwareHidden) {
  json mounts = BuildRuntimeSpec(Input())["mounts"];
  auto find = [&](const std::string& destination) {
    auto it = std::find_if(mounts.begin(), mounts.end(),
                           [&](const json& m) { return m["destination"] == destination; });
    return it == mounts.end() ? json() : *it;
  };
  json firmware = find("/sys/firmware");
  ASSERT_FALSE(firmware.is_null());
  EXPECT_EQ(firmware["type"], "tmpfs");
  json guest = find(kGuestFilesInside);
  ASSERT_FALSE(guest.is_null());
  EXPECT_EQ(guest["source"], "/var/lib/ephemera/containers/x/upper/guest");
  EXPECT_THAT(Strings(guest["options"]), Contains("ro"));
  json sys = find("/sys");
  EXPECT_THAT(Strings(sys["options"]), Contains("ro"));
  // The firmware tmpfs comes after /sys and before the files on it.
  auto index = [&](const std::string& d) {
    for (std::size_t i = 0; i < mounts.size(); ++i) {
      if (mounts[i]["destination"] == d) return i;
    }
    return mounts.size();
  };
  EXPECT_LT(index("/sys"), index("/sys/firmware"));
  EXPECT_LT(index("/sys/firmware"), index(kGuestFilesInside));
}

TEST(ContainerSpecTest, PrecompiledSeccompOnlyWhenGiven) {
  RuntimeSpecInput in = Input();
  EXPECT_EQ(BuildRuntimeSpec(in)["annotations"]["run.oci.seccomp_bpf_data"], "AAAA");
  in.seccomp_bpf_base64.clear();
  EXPECT_FALSE(BuildRuntimeSpec(in).contains("annotations"));
}

}  // namespace
}  // namespace ephemera
