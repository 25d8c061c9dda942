// A libvirtd of the test's own, in its private network and mount
// namespaces: libvirt's runtime, state and log folders are tmpfs mounts seen
// by this process alone, so nothing it makes (domains, networks, filters,
// bridges) reaches the host or outlives the test. Its QEMU capability cache
// persists across runs (/var/cache/ephemera-test-libvirt): probing QEMU is
// what makes libvirtd's first answer slow.
#pragma once

#include <sys/types.h>

#include <string>

namespace ephemera::test {

class TestLibvirtd {
 public:
  TestLibvirtd();  // starts virtlogd, virtlockd and libvirtd, and waits for an answer
  ~TestLibvirtd();
  TestLibvirtd(const TestLibvirtd&) = delete;
  TestLibvirtd& operator=(const TestLibvirtd&) = delete;

  void StopLibvirtd();   // libvirtd only: domains keep running
  void StartLibvirtd();  // and wait until it answers
  // virsh against it; the output, or "" with ok=false.
  static std::string Virsh(const std::string& args, bool* ok = nullptr);

  static constexpr const char* kUri = "qemu:///system";

 private:
  void StartHelpers();
};

}  // namespace ephemera::test
