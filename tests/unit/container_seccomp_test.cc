// The containers' seccomp profile: the shipped one resolved for the default
// capabilities, Docker's includes and excludes, errors, and the compiled
// filter installed for real in a child process.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <linux/filter.h>
#include <linux/keyctl.h>
#include <linux/netlink.h>
#include <linux/sched.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

#include "container/seccomp_profile.h"
#include "core/base64.h"
#include "core/error.h"
#include "unit/error_of.h"
#include "unit/test_files.h"

namespace ephemera {
namespace {

using nlohmann::json;
using test::ErrorOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::vector<std::string> With(std::vector<std::string> caps, const std::string& cap) {
  caps.push_back(cap);
  return caps;
}

std::vector<std::string> Without(std::vector<std::string> caps, const std::string& cap) {
  std::erase(caps, cap);
  return caps;
}

// The entries of a resolved profile that name `name`.
std::vector<json> EntriesFor(const json& oci, const std::string& name) {
  std::vector<json> out;
  for (const json& e : oci.at("syscalls")) {
    for (const json& n : e.at("names")) {
      if (n == name) out.push_back(e);
    }
  }
  return out;
}

// Whether the resolved profile allows `name` at all (maybe only for some
// arguments), and whether it allows it whatever the arguments.
bool Allowed(const json& oci, const std::string& name) {
  for (const json& e : EntriesFor(oci, name)) {
    if (e.at("action") == "SCMP_ACT_ALLOW") return true;
  }
  return false;
}

bool AllowedAlways(const json& oci, const std::string& name) {
  for (const json& e : EntriesFor(oci, name)) {
    if (e.at("action") == "SCMP_ACT_ALLOW" && !e.contains("args")) return true;
  }
  return false;
}

// Runs `checks` in a child process under the compiled filter. Returns the
// child's exit code: 0, or the number of the first check that failed (or
// 128 + a signal).
int RunFiltered(const SeccompProfile& profile, int (*checks)()) {
  std::optional<std::string> bytes = Base64Decode(profile.bpf_base64);
  if (!bytes || bytes->empty() || bytes->size() % sizeof(sock_filter) != 0) return -1;
  std::vector<sock_filter> filter(bytes->size() / sizeof(sock_filter));
  std::memcpy(filter.data(), bytes->data(), bytes->size());
  sock_fprog program{static_cast<unsigned short>(filter.size()), filter.data()};
  const pid_t pid = ::fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) ::_exit(100);
    if (::prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &program) != 0) ::_exit(101);
    ::_exit(checks());
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// -1 with `err`: what a denied call returns.
bool FailsWith(long result, int err) { return result == -1 && errno == err; }

TEST(SeccompProfileTest, DefaultCapabilitiesArePodmans) {
  const std::vector<std::string>& caps = DefaultContainerCapabilities();
  EXPECT_EQ(caps.size(), 11u);
  EXPECT_NE(std::find(caps.begin(), caps.end(), "CAP_SYS_CHROOT"), caps.end());
  EXPECT_NE(std::find(caps.begin(), caps.end(), "CAP_NET_BIND_SERVICE"), caps.end());
  EXPECT_EQ(std::find(caps.begin(), caps.end(), "CAP_SYS_ADMIN"), caps.end());
}

TEST(SeccompProfileTest, ShippedProfileLoadsForTheDefaultCapabilities) {
  const SeccompProfile p = DefaultSeccompProfile(DefaultContainerCapabilities());
  EXPECT_EQ(p.oci.at("defaultAction"), "SCMP_ACT_ERRNO");
  EXPECT_EQ(p.oci.at("defaultErrnoRet"), ENOSYS);  // Podman's: libc falls back on new syscalls
  EXPECT_EQ(p.oci.at("architectures"),
            json::array({"SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"}));
  EXPECT_GT(p.rules, 300u);
  EXPECT_TRUE(p.shadowed_syscalls.empty()) << json(p.shadowed_syscalls).dump();
  const std::optional<std::string> bpf = Base64Decode(p.bpf_base64);
  ASSERT_TRUE(bpf);
  EXPECT_EQ(bpf->size() % sizeof(sock_filter), 0u);
  EXPECT_GT(bpf->size(), 100 * sizeof(sock_filter));
  // Only entries that apply here are in the OCI form.
  for (const json& e : p.oci.at("syscalls")) {
    EXPECT_FALSE(e.contains("includes") || e.contains("excludes")) << e.dump();
  }
}

TEST(SeccompProfileTest, ShippedProfileDeniesWhatDockerDenies) {
  const json oci = DefaultSeccompProfile(DefaultContainerCapabilities()).oci;
  for (const char* name :
       {"keyctl",        "add_key",         "request_key",       "bpf",         "perf_event_open",
        "kexec_load",    "kexec_file_load", "open_by_handle_at", "init_module", "finit_module",
        "delete_module", "mount",           "umount2",           "unshare",     "setns",
        "pivot_root",    "fsopen",          "open_tree",         "move_mount",  "syslog",
        "clone3",        "io_uring_setup",  "userfaultfd"}) {
    EXPECT_FALSE(Allowed(oci, name)) << name;
  }
  for (const char* name : {"read", "write", "openat", "execve", "getpid", "fork", "vfork", "ptrace",
                           "chroot", "arch_prctl", "setuid", "socket"}) {
    EXPECT_TRUE(Allowed(oci, name)) << name;
  }
  // clone only without namespace flags.
  EXPECT_TRUE(Allowed(oci, "clone"));
  EXPECT_FALSE(AllowedAlways(oci, "clone"));
  // Entries for other architectures are left out.
  EXPECT_TRUE(EntriesFor(oci, "s390_pci_mmio_read").empty());
}

TEST(SeccompProfileTest, IncludesByCapability) {
  const json oci = DefaultSeccompProfile(With(DefaultContainerCapabilities(), "CAP_SYS_ADMIN")).oci;
  for (const char* name : {"mount", "umount2", "unshare", "setns", "clone", "clone3", "bpf"}) {
    EXPECT_TRUE(AllowedAlways(oci, name)) << name;
  }
  EXPECT_FALSE(Allowed(oci, "keyctl"));  // whatever the capabilities
  EXPECT_FALSE(Allowed(oci, "kexec_load"));
}

TEST(SeccompProfileTest, ExcludesByCapability) {
  const json with = DefaultSeccompProfile(DefaultContainerCapabilities()).oci;
  EXPECT_TRUE(AllowedAlways(with, "chroot"));
  EXPECT_EQ(EntriesFor(with, "chroot").size(), 1u);

  const json without =
      DefaultSeccompProfile(Without(DefaultContainerCapabilities(), "CAP_SYS_CHROOT")).oci;
  const std::vector<json> chroot = EntriesFor(without, "chroot");
  ASSERT_EQ(chroot.size(), 1u);
  EXPECT_EQ(chroot[0].at("action"), "SCMP_ACT_ERRNO");
  EXPECT_EQ(chroot[0].at("errnoRet"), EPERM);

  // Without CAP_AUDIT_WRITE (the default), an audit socket fails with EINVAL,
  // which audit clients such as sudo take as "no audit".
  bool audit_einval = false;
  for (const json& e : EntriesFor(with, "socket")) {
    if (e.at("action") == "SCMP_ACT_ERRNO" && e.at("errnoRet") == EINVAL) audit_einval = true;
  }
  EXPECT_TRUE(audit_einval);
  const json audit =
      DefaultSeccompProfile(With(DefaultContainerCapabilities(), "CAP_AUDIT_WRITE")).oci;
  EXPECT_TRUE(AllowedAlways(audit, "socket"));
}

TEST(SeccompProfileTest, IncludesAndExcludesByArchitectureAndKernel) {
  const SeccompProfile p = LoadSeccompProfile(R"({
    "defaultAction": "SCMP_ACT_ERRNO",
    "syscalls": [
      {"names": ["getpid"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["arm64"]}},
      {"names": ["getppid"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["amd64", "x32"]}},
      {"names": ["gettid"], "action": "SCMP_ACT_ALLOW", "excludes": {"arches": ["amd64"]}},
      {"names": ["getuid"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "4.8"}},
      {"names": ["getgid"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "999.0"}},
      {"names": ["geteuid"], "action": "SCMP_ACT_ALLOW",
       "includes": {"caps": ["CAP_KILL", "CAP_SYS_ADMIN"]}},
      {"names": ["getegid"], "action": "SCMP_ACT_ALLOW",
       "excludes": {"caps": ["CAP_SYS_ADMIN", "CAP_SYS_PTRACE"]}}
    ]})",
                                              "test.json", {"CAP_KILL"});
  EXPECT_FALSE(Allowed(p.oci, "getpid"));
  EXPECT_TRUE(Allowed(p.oci, "getppid"));
  EXPECT_FALSE(Allowed(p.oci, "gettid"));
  EXPECT_TRUE(Allowed(p.oci, "getuid"));
  EXPECT_FALSE(Allowed(p.oci, "getgid"));
  EXPECT_FALSE(Allowed(p.oci, "geteuid"));  // includes need every cap listed
  EXPECT_TRUE(Allowed(p.oci, "getegid"));   // excludes drop on any cap held
  EXPECT_EQ(p.rules, 3u);
  // No archMap and no architectures: the native one only, as in Docker.
  EXPECT_EQ(p.oci.at("architectures"), json::array({"SCMP_ARCH_X86_64"}));
}

