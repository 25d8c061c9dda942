// Pulling an image from a registry over the distribution API
// (docker://HOST/REPO[:TAG|@DIGEST]): HTTPS verified against the system's
// CA store or a configured CA, plain HTTP only for registries configured as
// insecure, anonymous access, the registry token flow (Bearer) and basic
// auth with credentials from a file, manifest lists and indexes resolved to
// linux/amd64, every blob checked against its digest while it streams into
// a content-addressed store shared by all pulls.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "image/oci/source.h"

namespace ephemera::oci {

// One `registries:` entry of the configuration.
struct RegistryConfig {
  std::string host;                        // HOST[:PORT], as in docker:// references
  bool insecure = false;                   // plain HTTP (never for a registry not listed so)
  std::filesystem::path ca_file;           // empty: the system's CA store
  std::filesystem::path credentials_file;  // a containers/docker auth.json
};

struct RegistryOptions {
  std::vector<RegistryConfig> registries;
  std::chrono::milliseconds connect_timeout{15'000};
  std::chrono::milliseconds stall_timeout{30'000};  // a registry silent this long fails the pull
};

struct BasicCredentials {
  std::string username, password;
};

// The credentials for `host` in an auth.json ({"auths": {HOST: {"auth":
// base64(user:password)}}}, or "username"/"password" fields), nullopt when
// the file names none for it. kInvalidArgument naming the file and entry
// for anything malformed; kNotFound when the file is missing.
std::optional<BasicCredentials> LoadCredentials(const std::filesystem::path& file,
                                                const std::string& host);

// A WWW-Authenticate challenge: `Bearer realm="…",service="…",scope="…"`.
struct AuthChallenge {
  std::string scheme;                         // lowercased: "bearer", "basic"
  std::map<std::string, std::string> params;  // names lowercased
};
// The challenges of a WWW-Authenticate header (one or more, separated by
// commas, as in `Basic realm="r", Bearer realm="…"`); kInvalidArgument for
// a header that is not a list of challenges of that form (token68
// credentials, which registries do not send, included).
std::vector<AuthChallenge> ParseAuthChallenges(std::string_view header);

// Progress of a pull, for a terminal or an API client.
struct PullProgress {
  std::string reference;
  std::size_t layer = 0, layers = 0;   // 1-based; 0 while fetching manifests
  std::uint64_t bytes = 0, total = 0;  // of the current blob
  bool cached = false;                 // the blob was in the store already
};
using PullProgressFn = std::function<void(const PullProgress&)>;

// Pulls `ref` (kRegistry) into `blob_store` (BLOB_STORE/sha256/HEX, each
// blob renamed in only once its digest matched). The result's layers are
// files of the store. Errors name the reference and the cause:
// kUnauthenticated (no or wrong credentials), kNotFound (no such
// repository, tag or digest), kUnavailable (unreachable, TLS, a stall),
// kFailedPrecondition (a digest mismatch), kInvalidArgument (a malformed
// manifest, another platform).
LocalImage PullRegistryImage(const ImageReference& ref, const RegistryOptions& options,
                             const std::filesystem::path& blob_store,
                             const PullProgressFn& progress = {});

// The path of a blob in a store, whether or not it is there.
std::filesystem::path BlobStorePath(const std::filesystem::path& blob_store, const Digest& digest);

}  // namespace ephemera::oci
