#include "e2e/test_libvirtd.h"

#include <grp.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <stdexcept>
#include <thread>

#include "core/fs.h"
#include "core/subprocess.h"

namespace ephemera::test {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace {

constexpr const char* kPrivate[] = {"/run/libvirt", "/var/lib/libvirt", "/var/log/libvirt"};
constexpr const char* kCache = "/var/cache/ephemera-test-libvirt";

void Check(bool ok, const std::string& what) {
  if (!ok) throw std::runtime_error("test libvirtd: " + what + ": " + std::strerror(errno));
}

void KillByPidfile(const fs::path& pidfile) {
  try {
    pid_t pid = std::stoi(ReadFile(pidfile));
    ::kill(pid, SIGTERM);
    for (int i = 0; i < 100 && ::kill(pid, 0) == 0; ++i) std::this_thread::sleep_for(50ms);
    ::kill(pid, SIGKILL);
  } catch (const std::exception&) {
  }
}

}  // namespace

TestLibvirtd::TestLibvirtd() {
  for (const char* dir : kPrivate) {
    fs::create_directories(dir);
    Check(::mount("tmpfs", dir, "tmpfs", 0, "mode=0755") == 0, std::string("mount ") + dir);
  }
  fs::create_directories(kCache);
  fs::create_directories("/var/cache/libvirt");
  Check(::mount(kCache, "/var/cache/libvirt", nullptr, MS_BIND, nullptr) == 0, "bind the cache");
  for (const char* dir : {"/var/lib/libvirt/qemu", "/var/lib/libvirt/dnsmasq",
                          "/var/lib/libvirt/images", "/var/log/libvirt/qemu"}) {
    fs::create_directories(dir);
  }
  // libvirt 9.0 probes QEMU again on every call when /dev/kvm exists but its
  // QEMU user may not open it (this host's node is root's, 0600): a node of
  // the test's own, group kvm as udev makes it, stops that.
  struct stat kvm {};
  if (::stat("/dev/kvm", &kvm) == 0 && S_ISCHR(kvm.st_mode)) {
    fs::create_directories("/run/libvirt/ephemera-test-dev");
    const char* node = "/run/libvirt/ephemera-test-dev/kvm";
    Check(::mknod(node, S_IFCHR | 0660, kvm.st_rdev) == 0, "mknod kvm");
    if (struct group* g = ::getgrnam("kvm")) Check(::chown(node, 0, g->gr_gid) == 0, "chown kvm");
    Check(::chmod(node, 0660) == 0, "chmod kvm");  // mknod's mode went through the umask
    Check(::mount(node, "/dev/kvm", nullptr, MS_BIND, nullptr) == 0, "bind kvm");
  }
  StartHelpers();
  StartLibvirtd();
}

TestLibvirtd::~TestLibvirtd() {
  // Whatever a test left: domains first, then the daemons.
  bool ok = false;
  std::string names = Virsh("list --name", &ok);
  for (std::size_t at = 0; ok && at < names.size();) {
    std::size_t end = names.find('\n', at);
    std::string name = names.substr(at, end - at);
    if (!name.empty()) Virsh("destroy " + name);
    at = end == std::string::npos ? names.size() : end + 1;
  }
  StopLibvirtd();
  KillByPidfile("/run/libvirt/virtlogd.pid");
  KillByPidfile("/run/libvirt/virtlockd.pid");
  ::umount2("/dev/kvm", MNT_DETACH);
  ::umount2("/var/cache/libvirt", MNT_DETACH);
  for (const char* dir : kPrivate) ::umount2(dir, MNT_DETACH);
}

void TestLibvirtd::StartHelpers() {
  RunChecked({"virtlogd", "--daemon", "--pid-file", "/run/libvirt/virtlogd.pid"});
  RunChecked({"virtlockd", "--daemon", "--pid-file", "/run/libvirt/virtlockd.pid"});
}

void TestLibvirtd::StartLibvirtd() {
  RunChecked({"libvirtd", "--daemon", "--pid-file", "/run/libvirt/libvirtd.pid"});
  // The first answer waits for libvirtd to probe QEMU (seconds, once).
  for (int i = 0; i < 1200; ++i) {
    bool ok = false;
    Virsh("version", &ok);
    if (ok) return;
    std::this_thread::sleep_for(100ms);
  }
  throw std::runtime_error("test libvirtd did not answer within 120 s");
}

void TestLibvirtd::StopLibvirtd() {
  KillByPidfile("/run/libvirt/libvirtd.pid");
  ::unlink("/run/libvirt/libvirtd.pid");
}

std::string TestLibvirtd::Virsh(const std::string& args, bool* ok) {
  ProcessResult r = RunProcess({"sh", "-c", std::string("virsh -q -c ") + kUri + " " + args},
                               std::chrono::seconds(120));
  if (ok) *ok = r.ok();
  return r.ok() ? r.out : "";
}

}  // namespace ephemera::test
