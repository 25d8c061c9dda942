#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <libssh/libssh.h>

#include <regex>
#include <set>

#include "core/error.h"
#include "guest/credentials.h"
#include "guest/provisioner.h"

namespace ephemera {
namespace {

TEST(CredentialsTest, MatchWhatAnweddolClientsCheck) {
  std::set<std::string> passwords;
  for (int i = 0; i < 200; ++i) {
    ClientCredentials c = GenerateClientCredentials();
    EXPECT_TRUE(std::regex_match(c.username, std::regex("user_[0-9]{5}"))) << c.username;
    EXPECT_EQ(c.password.size(), 120u);
    EXPECT_TRUE(std::regex_match(c.password, std::regex("[0-9a-zA-Z]{120}")));
    passwords.insert(c.password);
  }
  EXPECT_EQ(passwords.size(), 200u);
}

TEST(CredentialsTest, EndpointKeysAreFreshEd25519) {
  SshKeyPair a = SshKeyPair::Generate();
  SshKeyPair b = SshKeyPair::Generate();
  EXPECT_TRUE(std::regex_match(a.AuthorizedKeysLine(),
                               std::regex("ssh-ed25519 [A-Za-z0-9+/=]+ ephemera-endpoint\n")));
  EXPECT_NE(a.AuthorizedKeysLine(), b.AuthorizedKeysLine());
}

TEST(CredentialsTest, AHostKeyExportsAsAnOpenSshPrivateKeyOfTheSamePair) {
  SshKeyPair key = SshKeyPair::Generate();
  const std::string pem = key.PrivateKeyOpenSsh();
  EXPECT_THAT(pem, ::testing::StartsWith("-----BEGIN OPENSSH PRIVATE KEY-----\n"));
  EXPECT_THAT(pem, ::testing::EndsWith("-----END OPENSSH PRIVATE KEY-----\n"));
  // Read back as sshd would, it is the same pair: the public half matches.
  ssh_key imported = nullptr;
  ASSERT_EQ(ssh_pki_import_privkey_base64(pem.c_str(), nullptr, nullptr, nullptr, &imported),
            SSH_OK);
  char* base64 = nullptr;
  ASSERT_EQ(ssh_pki_export_pubkey_base64(imported, &base64), SSH_OK);
  EXPECT_EQ(key.PublicKeyLine(), std::string("ssh-ed25519 ") + base64);
  ssh_string_free_char(base64);
  ssh_key_free(imported);
  EXPECT_EQ(key.AuthorizedKeysLine(), key.PublicKeyLine() + " ephemera-endpoint\n");
}

TEST(CredentialsTest, OnlyWellFormedPublicKeysMayBeAuthorized) {
  const std::string key = SshKeyPair::Generate().PublicKeyLine();
  EXPECT_NO_THROW(CheckAuthorizedKey(key));
  EXPECT_NO_THROW(CheckAuthorizedKey(key + " alice@laptop"));
  auto message = [](const std::string& line) {
    try {
      CheckAuthorizedKey(line);
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
      return std::string(e.what());
    }
    return std::string("(accepted)");
  };
  const std::string blob = key.substr(key.find(' ') + 1);
  // A quote would end the guest shell's quoting; options come before the type.
  EXPECT_THAT(message(key + " x'; reboot; '"), ::testing::HasSubstr("quotes"));
  EXPECT_THAT(message("command=\"sh\" " + key), ::testing::HasSubstr("quotes"));
  EXPECT_THAT(message(key + "\nssh-ed25519 AAAA"), ::testing::HasSubstr("one line"));
  EXPECT_THAT(message("ssh-dss " + blob), ::testing::HasSubstr("ssh key"));
  EXPECT_THAT(message("ssh-rsa " + blob), ::testing::HasSubstr("ssh key"));
  EXPECT_THAT(message("rsa-sha2-256 " + blob), ::testing::HasSubstr("ssh key"));
  EXPECT_THAT(message("ssh-ed25519 AAAA"), ::testing::HasSubstr("not a valid"));
  EXPECT_THAT(message("ssh-ed25519"), ::testing::HasSubstr("not a valid"));
  EXPECT_THAT(message(key + " " + std::string(9000, 'c')), ::testing::HasSubstr("longer than"));
}

TEST(ProvisionTest, NothingListeningTimesOutClearly) {
  SshKeyPair key = SshKeyPair::Generate();
  ProvisionRequest request;
  request.host = "127.0.0.1";
  request.port = 1;  // nothing listens on port 1
  request.endpoint.key = &key;
  request.sshd_timeout = std::chrono::milliseconds(400);
  try {
    Provision(request);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kTimeout);
    EXPECT_THAT(e.what(), ::testing::HasSubstr("127.0.0.1:1 did not answer"));
  }
}

}  // namespace
}  // namespace ephemera
