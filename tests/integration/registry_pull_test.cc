// Pulls from a real registry (Debian's docker-registry on 127.0.0.1): HTTPS
// with a test CA and htpasswd auth, or plain HTTP for a registry listed as
// insecure. Images are made with umoci and pushed with skopeo. Every bad
// case names the reference and the cause and leaves nothing in the store.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <thread>

#include "core/error.h"
#include "core/fs.h"
#include "core/subprocess.h"
#include "image/oci/manifest.h"
#include "image/oci/registry.h"
#include "support/test_registry.h"
#include "unit/error_of.h"
#include "unit/test_files.h"

namespace ephemera::oci {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using ::testing::HasSubstr;

using test::ErrorOf;

void RunTool(const std::vector<std::string>& argv) {
  ProcessResult r = RunProcess(argv, 300s);
  ASSERT_TRUE(r.ok()) << argv[0] << " " << argv[1] << ": " << r.err;
}

// Every file in a store's sha256/ (blobs, and any lock or partial file left).
std::vector<std::string> StoredBlobs(const fs::path& store) {
  std::vector<std::string> names;
  if (!fs::exists(store / "sha256")) return names;
  for (const auto& e : fs::directory_iterator(store / "sha256")) {
    names.push_back(e.path().filename().string());
  }
  std::sort(names.begin(), names.end());
  return names;
}

class RegistryPullTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // Two layers, amd64 (tag "amd"), and the same with an arm64 config (tag "arm").
    layout_ = dir_.path() / "layout";
    RunTool({"umoci", "init", "--layout", layout_.string()});
    RunTool({"umoci", "new", "--image", layout_.string() + ":amd"});
    for (const char* name : {"one", "two"}) {
      const fs::path content = dir_.path() / name;
      fs::create_directories(content);
      test::WriteBytes(content / "file", std::string(70000, name[0]));
      RunTool({"umoci", "insert", "--image", layout_.string() + ":amd", content.string(),
               std::string("/") + name});
    }
    RunTool({"umoci", "config", "--image", layout_.string() + ":amd", "--architecture", "arm64",
             "--tag", "arm"});
    local_ = ReadLocalImage(ImageReference::Parse("oci:" + layout_.string() + ":amd"),
                            dir_.path() / "staging");
  }

  RegistryOptions OptionsFor(const test::TestRegistry& r, fs::path credentials, fs::path ca) {
    RegistryOptions o;
    o.registries.push_back({r.host(), false, std::move(ca), std::move(credentials)});
    o.stall_timeout = 2s;
    o.connect_timeout = 5s;
    return o;
  }

  test::TempDir dir_;
  fs::path layout_;
  LocalImage local_;
};

TEST_F(RegistryPullTest, OverTlsWithBasicAuthEveryBlobVerifiedAndStoredOnce) {
  test::TestRegistry registry(dir_.path() / "registry", test::TestRegistry::Mode::kTls);
  registry.Push("oci:" + layout_.string() + ":amd", "ephemera/test:1");
  const RegistryOptions options =
      OptionsFor(registry, registry.credentials_file(), registry.ca_file());
  const fs::path store = dir_.path() / "store";
  const ImageReference ref = ImageReference::Parse(registry.Ref("ephemera/test:1"));

  // Two pulls at once: both get the image, each blob is stored once.
  LocalImage a, b;
  std::string error_a, error_b;
  auto pull = [&](LocalImage& out, std::string& error) {
    try {
      out = PullRegistryImage(ref, options, store);
    } catch (const Error& e) {
      error = e.what();
    }
  };
  std::thread first([&] { pull(a, error_a); });
  pull(b, error_b);
  first.join();
  ASSERT_EQ(error_a, "");
  ASSERT_EQ(error_b, "");
  EXPECT_EQ(a.manifest_digest, local_.manifest_digest);  // skopeo kept the digests
  ASSERT_EQ(a.layers.size(), 2u);
  for (std::size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(a.layers[i].digest, local_.layers[i].digest);
    EXPECT_EQ(a.layers[i].path, b.layers[i].path);
    EXPECT_EQ(ReadFile(a.layers[i].path), ReadFile(local_.layers[i].path));
  }
  EXPECT_EQ(a.config, local_.config);
  EXPECT_EQ(StoredBlobs(store).size(), 3u);  // config and two layers, nothing else

  // Again: nothing is fetched but the manifest.
  std::vector<PullProgress> seen;
  PullRegistryImage(ref, options, store, [&](const PullProgress& p) { seen.push_back(p); });
  std::size_t layer_reports = 0;
  for (const auto& p : seen) {
    if (p.layer) {
      ++layer_reports;
      EXPECT_TRUE(p.cached) << p.layer;
      EXPECT_EQ(p.bytes, p.total);
    }
  }
  EXPECT_EQ(layer_reports, 2u);  // one per layer: found, not fetched
  // By digest, as pipelines pin it.
  LocalImage pinned = PullRegistryImage(
      ImageReference::Parse(registry.Ref("ephemera/test@" + local_.manifest_digest.str())), options,
      store);
  EXPECT_EQ(pinned.manifest_digest, local_.manifest_digest);
}

