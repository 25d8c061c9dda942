#include "image/oci/registry.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <nlohmann/json.hpp>

#include "core/base64.h"
#include "core/error.h"
#include "core/fs.h"
#include "core/sha256.h"
#include "core/text.h"
#include "core/unique_fd.h"
#include "image/oci/http_fetch.h"
#include "image/oci/manifest.h"

namespace ephemera::oci {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr std::size_t kMaxCredentialsFile = 1 << 20;
constexpr std::size_t kMaxTokenAnswer = 1 << 20;

std::string Lowercase(std::string_view text) {
  std::string out(text);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string UrlEncode(std::string_view text) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : text) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

// The registry's own message from an error answer ({"errors": [{"message"}]}).
std::string RegistryMessage(const HttpResponse& response) {
  json j = json::parse(response.body, nullptr, false);
  if (j.is_object() && j.contains("errors") && j["errors"].is_array() && !j["errors"].empty() &&
      j["errors"][0].is_object()) {
    const json& e = j["errors"][0];
    std::string message;
    if (e.contains("code") && e["code"].is_string()) message = e["code"].get<std::string>();
    if (e.contains("message") && e["message"].is_string()) {
      message += (message.empty() ? "" : ": ") + e["message"].get<std::string>();
    }
    if (!message.empty()) return EscapeForLog(message, 300);
  }
  return "HTTP " + std::to_string(response.status);
}

// One registry, one repository: the requests of a pull and their auth.
class RegistrySession {
 public:
  RegistrySession(const ImageReference& ref, const RegistryOptions& options) : ref_(ref) {
    for (const RegistryConfig& c : options.registries) {
      if (c.host == ref.registry) config_ = c;
    }
    config_.host = ref.registry;
    http_.ca_file = config_.ca_file;
    http_.connect_timeout = options.connect_timeout;
    http_.stall_timeout = options.stall_timeout;
    // Docker Hub answers under another name and keeps official images in library/.
    std::string host = ref.registry;
    repository_ = ref.repository;
    if (host == "docker.io") {
      host = "registry-1.docker.io";
      if (repository_.find('/') == std::string::npos) repository_ = "library/" + repository_;
    }
    base_ = HttpUrl::Parse((config_.insecure ? "http://" : "https://") + host + "/");
    if (!config_.credentials_file.empty()) {
      credentials_ = LoadCredentials(config_.credentials_file, ref.registry);
    }
  }

  const std::string& repository() const { return repository_; }

  // A GET on the registry, answering its challenge once. Throws for
  // anything but a 2xx answer, naming `what`.
  HttpResponse Get(const std::string& target, HttpHeaders headers, const std::string& what,
                   const BodySink& sink = {}, std::size_t max_kept = kMaxManifestBytes) {
    HttpUrl url = base_;
    url.target = target;
    HttpResponse response;
    for (int attempt = 0; attempt < 2; ++attempt) {
      HttpHeaders sent = headers;
      if (!authorization_.empty()) sent.emplace_back("Authorization", authorization_);
      try {
        response = HttpGet(url, sent, http_, sink, max_kept);
      } catch (const Error& e) {
        throw e.WithContext(what);
      }
      // A 401 from elsewhere (storage a blob was redirected to) is not the
      // registry asking: it gets no credentials.
      if (response.status != 401 || attempt == 1 || !response.url.SameServer(base_)) break;
      authorization_ = Authorize(response, what);
    }
    if (response.status / 100 == 2) return response;
    switch (response.status) {
      case 401:
        if (credentials_) {
          Fail(ErrorCode::kUnauthenticated,
               "{}: {} refused the credentials of '{}' from {} (wrong user or password?): {}", what,
               ref_.registry, EscapeForLog(credentials_->username, 100),
               config_.credentials_file.string(), RegistryMessage(response));
        }
        Fail(ErrorCode::kUnauthenticated,
             "{}: {} asks for credentials: give it a credentials_file under registries: ({})", what,
             ref_.registry, RegistryMessage(response));
      case 403:
        Fail(ErrorCode::kPermissionDenied, "{}: {} denies access: {}", what, ref_.registry,
             RegistryMessage(response));
      case 404:
        Fail(ErrorCode::kNotFound, "{}: not found on {}: {}", what, ref_.registry,
             RegistryMessage(response));
      default:
        Fail(ErrorCode::kUnavailable, "{}: {} answered {}", what, ref_.registry,
             RegistryMessage(response));
    }
  }

