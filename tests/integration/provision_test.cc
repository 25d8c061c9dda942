// Provisioning a real default-image guest over SSH (libssh), per the guest
// contract, inside the test's private network namespace.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "core/error.h"
#include "guest/provisioner.h"
#include "guest/ssh_session.h"
#include "integration/guest_fixture.h"
#include "unit/error_of.h"
#include "vm/console.h"

namespace ephemera {
namespace {

using namespace std::chrono_literals;
using ::testing::HasSubstr;

class ProvisionGuestTest : public test::GuestFixture {};

TEST_F(ProvisionGuestTest, CreatesTheClientUserAndLocksTheEndpoint) {
  SshKeyPair key = SshKeyPair::Generate();
  Guest g = Boot(key.AuthorizedKeysLine());
  ProvisionRequest request;
  request.host = g.network.subnet.guest().str();
  request.endpoint.key = &key;
  request.sshd_timeout = 120s;
  ProvisionResult r = Provision(request);
  EXPECT_THAT(r.host_key_fingerprint, ::testing::StartsWith("SHA256:"));
  // The guest announced the same fresh host key on its console at boot.
  EXPECT_THAT(ConsoleTail(g.vm.serial_log, 50), HasSubstr(r.host_key));

  // The client logs in through the host's forwarded port with what it got.
  SshSession client("127.0.0.1", g.network.host_port, r.credentials.username, 30s);
  EXPECT_EQ(client.HostKeyFingerprint(), r.host_key_fingerprint);
  ASSERT_TRUE(client.AuthenticateWithPassword(r.credentials.password));
  CommandResult id = client.Execute("id -un", 30s);
  EXPECT_EQ(id.exit_status, 0);
  EXPECT_EQ(id.out, r.credentials.username + "\n");
  CommandResult root =
      client.Execute("echo '" + r.credentials.password + "' | sudo -S -p '' id -u", 30s);
  EXPECT_EQ(root.exit_status, 0) << root.err;
  EXPECT_EQ(root.out, "0\n");

  // The endpoint is locked: neither its key nor a password gets in.
  SshSession endpoint("127.0.0.1", g.network.host_port, "endpoint", 30s);
  EXPECT_FALSE(endpoint.AuthenticateWithKey(key));
  // A wrong password for the client user is refused too.
  SshSession wrong("127.0.0.1", g.network.host_port, r.credentials.username, 30s);
  EXPECT_FALSE(wrong.AuthenticateWithPassword("not-the-password"));
}

TEST_F(ProvisionGuestTest, TheHostKeyHandedInIsTheOneSshdShowsAndNoOtherIsAccepted) {
  SshKeyPair key = SshKeyPair::Generate();
  SshKeyPair host_key = SshKeyPair::Generate();
  Guest g = Boot(key.AuthorizedKeysLine(), host_key.PrivateKeyOpenSsh());
  ProvisionRequest request;
  request.host = g.network.subnet.guest().str();
  request.endpoint.key = &key;
  request.sshd_timeout = 120s;
  // Expecting another key: refused at the handshake, before any login.
  request.expected_host_key = SshKeyPair::Generate().PublicKeyLine();
  Error e = test::ErrorOf([&] { Provision(request); });
  EXPECT_EQ(e.code(), ErrorCode::kFailedPrecondition);
  EXPECT_THAT(e.what(), HasSubstr("not the one handed to it"));
  request.expected_host_key = host_key.PublicKeyLine();
  ProvisionResult r = Provision(request);
  EXPECT_EQ(r.host_key, host_key.PublicKeyLine());
  // The guest took the key it was given and made none of its own.
  EXPECT_THAT(ConsoleTail(g.vm.serial_log, 200),
              ::testing::Not(HasSubstr("EPHEMERA_SSH_HOST_KEY")));
  SshSession client("127.0.0.1", g.network.host_port, r.credentials.username, 30s);
  EXPECT_EQ(client.HostKeyLine(), host_key.PublicKeyLine());
  EXPECT_TRUE(client.AuthenticateWithPassword(r.credentials.password));
}

TEST_F(ProvisionGuestTest, AWrongEndpointKeyIsRefusedClearly) {
  SshKeyPair installed = SshKeyPair::Generate();
  SshKeyPair other = SshKeyPair::Generate();
  Guest g = Boot(installed.AuthorizedKeysLine());
  ProvisionRequest request;
  request.host = g.network.subnet.guest().str();
  request.endpoint.key = &other;
  request.endpoint.password = "endpoint";  // the well-known Anweddol password must not work
  request.sshd_timeout = 120s;
  try {
    Provision(request);
    FAIL() << "provisioned with a key the guest never saw";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kFailedPrecondition);
    EXPECT_THAT(e.what(), HasSubstr("refused the endpoint"));
  }
}

}  // namespace
}  // namespace ephemera
