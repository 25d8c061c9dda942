#include "e2e/live_iso.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "core/fs.h"
#include "guest/ssh_session.h"
#include "integration/guest_fixture.h"

namespace ephemera::test {

using namespace std::chrono_literals;
using ::testing::EndsWith;
using ::testing::HasSubstr;

std::string LiveIsoConfig() {
  return std::string("endpoint_password: ") + kLiveEndpointPassword + "\n";
}

std::string PublishedLiveIsoSha256() {
  std::string line = ReadFile(ImageDir() / kLiveImage / "sha256sum.txt");
  return line.substr(0, line.find(' '));
}

void ExpectLiveIsoSandbox(const nlohmann::json& s) {
  ASSERT_TRUE(s.contains("iso_path")) << s.dump(2);
  EXPECT_THAT(s["iso_path"].get<std::string>(), EndsWith("/anweddol_container.iso"));
  EXPECT_EQ(s["iso_sha256"], PublishedLiveIsoSha256());
  EXPECT_EQ(s["image_sha256"], PublishedLiveIsoSha256());
  EXPECT_EQ(s["image"], kLiveImage);
  const std::string host = s["host"];
  const auto port = s["port"].get<std::uint16_t>();
  SshSession client(host, port, s["username"], 30s);
  EXPECT_EQ(client.HostKeyFingerprint(), s["host_key_fingerprint"]);
  ASSERT_TRUE(client.AuthenticateWithPassword(s["password"]));
  // Booted from the CD: the live root over the ISO's ext4 image.
  CommandResult cmdline = client.Execute("cat /proc/cmdline", 30s);
  EXPECT_THAT(cmdline.out, HasSubstr("root=live:/live/rootfs.ext4"));
  CommandResult root = client.Execute("grep ' / ' /proc/mounts", 30s);
  EXPECT_THAT(root.out, HasSubstr("overlay / overlay"));
  // The image's well-known endpoint password no longer opens anything.
  SshSession endpoint(host, port, "endpoint", 30s);
  EXPECT_FALSE(endpoint.AuthenticateWithPassword(kLiveEndpointPassword));
}

}  // namespace ephemera::test
