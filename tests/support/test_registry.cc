#include "support/test_registry.h"

#include <stdexcept>

#include "core/fs.h"
#include "core/subprocess.h"

namespace ephemera::test {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

TestRegistry::TestRegistry(fs::path dir, Mode mode) : dir_(std::move(dir)), mode_(mode) {
  fs::create_directories(dir_);
  ProcessResult r = RunProcess(
      {"bash", TEST_REGISTRY_SH, "start", dir_.string(), mode == Mode::kTls ? "tls" : "plain"},
      60s);
  if (!r.ok()) throw std::runtime_error("the test registry did not start: " + r.err);
  port_ = static_cast<unsigned>(std::stoul(r.out));
}

TestRegistry::~TestRegistry() { RunProcess({"bash", TEST_REGISTRY_SH, "stop", dir_.string()}); }

int TestRegistry::pid() const { return std::stoi(ReadFile(dir_ / "pid")); }

std::string TestRegistry::Credentials() const {
  std::string text = ReadFile(dir_ / "creds");
  return text.substr(0, text.find('\n'));
}

fs::path TestRegistry::StoredBlob(const std::string& hex) const {
  return dir_ / "storage/docker/registry/v2/blobs/sha256" / hex.substr(0, 2) / hex / "data";
}

void TestRegistry::Push(const std::string& source, const std::string& repo_tag) const {
  std::vector<std::string> argv = {"skopeo", "copy", "--quiet", "--preserve-digests"};
  if (mode_ == Mode::kTls) {
    argv.insert(argv.end(),
                {"--dest-cert-dir", (dir_ / "certs.d").string(), "--dest-creds", Credentials()});
  } else {
    argv.push_back("--dest-tls-verify=false");
  }
  argv.insert(argv.end(), {source, Ref(repo_tag)});
  ProcessResult r = RunProcess(argv, 300s);
  if (!r.ok()) throw std::runtime_error("skopeo copy " + source + " failed: " + r.err);
}

void TestRegistry::PutManifest(const std::string& repo, const std::string& reference,
                               const std::string& media_type, const std::string& body) const {
  const fs::path file = dir_ / "put-manifest.json";
  WriteFileAtomic(file, body, 0600);
  const std::string scheme = mode_ == Mode::kTls ? "https" : "http";
  std::vector<std::string> argv = {"curl",
                                   "-sS",
                                   "--fail-with-body",
                                   "-X",
                                   "PUT",
                                   "-H",
                                   "Content-Type: " + media_type,
                                   "--data-binary",
                                   "@" + file.string()};
  if (mode_ == Mode::kTls) {
    argv.insert(argv.end(), {"--cacert", ca_file().string(), "-u", Credentials()});
  }
  argv.push_back(scheme + "://" + host() + "/v2/" + repo + "/manifests/" + reference);
  ProcessResult r = RunProcess(argv, 60s);
  if (!r.ok()) throw std::runtime_error("PUT manifest failed: " + r.out + r.err);
}

}  // namespace ephemera::test