TEST_F(RegistryPullTest, WrongCredentialsNoCredentialsAnUntrustedCaOrAMissingTagAreClear) {
  test::TestRegistry registry(dir_.path() / "registry", test::TestRegistry::Mode::kTls);
  registry.Push("oci:" + layout_.string() + ":amd", "ephemera/test:1");
  const fs::path store = dir_.path() / "store";
  const std::string text = registry.Ref("ephemera/test:1");
  const ImageReference ref = ImageReference::Parse(text);

  Error e = ErrorOf([&] {
    PullRegistryImage(
        ref, OptionsFor(registry, registry.wrong_credentials_file(), registry.ca_file()), store);
  });
  EXPECT_EQ(e.code(), ErrorCode::kUnauthenticated);
  EXPECT_THAT(e.what(), HasSubstr(text));
  EXPECT_THAT(e.what(), HasSubstr("refused the credentials of 'ephemera-test' from " +
                                  registry.wrong_credentials_file().string()));

  e = ErrorOf([&] { PullRegistryImage(ref, OptionsFor(registry, {}, registry.ca_file()), store); });
  EXPECT_EQ(e.code(), ErrorCode::kUnauthenticated);
  EXPECT_THAT(e.what(), HasSubstr("asks for a user and password"));

  e = ErrorOf([&] {
    PullRegistryImage(ref, OptionsFor(registry, registry.credentials_file(), {}), store);
  });
  EXPECT_EQ(e.code(), ErrorCode::kUnavailable);
  EXPECT_THAT(e.what(), HasSubstr(text));
  EXPECT_THAT(e.what(), HasSubstr("its certificate is not trusted"));

  // The certificate is for 127.0.0.1, not for "localhost".
  const std::string by_name = "localhost:" + registry.host().substr(registry.host().find(':') + 1);
  RegistryOptions named;
  named.registries.push_back({by_name, false, registry.ca_file(), {}});
  e = ErrorOf([&] {
    PullRegistryImage(ImageReference::Parse("docker://" + by_name + "/ephemera/test:1"), named,
                      store);
  });
  EXPECT_EQ(e.code(), ErrorCode::kUnavailable);
  EXPECT_THAT(e.what(), HasSubstr("its certificate is not trusted: hostname mismatch"));

  e = ErrorOf([&] {
    PullRegistryImage(ImageReference::Parse(registry.Ref("ephemera/test:nope")),
                      OptionsFor(registry, registry.credentials_file(), registry.ca_file()), store);
  });
  EXPECT_EQ(e.code(), ErrorCode::kNotFound);
  EXPECT_THAT(e.what(), HasSubstr("MANIFEST_UNKNOWN"));
  EXPECT_TRUE(StoredBlobs(store).empty());
}

TEST_F(RegistryPullTest, ACorruptBlobOrAnotherArchitectureIsRefusedAndNothingIsStored) {
  test::TestRegistry registry(dir_.path() / "registry", test::TestRegistry::Mode::kTls);
  registry.Push("oci:" + layout_.string() + ":amd", "ephemera/test:1");
  registry.Push("oci:" + layout_.string() + ":arm", "ephemera/test:arm");
  const RegistryOptions options =
      OptionsFor(registry, registry.credentials_file(), registry.ca_file());
  const fs::path store = dir_.path() / "store";

  // The registry's copy of layer 2 changes behind its back.
  const fs::path blob = registry.StoredBlob(local_.layers[1].digest.hex);
  std::string bytes = ReadFile(blob);
  bytes[bytes.size() / 2] ^= 0x20;
  test::WriteBytes(blob, bytes);
  Error e = ErrorOf([&] {
    PullRegistryImage(ImageReference::Parse(registry.Ref("ephemera/test:1")), options, store);
  });
  EXPECT_EQ(e.code(), ErrorCode::kFailedPrecondition);
  EXPECT_THAT(e.what(), HasSubstr(registry.Ref("ephemera/test:1") + ": layer 2"));
  for (const std::string& name : StoredBlobs(store)) {
    EXPECT_NE(name, local_.layers[1].digest.hex);
    EXPECT_EQ(name.find(".partial"), std::string::npos) << name;
  }

  // A single-platform manifest for arm64.
  e = ErrorOf([&] {
    PullRegistryImage(ImageReference::Parse(registry.Ref("ephemera/test:arm")), options, store);
  });
  EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
  EXPECT_THAT(e.what(), HasSubstr("the image is for linux/arm64, not linux/amd64"));
  // An index that offers only arm64.
  std::optional<Descriptor> arm;
  for (const Descriptor& d : ParseImageIndex(ReadFile(layout_ / "index.json")).manifests) {
    if (d.ref_name == "arm") arm = d;
  }
  ASSERT_TRUE(arm);
  registry.PutManifest("ephemera/test", "multi", std::string(kOciIndex),
                       R"({"schemaVersion":2,"mediaType":")" + std::string(kOciIndex) +
                           R"(","manifests":[{"mediaType":")" + arm->media_type +
                           R"(","digest":")" + arm->digest.str() + R"(","size":)" +
                           std::to_string(arm->size) +
                           R"(,"platform":{"os":"linux","architecture":"arm64"}}]})");
  e = ErrorOf([&] {
    PullRegistryImage(ImageReference::Parse(registry.Ref("ephemera/test:multi")), options, store);
  });
  EXPECT_EQ(e.code(), ErrorCode::kNotFound);
  EXPECT_THAT(e.what(), HasSubstr(registry.Ref("ephemera/test:multi")));
  EXPECT_THAT(e.what(), HasSubstr("no linux/amd64 manifest (it has: linux/arm64)"));
}