 private:
  std::string BasicHeader() const {
    return "Basic " + Base64Encode(credentials_->username + ":" + credentials_->password);
  }

  // The Authorization header that answers a 401's challenge.
  std::string Authorize(const HttpResponse& response, const std::string& what) {
    const std::string header = response.header("www-authenticate");
    if (header.empty()) {
      Fail(ErrorCode::kUnauthenticated, "{}: {} answered 401 without a challenge", what,
           ref_.registry);
    }
    const std::vector<AuthChallenge> challenges = [&] {
      try {
        return ParseAuthChallenges(header);
      } catch (const Error& e) {
        throw e.WithContext(what + ": " + ref_.registry);
      }
    }();
    // The token flow when offered, else basic, else the first (to name it).
    AuthChallenge challenge = challenges.front();
    for (const char* preferred : {"bearer", "basic"}) {
      auto it = std::find_if(challenges.begin(), challenges.end(),
                             [&](const AuthChallenge& c) { return c.scheme == preferred; });
      if (it != challenges.end()) {
        challenge = *it;
        break;
      }
    }
    if (challenge.scheme == "basic") {
      if (!credentials_) {
        Fail(ErrorCode::kUnauthenticated,
             "{}: {} asks for a user and password: give it a credentials_file under registries:",
             what, ref_.registry);
      }
      return BasicHeader();
    }
    if (challenge.scheme != "bearer") {
      Fail(ErrorCode::kUnauthenticated, "{}: {} asks for '{}' authentication, which is not taken",
           what, ref_.registry, EscapeForLog(challenge.scheme, 40));
    }
    const std::string realm = challenge.params["realm"];
    if (realm.empty()) {
      Fail(ErrorCode::kUnauthenticated, "{}: {} sent a Bearer challenge without a realm", what,
           ref_.registry);
    }
    HttpUrl token_url = HttpUrl::Parse(realm);
    if (!token_url.tls && !config_.insecure) {
      Fail(ErrorCode::kUnauthenticated,
           "{}: {} sends for tokens to plain-HTTP {}; refused for a registry not listed as "
           "insecure",
           what, ref_.registry, token_url.str());
    }
    std::string query;
    for (const char* name : {"service", "scope"}) {
      auto it = challenge.params.find(name);
      if (it == challenge.params.end()) continue;
      query += (query.empty() ? "" : "&") + std::string(name) + "=" + UrlEncode(it->second);
    }
    if (!query.empty()) {
      token_url.target += (token_url.target.find('?') == std::string::npos ? "?" : "&") + query;
    }
    HttpHeaders headers;
    // The password goes to a token server only over TLS, or to the
    // registry's own server (an insecure registry serving its own tokens).
    const bool with_password = credentials_ && (token_url.tls || token_url.SameServer(base_));
    if (with_password) headers.emplace_back("Authorization", BasicHeader());
    const std::string step = what + ": the token from " + token_url.authority();
    HttpResponse answer = [&] {
      try {
        return HttpGet(token_url, headers, http_, {}, kMaxTokenAnswer);
      } catch (const Error& e) {
        throw e.WithContext(step);
      }
    }();
    if (answer.status == 401 || answer.status == 403) {
      Fail(ErrorCode::kUnauthenticated, "{}: refused{}: {}", step,
           with_password ? " the credentials of '" + EscapeForLog(credentials_->username, 100) +
                               "' from " + config_.credentials_file.string()
           : credentials_ ? " anonymous access (the password goes to a token "
                            "server elsewhere only over https)"
                          : " anonymous access",
           RegistryMessage(answer));
    }
    if (answer.status != 200) {
      Fail(ErrorCode::kUnavailable, "{}: HTTP {}", step, answer.status);
    }
    json j = json::parse(answer.body, nullptr, false);
    for (const char* field : {"token", "access_token"}) {
      if (j.is_object() && j.contains(field) && j[field].is_string() &&
          !j[field].get<std::string>().empty()) {
        const std::string token = j[field].get<std::string>();
        for (char c : token) {
          if (c <= ' ' || c > '~') Fail(ErrorCode::kUnavailable, "{}: a malformed token", step);
        }
        return "Bearer " + token;
      }
    }
    Fail(ErrorCode::kUnavailable, "{}: the answer holds no token", step);
  }

