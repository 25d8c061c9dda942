#include "integration/guest_fixture.h"

#include <cstdlib>

#include "vm/console.h"

namespace ephemera::test {

using namespace std::chrono_literals;

std::filesystem::path ImageDir() {
  const char* dir = std::getenv("EPHEMERA_IMAGE_DIR");
  return dir ? dir : "/var/cache/ephemera/images";
}

void GuestFixture::SetUp() {
  networks_ = std::make_unique<NetworkManager>(state_.path(), Network());
  cgroups_ = std::make_shared<Cgroups>(Cgroups::Discover(Cgroups::SubtreeFor(state_.path())));
  driver_ = std::make_unique<QemuDriver>(QemuDriverOptions{
      state_.path(), VmConfig{}, AccelChoice{Accel::kTcg, "tests use TCG"}, cgroups_});
  image_ = ImageCatalog(ImageDir()).Get("default");
}

NetworkConfig GuestFixture::Network() const {
  NetworkConfig net;
  net.forward_address = "127.0.0.1";
  return net;
}

void GuestFixture::TearDown() {
  // Whatever failed, no guest or network outlives the test.
  if (driver_) {
    for (const auto& id : driver_->List()) driver_->Destroy(id);
  }
  if (networks_) networks_->TeardownAll();
  if (cgroups_) cgroups_->RemoveBases();
}

GuestFixture::Guest GuestFixture::Boot(const std::string& authorized_key,
                                       const std::string& host_key) {
  SandboxId id = SandboxId::Generate();
  SandboxNetwork network = networks_->Setup(id);
  VmSpec spec(id);
  spec.image = image_;
  spec.nic = NicSpec{network.tap, network.mac};
  spec.guest_files = {{"opt/ephemera/endpoint_authorized_keys", authorized_key}};
  if (!host_key.empty())
    spec.guest_files.push_back({"opt/ephemera/ssh_host_ed25519_key", host_key, true});
  return Guest{network, driver_->Start(spec)};
}

void GuestFixture::WaitReady(const Guest& guest) {
  WaitForConsoleMarker(guest.vm.serial_log, "EPHEMERA_SSHD_READY", 120s, [&] {
    return driver_->Inspect(guest.network.id).state != VmState::kShutoff;
  });
}

}  // namespace ephemera::test