TEST(SeccompProfileTest, UnknownSyscallNamesAreSkippedAndCounted) {
  const SeccompProfile p = LoadSeccompProfile(R"({
    "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 38,
    "syscalls": [{"names": ["read", "no_such_syscall", "write"], "action": "SCMP_ACT_ALLOW"},
                 {"names": ["no_such_syscall_either"], "action": "SCMP_ACT_ERRNO"}]})",
                                              "test.json", {});
  EXPECT_THAT(p.unknown_syscalls, ElementsAre("no_such_syscall", "no_such_syscall_either"));
  EXPECT_EQ(p.rules, 2u);
  ASSERT_EQ(p.oci.at("syscalls").size(), 1u);
  EXPECT_EQ(p.oci.at("syscalls")[0].at("names"), json::array({"read", "write"}));
}

// libseccomp lets an unconditional rule win silently: these are left out
// and named.
TEST(SeccompProfileTest, ShadowedAndDefaultActionRulesAreLeftOut) {
  const SeccompProfile p = LoadSeccompProfile(R"({
    "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 38,
    "syscalls": [
      {"names": ["getpid"], "action": "SCMP_ACT_ALLOW"},
      {"names": ["getpid", "getppid"], "action": "SCMP_ACT_ERRNO"},
      {"names": ["gettid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
      {"names": ["socket"], "action": "SCMP_ACT_ERRNO",
       "args": [{"index": 0, "value": 40, "op": "SCMP_CMP_EQ"}]},
      {"names": ["socket"], "action": "SCMP_ACT_ALLOW"}]})",
                                              "test.json", {});
  EXPECT_THAT(p.shadowed_syscalls, ElementsAre("getpid", "socket"));
  EXPECT_EQ(p.rules, 3u);  // getpid and socket allowed, getppid EPERM; gettid is the default
  EXPECT_EQ(p.oci.at("syscalls"), json::parse(R"([
      {"names": ["getpid"], "action": "SCMP_ACT_ALLOW"},
      {"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1},
      {"names": ["socket"], "action": "SCMP_ACT_ALLOW"}])"));
}

TEST(SeccompProfileTest, OciFormIsAcceptedAndRoundTrips) {
  const SeccompProfile p = DefaultSeccompProfile(DefaultContainerCapabilities());
  const SeccompProfile again = LoadSeccompProfile(p.oci.dump(), "oci.json", {});
  EXPECT_EQ(again.oci, p.oci);
  EXPECT_EQ(again.bpf_base64, p.bpf_base64);
  EXPECT_EQ(again.rules, p.rules);
}

TEST(SeccompProfileTest, FileLoadsLikeTheBuiltInCopy) {
  test::TempDir dir;
  test::WriteBytes(dir.path() / "seccomp.json", std::string(DefaultSeccompProfileJson()));
  const SeccompProfile file =
      LoadSeccompProfileFile(dir.path() / "seccomp.json", DefaultContainerCapabilities());
  const SeccompProfile builtin = DefaultSeccompProfile(DefaultContainerCapabilities());
  EXPECT_EQ(file.oci, builtin.oci);
  EXPECT_EQ(file.bpf_base64, builtin.bpf_base64);
  EXPECT_EQ(ErrorOf([&] { LoadSeccompProfileFile(dir.path() / "absent.json", {}); }).code(),
            ErrorCode::kNotFound);
}

TEST(SeccompProfileTest, ErrorsNameTheOriginAndTheEntry) {
  struct Case {
    const char* json;
    const char* message;
  };
  const Case cases[] = {
      {R"({"defaultAction": )", "not valid JSON"},
      {R"([])", "must be a JSON object"},
      {R"({"syscalls": []})", "'defaultAction' must be a string"},
      {R"({"defaultAction": "SCMP_ACT_EXPLODE"})", "unknown action 'SCMP_ACT_EXPLODE'"},
      {R"({"defaultAction": "SCMP_ACT_ALLOW", "defaultErrnoRet": 1})", "takes no errno"},
      {R"({"defaultAction": "SCMP_ACT_ALLOW", "archMap": [], "architectures": []})",
       "both 'archMap' and 'architectures'"},
      {R"({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_VAX"]})",
       "unknown architecture 'SCMP_ARCH_VAX'"},
      {R"({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"],
          "action": "SCMP_ACT_ERRNO"}, {"names": ["write"], "action": "SCMP_ACT_NOPE"}]})",
       "syscalls[1]: unknown action 'SCMP_ACT_NOPE'"},
      {R"({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"],
          "action": "SCMP_ACT_ERRNO", "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_ABOUT"}]}]})",
       "syscalls[0]: args[0]: unknown operator 'SCMP_CMP_ABOUT'"},
      {R"({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"],
          "action": "SCMP_ACT_ERRNO", "args": [{"index": 6, "value": 1, "op": "SCMP_CMP_EQ"}]}]})",
       "syscalls[0]: args[0]: 'index' must be an integer from 0 to 5"},
      {R"({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"],
          "action": "SCMP_ACT_ERRNO", "args": [{"index": 0, "value": -1, "op": "SCMP_CMP_EQ"}]}]})",
       "'value' must be an integer"},
      {R"({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"],
          "action": "SCMP_ACT_ALLOW", "errnoRet": 1}]})",
       "syscalls[0]: SCMP_ACT_ALLOW takes no errno"},
      {R"({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"action": "SCMP_ACT_ALLOW"}]})",
       "syscalls[0]: names no syscall"},
      {R"({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"],
          "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "new"}}]})",
       "'minKernel' must be a kernel version"},
  };
  for (const Case& c : cases) {
    const Error e = ErrorOf([&] { LoadSeccompProfile(c.json, "/etc/ephemera/mine.json", {}); });
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument) << c.json << ": " << e.what();
    EXPECT_THAT(e.what(), HasSubstr("/etc/ephemera/mine.json")) << c.json;
    EXPECT_THAT(e.what(), HasSubstr(c.message)) << c.json;
  }
}

