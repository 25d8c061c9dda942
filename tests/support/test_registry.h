// A real registry (Debian's docker-registry) on 127.0.0.1 for a test, made
// and removed by support/test_registry.sh: HTTPS with a test CA and htpasswd
// auth, or plain anonymous HTTP. Images reach it with skopeo.
#pragma once

#include <filesystem>
#include <string>

namespace ephemera::test {

class TestRegistry {
 public:
  enum class Mode { kTls, kPlain };
  // Throws std::runtime_error with the script's output when it cannot start.
  TestRegistry(std::filesystem::path dir, Mode mode);
  ~TestRegistry();
  TestRegistry(const TestRegistry&) = delete;
  TestRegistry& operator=(const TestRegistry&) = delete;

  std::string host() const { return "127.0.0.1:" + std::to_string(port_); }
  std::string Ref(const std::string& repo_tag) const {
    return "docker://" + host() + "/" + repo_tag;
  }
  std::filesystem::path ca_file() const { return dir_ / "ca.crt"; }
  std::filesystem::path credentials_file() const { return dir_ / "auth.json"; }
  std::filesystem::path wrong_credentials_file() const { return dir_ / "wrong-auth.json"; }
  int pid() const;  // the registry process (to stop it mid-transfer)
  // The registry's copy of a blob (to corrupt it behind its back).
  std::filesystem::path StoredBlob(const std::string& hex) const;

  // skopeo copy SOURCE (oci:DIR:TAG, docker-archive:FILE) to REPO:TAG here.
  void Push(const std::string& source, const std::string& repo_tag) const;
  // Uploads a manifest or index as it is (curl PUT), under REPO and REFERENCE.
  void PutManifest(const std::string& repo, const std::string& reference,
                   const std::string& media_type, const std::string& body) const;

 private:
  std::string Credentials() const;  // USER:PASSWORD
  std::filesystem::path dir_;
  Mode mode_;
  unsigned port_ = 0;
};

}  // namespace ephemera::test