  const ImageReference& ref_;
  RegistryConfig config_;
  HttpOptions http_;
  HttpUrl base_;
  std::string repository_;
  std::optional<BasicCredentials> credentials_;
  std::string authorization_;
};

constexpr const char* kManifestAccept =
    "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, "
    "application/vnd.docker.distribution.manifest.v2+json, "
    "application/vnd.docker.distribution.manifest.list.v2+json";

struct FetchedManifest {
  std::string body;
  Digest digest;
  ManifestKind kind;
};

// A manifest or index by tag or digest; by digest it must hash to it, and a
// Docker-Content-Digest the registry sends must match what came.
FetchedManifest FetchManifest(RegistrySession& session, const std::string& reference,
                              const std::string& what) {
  HttpResponse response = session.Get("/v2/" + session.repository() + "/manifests/" + reference,
                                      {{"Accept", kManifestAccept}}, what + ": the manifest");
  FetchedManifest m;
  m.body = std::move(response.body);
  m.digest = Digest{Sha256Hex(m.body)};
  if (reference.starts_with("sha256:") && m.digest.str() != reference) {
    Fail(ErrorCode::kFailedPrecondition, "{}: the manifest {} came with digest {}", what, reference,
         m.digest.str());
  }
  if (const std::string sent = response.header("docker-content-digest");
      !sent.empty() && sent != m.digest.str()) {
    Fail(ErrorCode::kFailedPrecondition,
         "{}: the registry says the manifest is {} but it hashes to {}", what,
         EscapeForLog(sent, 100), m.digest.str());
  }
  std::string content_type = response.header("content-type");
  content_type = content_type.substr(0, content_type.find(';'));
  try {
    m.kind = ClassifyManifest(m.body, content_type);
  } catch (const Error& e) {
    throw e.WithContext(what);
  }
  return m;
}

// A blob into the store, verified as it streams; a blob there already is
// taken as it is (the store holds only verified blobs).
fs::path FetchBlob(RegistrySession& session, const Descriptor& d, const fs::path& store,
                   const std::string& what, PullProgress progress, const PullProgressFn& report) {
  const fs::path path = BlobStorePath(store, d.digest);
  progress.total = d.size;
  // A blob found is touched: prune leaves recently used blobs alone.
  auto present = [&] {
    std::error_code ec;
    if (fs::file_size(path, ec) != d.size || ec) return false;
    ::utimensat(AT_FDCWD, path.c_str(), nullptr, 0);
    return true;
  };
  if (present()) {
    progress.bytes = d.size;
    progress.cached = true;
    if (report) report(progress);
    return path;
  }
  MakeDirs(path.parent_path(), 0700);
  // Two pulls needing one blob fetch it once: the second waits, then finds
  // it. The holder unlinks the lock file when done, so a lock taken on a
  // file no longer at its path is stale: take the new one.
  const fs::path lock_path = path.parent_path() / ("." + d.digest.hex + ".lock");
  UniqueFd lock;
  for (;;) {
    lock.reset(::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
    if (!lock || ::flock(lock.get(), LOCK_EX) != 0) {
      FailErrno(what + ": cannot lock " + lock_path.string(), errno);
    }
    struct stat held {
    }, there{};
    if (::fstat(lock.get(), &held) == 0 && ::stat(lock_path.c_str(), &there) == 0 &&
        held.st_ino == there.st_ino && held.st_dev == there.st_dev) {
      break;
    }
  }
  struct Unlink {
    const fs::path& p;
    ~Unlink() { ::unlink(p.c_str()); }
  } unlink_lock{lock_path};
  if (present()) {
    progress.bytes = d.size;
    progress.cached = true;
    if (report) report(progress);
    return path;
  }
  std::string partial = (path.parent_path() / ("." + d.digest.hex + ".partial-XXXXXX")).string();
  UniqueFd fd(::mkostemp(partial.data(), O_CLOEXEC));
  if (!fd) FailErrno(what + ": cannot write into " + store.string(), errno);
  RemoveOnExit remove_partial(partial);
  DigestVerifier verifier(d.digest, d.size, what);
  session.Get("/v2/" + session.repository() + "/blobs/" + d.digest.str(), {}, what,
              [&](const char* data, std::size_t size) {
                verifier.Update(data, size);
                for (std::size_t done = 0; done < size;) {
                  ssize_t n = ::write(fd.get(), data + done, size - done);
                  if (n < 0) {
                    if (errno == EINTR) continue;
                    FailErrno("cannot write " + partial, errno,
                              errno == ENOSPC ? ErrorCode::kNoSpace : ErrorCode::kInternal);
                  }
                  done += static_cast<std::size_t>(n);
                }
                progress.bytes += size;
                if (report) report(progress);
              });
  verifier.Finish();
  if (::fsync(fd.get()) != 0) FailErrno(what + ": cannot write " + partial, errno);
  if (::rename(partial.c_str(), path.c_str()) != 0) {
    FailErrno(what + ": cannot store " + path.string(), errno);
  }
  return path;
}

std::string ReadBlobText(const fs::path& path, const std::string& what) {
  std::error_code ec;
  if (fs::file_size(path, ec) > kMaxManifestBytes) {
    Fail(ErrorCode::kInvalidArgument, "{}: over {} bytes", what, kMaxManifestBytes);
  }
  return ReadFile(path);
}

}  // namespace

fs::path BlobStorePath(const fs::path& blob_store, const Digest& digest) {
  return blob_store / "sha256" / digest.hex;
}

std::optional<BasicCredentials> LoadCredentials(const fs::path& file, const std::string& host) {
  std::error_code ec;
  const auto size = fs::file_size(file, ec);
  if (ec) Fail(ErrorCode::kNotFound, "credentials file {} is missing", file.string());
  if (size > kMaxCredentialsFile) {
    Fail(ErrorCode::kInvalidArgument, "credentials file {}: over {} bytes", file.string(),
         kMaxCredentialsFile);
  }
  json j = json::parse(ReadFile(file), nullptr, false);
  auto bad = [&](const std::string& why) {
    Fail(ErrorCode::kInvalidArgument, "credentials file {}: {}", file.string(), why);
  };
  if (!j.is_object()) bad("not a JSON object");
  if (!j.contains("auths")) return std::nullopt;
  if (!j["auths"].is_object()) bad("'auths' must be an object");
  for (const auto& [key, entry] : j["auths"].items()) {
    // docker login writes "https://HOST/v1/" for some hosts: compare the host part.
    std::string_view name = key;
    for (std::string_view scheme : {"https://", "http://"}) {
      if (name.starts_with(scheme)) name.remove_prefix(scheme.size());
    }
    name = name.substr(0, name.find('/'));
    // Docker Hub is "docker.io" in references, "index.docker.io" in auth files.
    const bool hub = host == "docker.io" && (name == "index.docker.io" || name == "docker.io");
    if (name != host && !hub) continue;
    const std::string what = "entry '" + EscapeForLog(key, 100) + "'";
    if (!entry.is_object()) bad(what + " must be an object");
    BasicCredentials c;
    if (entry.contains("auth")) {
      if (!entry["auth"].is_string()) bad(what + ": 'auth' must be a string");
      auto decoded = Base64Decode(entry["auth"].get<std::string>());
      if (!decoded) bad(what + ": 'auth' is not base64");
      const auto colon = decoded->find(':');
      if (colon == std::string::npos) bad(what + ": 'auth' is not base64 of USER:PASSWORD");
      c.username = decoded->substr(0, colon);
      c.password = decoded->substr(colon + 1);
    } else if (entry.contains("username") && entry.contains("password") &&
               entry["username"].is_string() && entry["password"].is_string()) {
      c.username = entry["username"].get<std::string>();
      c.password = entry["password"].get<std::string>();
    } else {
      bad(what + ": needs 'auth' or 'username' and 'password'");
    }
    if (c.username.empty()) bad(what + ": an empty user name");
    return c;
  }
  return std::nullopt;
}

std::vector<AuthChallenge> ParseAuthChallenges(std::string_view header) {
  auto bad = [&](std::string_view why) {
    Fail(ErrorCode::kInvalidArgument, "WWW-Authenticate '{}': {}", EscapeForLog(header, 200), why);
  };
  std::vector<AuthChallenge> challenges;
  std::size_t i = 0;
  auto skip_space = [&] {
    while (i < header.size() && (header[i] == ' ' || header[i] == '\t')) ++i;
  };
  auto token = [&] {
    const std::size_t start = i;
    while (i < header.size() &&
           (std::isalnum(static_cast<unsigned char>(header[i])) ||
            std::string_view("!#$%&'*+-.^_`|~").find(header[i]) != std::string_view::npos)) {
      ++i;
    }
    return std::string(header.substr(start, i - start));
  };
  skip_space();
  while (i < header.size()) {
    AuthChallenge c;
    c.scheme = Lowercase(token());
    if (c.scheme.empty()) bad("no scheme");
    skip_space();
    if (i < header.size() && header[i] == ',') {  // a scheme without parameters
      ++i;
      skip_space();
      challenges.push_back(std::move(c));
      continue;
    }
    // Parameters, each `name=value`, until a comma that is followed by a
    // token without '=' (the next challenge's scheme) or the end.
    while (i < header.size()) {
      const std::size_t start = i;
      std::string name = Lowercase(token());
      if (name.empty()) bad("a parameter without a name");
      skip_space();
      if (i >= header.size() || header[i] != '=') {
        if (c.params.empty()) bad("a parameter without '='");
        i = start;  // the next challenge
        break;
      }
      ++i;
      skip_space();
      std::string value;
      if (i < header.size() && header[i] == '"') {
        ++i;
        for (;; ++i) {
          if (i >= header.size()) bad("an unclosed quote");
          if (header[i] == '"') break;
          if (header[i] == '\\' && i + 1 < header.size()) ++i;
          value += header[i];
        }
        ++i;
      } else {
        value = token();
      }
      if (c.params.count(name)) bad("parameter '" + name + "' twice");
      c.params[name] = value;
      skip_space();
      if (i < header.size()) {
        if (header[i] != ',') bad("parameters must be separated by ','");
        ++i;
        skip_space();
      }
    }
    challenges.push_back(std::move(c));
  }
  if (challenges.empty()) bad("no challenge");
  return challenges;
}

LocalImage PullRegistryImage(const ImageReference& ref, const RegistryOptions& options,
                             const fs::path& blob_store, const PullProgressFn& report) {
  const std::string what = ref.str();
  RegistrySession session = [&] {
    try {
      return RegistrySession(ref, options);
    } catch (const Error& e) {
      throw e.WithContext(what);
    }
  }();
  PullProgress progress;
  progress.reference = what;
  if (report) report(progress);
  FetchedManifest top = FetchManifest(session, ref.reference, what);
  FetchedManifest chosen = std::move(top);
  if (chosen.kind == ManifestKind::kIndex) {
    Descriptor d = [&] {
      try {
        return SelectPlatform(ParseImageIndex(chosen.body));
      } catch (const Error& e) {
        throw e.WithContext(what);
      }
    }();
    chosen = FetchManifest(session, d.digest.str(), what);
    if (chosen.body.size() != d.size) {
      Fail(ErrorCode::kFailedPrecondition, "{}: the linux/amd64 manifest is {} bytes, not {}", what,
           chosen.body.size(), d.size);
    }
    if (chosen.kind != ManifestKind::kManifest) {
      Fail(ErrorCode::kInvalidArgument, "{}: the index names another index for linux/amd64", what);
    }
  }
  ImageManifest manifest = [&] {
    try {
      return ParseImageManifest(chosen.body);
    } catch (const Error& e) {
      throw e.WithContext(what);
    }
  }();
  LocalImage image;
  image.manifest_digest = chosen.digest;
  progress.layers = manifest.layers.size();
  if (manifest.config.size > kMaxManifestBytes) {
    Fail(ErrorCode::kInvalidArgument, "{}: the config is {} bytes, over the {} allowed", what,
         manifest.config.size, kMaxManifestBytes);
  }
  image.config = ReadBlobText(
      FetchBlob(session, manifest.config, blob_store, what + ": the config", progress, {}),
      what + ": the config");
  CheckConfigPlatform(image.config, what);
  image.config_blob = manifest.config.digest;
  for (std::size_t i = 0; i < manifest.layers.size(); ++i) {
    const Descriptor& d = manifest.layers[i].descriptor;
    progress.layer = i + 1;
    image.layers.push_back({FetchBlob(session, d, blob_store,
                                      fmt::format("{}: layer {}", what, i + 1), progress, report),
                            d.digest});
  }
  return image;
}

}  // namespace ephemera::oci