// In the kernel: the shipped profile, for the default capabilities.
int ShippedProfileChecks() {
  if (!FailsWith(::syscall(SYS_keyctl, KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 0), EPERM))
    return 1;
  if (::syscall(SYS_getpid) <= 0) return 2;
  if (!FailsWith(::unshare(CLONE_NEWUSER), EPERM)) return 3;
  // Without the filter this one would fail with ENOENT, not EPERM.
  if (!FailsWith(::mount(nullptr, "/nonexistent-ephemera", nullptr, MS_REMOUNT, nullptr), EPERM))
    return 4;
  if (!FailsWith(::syscall(SYS_bpf, 0, nullptr, 0), EPERM)) return 5;
  const long child = ::syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0);
  if (child == 0) ::_exit(0);
  if (!FailsWith(child, EPERM)) return 6;
  clone_args args{};
  args.exit_signal = SIGCHLD;
  const long child3 = ::syscall(SYS_clone3, &args, sizeof args);
  if (child3 == 0) ::_exit(0);
  if (!FailsWith(child3, ENOSYS)) return 7;  // so that libc falls back to clone
  const pid_t forked = ::fork();
  if (forked == 0) ::_exit(0);
  if (forked < 0 || ::waitpid(forked, nullptr, 0) != forked) return 8;
  const int tcp = ::socket(AF_INET, SOCK_STREAM, 0);
  if (tcp < 0) return 9;
  ::close(tcp);
  if (!FailsWith(::socket(AF_NETLINK, SOCK_RAW, NETLINK_AUDIT), EINVAL)) return 10;
  if (!FailsWith(::write(-1, "", 0), EBADF)) return 11;  // reaches the kernel
  if (!FailsWith(::syscall(SYS_io_uring_setup, 1, nullptr), ENOSYS)) return 12;
  return 0;
}