TEST_F(RegistryPullTest, ARegistryThatStopsAnsweringMidBlobFailsThePull) {
  // A layer larger than what the sockets buffer, so that a stopped
  // registry really leaves the transfer waiting.
  const fs::path content = dir_.path() / "big";
  fs::create_directories(content);
  ProcessResult r =
      RunProcess({"sh", "-c", "head -c 48M /dev/urandom > " + (content / "noise").string()});
  ASSERT_TRUE(r.ok()) << r.err;
  RunTool({"umoci", "new", "--image", layout_.string() + ":big"});
  RunTool({"umoci", "insert", "--image", layout_.string() + ":big", content.string(), "/big"});
  test::TestRegistry registry(dir_.path() / "registry", test::TestRegistry::Mode::kTls);
  registry.Push("oci:" + layout_.string() + ":big", "ephemera/big:1");
  const std::string text = registry.Ref("ephemera/big:1");
  const fs::path store = dir_.path() / "store";
  bool stopped = false;
  const auto started = std::chrono::steady_clock::now();
  Error e = ErrorOf([&] {
    PullRegistryImage(ImageReference::Parse(text),
                      OptionsFor(registry, registry.credentials_file(), registry.ca_file()), store,
                      [&](const PullProgress& p) {
                        if (p.layer == 1 && p.bytes > 0 && !stopped) {
                          stopped = ::kill(registry.pid(), SIGSTOP) == 0;
                        }
                      });
  });
  ::kill(registry.pid(), SIGCONT);
  ASSERT_TRUE(stopped);
  EXPECT_EQ(e.code(), ErrorCode::kUnavailable);
  EXPECT_THAT(e.what(), HasSubstr(text + ": layer 1"));
  EXPECT_THAT(e.what(), HasSubstr("the body stopped after"));
  EXPECT_THAT(e.what(), HasSubstr("timed out after 2 s"));
  EXPECT_LT(std::chrono::steady_clock::now() - started, 60s);
  for (const std::string& name : StoredBlobs(store)) {
    EXPECT_EQ(name.find(".partial"), std::string::npos) << name;
  }
}

TEST_F(RegistryPullTest, PlainHttpOnlyForARegistryListedAsInsecure) {
  test::TestRegistry registry(dir_.path() / "registry", test::TestRegistry::Mode::kPlain);
  registry.Push("oci:" + layout_.string() + ":amd", "ephemera/test:1");
  const ImageReference ref = ImageReference::Parse(registry.Ref("ephemera/test:1"));
  RegistryOptions options;
  options.connect_timeout = 5s;
  options.stall_timeout = 5s;
  Error e = ErrorOf([&] { PullRegistryImage(ref, options, dir_.path() / "store"); });
  EXPECT_EQ(e.code(), ErrorCode::kUnavailable);
  EXPECT_THAT(e.what(), HasSubstr("https://" + registry.host()));
  EXPECT_THAT(e.what(), HasSubstr("TLS handshake failed"));
  options.registries.push_back({registry.host(), true, {}, {}});
  LocalImage image = PullRegistryImage(ref, options, dir_.path() / "store");
  EXPECT_EQ(image.manifest_digest, local_.manifest_digest);
}

}  // namespace
}  // namespace ephemera::oci
