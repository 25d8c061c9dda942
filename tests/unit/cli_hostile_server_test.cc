// The real `ephemera` program against a server that lies: whatever the
// server puts in a create answer must not make the client run anything.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <sys/stat.h>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "api/http_server.h"
#include "core/fs.h"
#include "core/subprocess.h"
#include "unit/test_files.h"

namespace ephemera {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

TEST(HostileServerTest, ACreateAnswerSmugglingAnSshOptionRunsNothingAndIsNotKept) {
  test::TempDir dir;
  const fs::path marker = dir.path() / "pwned";
  const fs::path socket = dir.path() / "api.sock";
  const std::string id = "0e0fac62-c3de-49a6-a5d8-341958b5eaf5";
  nlohmann::json answer = {{"id", id},
                           {"host", "127.0.0.1"},
                           {"port", 10022},
                           {"username", "-oProxyCommand=touch " + marker.string()},
                           {"password", std::string(120, 'a')},
                           {"token", std::string(255, 'T')},
                           {"host_key", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHx"}};
  HttpServer server(HttpListener::Unix(socket, 0600), {}, [&](const HttpRequest&, const Peer&) {
    HttpResponse r{boost::beast::http::status::created, 11};
    r.set(boost::beast::http::field::content_type, "application/json");
    r.body() = answer.dump();
    return r;
  });
  ::setenv("XDG_CONFIG_HOME", (dir.path() / "config").c_str(), 1);
  ProcessResult create = RunProcess({EPHEMERA_CLI, "--socket", socket.string(), "create"});
  EXPECT_NE(create.exit_code, 0);
  EXPECT_THAT(create.err, HasSubstr("username"));
  const fs::path remembered = dir.path() / "config" / "ephemera" / "sandboxes.json";
  EXPECT_TRUE(!fs::exists(remembered) || ReadFile(remembered).find(id) == std::string::npos);

  // A remembered entry someone tampered with is refused before ssh runs.
  fs::create_directories(remembered.parent_path());
  ::chmod(remembered.parent_path().c_str(), 0700);
  nlohmann::json tampered = answer;
  tampered.erase("id");
  WriteFileAtomic(remembered, nlohmann::json{{id, tampered}}.dump(), 0600);
  ProcessResult ssh = RunProcess({EPHEMERA_CLI, "ssh", id, "--", "true"});
  EXPECT_EQ(ssh.exit_code, 1);
  EXPECT_THAT(ssh.err, HasSubstr("unusable"));
  EXPECT_FALSE(fs::exists(marker)) << "the server made the client run a command";
  ::unsetenv("XDG_CONFIG_HOME");
}

}  // namespace
}  // namespace ephemera