TEST(SeccompProfileTest, CompiledFilterWorksInTheKernel) {
  const SeccompProfile p = DefaultSeccompProfile(DefaultContainerCapabilities());
  EXPECT_EQ(RunFiltered(p, ShippedProfileChecks), 0);
}

// Two comparisons of one argument become two rules: either one matches.
int SameArgumentChecks() {
  if (!FailsWith(::socket(AF_UNIX, SOCK_STREAM, 0), EADDRNOTAVAIL)) return 1;
  if (!FailsWith(::socket(AF_INET, SOCK_STREAM, 0), EADDRNOTAVAIL)) return 2;
  const int fd = ::socket(AF_INET6, SOCK_STREAM, 0);
  if (fd < 0 && errno == EADDRNOTAVAIL) return 3;
  if (fd >= 0) ::close(fd);
  return 0;
}

TEST(SeccompProfileTest, ComparisonsOfOneArgumentAreSplit) {
  const SeccompProfile p = LoadSeccompProfile(R"({
    "defaultAction": "SCMP_ACT_ALLOW",
    "archMap": [{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": null}],
    "syscalls": [{"names": ["socket"], "action": "SCMP_ACT_ERRNO", "errnoRet": 99,
                  "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"},
                           {"index": 0, "value": 2, "valueTwo": 0, "op": "SCMP_CMP_EQ"}]}]})",
                                              "test.json", {});
  EXPECT_EQ(p.oci.at("architectures"), json::array({"SCMP_ARCH_X86_64"}));
  EXPECT_EQ(RunFiltered(p, SameArgumentChecks), 0);
}

}  // namespace
}  // namespace ephemera
