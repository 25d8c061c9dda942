#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <regex>
#include <set>

#include "core/error.h"
#include "provision/credentials.h"
#include "provision/provisioner.h"

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
  EndpointKey a = EndpointKey::Generate();
  EndpointKey b = EndpointKey::Generate();
  EXPECT_TRUE(std::regex_match(a.AuthorizedKeysLine(),
                               std::regex("ssh-ed25519 [A-Za-z0-9+/=]+ ephemera-endpoint\n")));
  EXPECT_NE(a.AuthorizedKeysLine(), b.AuthorizedKeysLine());
}

TEST(ProvisionTest, NothingListeningTimesOutClearly) {
  EndpointKey key = EndpointKey::Generate();
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
