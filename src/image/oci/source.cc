#include "image/oci/source.h"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <unistd.h>

#include <map>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/fs.h"
#include "core/sha256.h"
#include "core/text.h"
#include "core/unique_fd.h"

namespace ephemera::oci {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr std::string_view kOciPrefix = "oci:";
constexpr std::string_view kArchivePrefix = "docker-archive:";
constexpr std::string_view kRegistryPrefix = "docker://";
constexpr std::size_t kMaxSmallFile = 4 << 20;  // manifests, configs, index.json

std::string ReadSmall(const fs::path& path, const std::string& what) {
  std::error_code ec;
  auto size = fs::file_size(path, ec);
  if (ec) Fail(ErrorCode::kNotFound, "{}: {} is missing", what, path.string());
  if (size > kMaxSmallFile) {
    Fail(ErrorCode::kInvalidArgument, "{}: {} is {} bytes, over the {} allowed", what,
         path.string(), size, kMaxSmallFile);
  }
  return ReadFile(path);
}

fs::path BlobPath(const fs::path& layout, const Digest& digest) {
  return layout / "blobs" / "sha256" / digest.hex;
}

LocalImage ReadOciLayout(const ImageReference& ref) {
  const std::string what = ref.str();
  const fs::path layout = ref.path;
  json marker = json::parse(ReadSmall(layout / "oci-layout", what), nullptr, false);
  if (!marker.is_object() || !marker.contains("imageLayoutVersion")) {
    Fail(ErrorCode::kInvalidArgument, "{}: oci-layout is not an OCI image layout marker", what);
  }
  ImageIndex index = [&] {
    try {
      return ParseImageIndex(ReadSmall(layout / "index.json", what));
    } catch (const Error& e) {
      throw e.WithContext(what + ": index.json");
    }
  }();
  std::optional<Descriptor> chosen;
  std::string names;
  for (const Descriptor& d : index.manifests) {
    names += (names.empty() ? "" : ", ") + (d.ref_name.empty() ? "(untagged)" : d.ref_name);
    if (ref.tag.empty() ? index.manifests.size() == 1 : d.ref_name == ref.tag) chosen = d;
  }
  if (!chosen) {
    Fail(ErrorCode::kNotFound, "{}: {} (it holds: {})", what,
         ref.tag.empty() ? "several images: name one with :TAG" : "no image tagged " + ref.tag,
         names.empty() ? "nothing" : EscapeForLog(names, 300));
  }
  Descriptor manifest_desc = *chosen;
  auto read_blob = [&](const Descriptor& d, const std::string& name) {
    fs::path path = BlobPath(layout, d.digest);
    VerifyBlob(path, d, what + ": " + name);
    return path;
  };
  if (manifest_desc.media_type == kOciIndex || manifest_desc.media_type == kDockerManifestList) {
    ImageIndex nested =
        ParseImageIndex(ReadSmall(read_blob(manifest_desc, "the nested index"), what));
    manifest_desc = SelectPlatform(nested);
  }
  ImageManifest manifest = [&] {
    try {
      return ParseImageManifest(ReadSmall(read_blob(manifest_desc, "the manifest"), what));
    } catch (const Error& e) {
      throw e.WithContext(what);
    }
  }();
  LocalImage image;
  image.manifest_digest = manifest_desc.digest;
  image.config = ReadSmall(read_blob(manifest.config, "the config"), what);
  CheckConfigPlatform(image.config, what);
  for (std::size_t i = 0; i < manifest.layers.size(); ++i) {
    const Descriptor& d = manifest.layers[i].descriptor;
    image.layers.push_back({read_blob(d, fmt::format("layer {}", i + 1)), d.digest});
  }
  return image;
}

// The config's rootfs.diff_ids: the digests of the uncompressed layers.
std::vector<Digest> DiffIds(const std::string& config, const std::string& what) {
  json j = json::parse(config, nullptr, false);
  if (!j.is_object() || !j.contains("rootfs") || !j["rootfs"].is_object() ||
      !j["rootfs"].contains("diff_ids") || !j["rootfs"]["diff_ids"].is_array()) {
    Fail(ErrorCode::kInvalidArgument, "{}: the image config has no rootfs.diff_ids", what);
  }
  std::vector<Digest> ids;
  for (const auto& id : j["rootfs"]["diff_ids"]) {
    if (!id.is_string()) Fail(ErrorCode::kInvalidArgument, "{}: a diff_id is not a string", what);
    ids.push_back(Digest::Parse(id.get<std::string>()));
  }
  return ids;
}

LocalImage ReadDockerArchive(const ImageReference& ref, const fs::path& staging) {
  const std::string what = ref.str();
  MakeDirs(staging, 0700);
  // One pass over the archive: every regular member is kept under a number
  // of ours, by its name in the archive.
  std::map<std::string, fs::path> members;
  std::map<std::string, std::string> digests;  // sha256 hex, taken while the member is written
  {
    archive* a = archive_read_new();
    struct Closer {
      archive* a;
      ~Closer() { archive_read_free(a); }
    } closer{a};
    archive_read_support_format_tar(a);
    if (archive_read_open_filename(a, ref.path.c_str(), 1 << 16) != ARCHIVE_OK) {
      Fail(ErrorCode::kNotFound, "{}: cannot open the archive: {}", what,
           archive_error_string(a) ? archive_error_string(a) : "unknown error");
    }
    for (;;) {
      archive_entry* entry = nullptr;
      int r = archive_read_next_header(a, &entry);
      if (r == ARCHIVE_EOF) break;
      if (r < ARCHIVE_WARN) {
        Fail(ErrorCode::kInvalidArgument, "{}: corrupt or truncated archive: {}", what,
             archive_error_string(a) ? archive_error_string(a) : "unknown error");
      }
      if (archive_entry_filetype(entry) != AE_IFREG) continue;
      std::string name = archive_entry_pathname(entry) ? archive_entry_pathname(entry) : "";
      while (name.starts_with("./")) name.erase(0, 2);
      fs::path out = staging / std::to_string(members.size());
      UniqueFd fd(::open(out.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
      if (!fd) FailErrno("cannot write " + out.string(), errno);
      const void* buffer = nullptr;
      std::size_t size = 0;
      la_int64_t offset = 0;
      la_int64_t hashed = 0;
      StreamingDigest digest;
      bool sparse = false;
      while ((r = archive_read_data_block(a, &buffer, &size, &offset)) == ARCHIVE_OK) {
        if (::pwrite(fd.get(), buffer, size, offset) != static_cast<ssize_t>(size)) {
          FailErrno("cannot write " + out.string(), errno);
        }
        if (offset != hashed) sparse = true;  // a hole: hash the file afterwards instead
        digest.Update(buffer, size);
        hashed = offset + static_cast<la_int64_t>(size);
      }
      if (r != ARCHIVE_EOF) {
        Fail(ErrorCode::kInvalidArgument, "{}: corrupt or truncated archive at '{}': {}", what,
             EscapeForLog(name, 200),
             archive_error_string(a) ? archive_error_string(a) : "unknown error");
      }
      // A hole at the end is no data block: the size comes from the header.
      if (::ftruncate(fd.get(), archive_entry_size(entry)) != 0) {
        FailErrno("cannot size " + out.string(), errno);
      }
      if (!sparse && hashed == archive_entry_size(entry)) digests[name] = digest.HexFinal();
      members[name] = out;
    }
  }
  auto member = [&](const std::string& name) {
    auto it = members.find(name);
    if (it == members.end()) {
      Fail(ErrorCode::kInvalidArgument, "{}: the archive has no {}", what, EscapeForLog(name, 200));
    }
    return it->second;
  };
  std::vector<DockerArchiveImage> images = [&] {
    try {
      return ParseDockerArchiveManifest(ReadSmall(member("manifest.json"), what));
    } catch (const Error& e) {
      throw e.WithContext(what);
    }
  }();
  if (images.size() != 1) {
    Fail(ErrorCode::kInvalidArgument, "{}: the archive holds {} images; ephemera takes one", what,
         images.size());
  }
  LocalImage image;
  image.config = ReadSmall(member(images[0].config), what);
  CheckConfigPlatform(image.config, what);
  // What the image is known by: its config's digest (as `docker images` shows it).
  image.manifest_digest = Digest{Sha256Hex(image.config)};
  std::vector<Digest> diff_ids = DiffIds(image.config, what);
  if (diff_ids.size() != images[0].layers.size()) {
    Fail(ErrorCode::kInvalidArgument, "{}: {} layers but {} diff_ids in the config", what,
         images[0].layers.size(), diff_ids.size());
  }
  for (std::size_t i = 0; i < diff_ids.size(); ++i) {
    fs::path path = member(images[0].layers[i]);
    auto known = digests.find(images[0].layers[i]);
    const std::string hex = known != digests.end() ? known->second : Sha256File(path);
    if (hex != diff_ids[i].hex) {
      Fail(ErrorCode::kFailedPrecondition,
           "{}: layer {} ({}) has digest sha256:{}, not the config's {}", what, i + 1,
           EscapeForLog(images[0].layers[i], 200), hex, diff_ids[i].str());
    }
    image.layers.push_back({path, diff_ids[i]});
  }
  return image;
}

}  // namespace

ImageReference ImageReference::Parse(std::string_view text) {
  ImageReference ref;
  auto bad = [&](std::string_view why) {
    Fail(ErrorCode::kInvalidArgument, "image reference '{}': {}", EscapeForLog(text, 200), why);
  };
  if (text.starts_with(kOciPrefix)) {
    ref.transport = Transport::kOciLayout;
    std::string_view rest = text.substr(kOciPrefix.size());
    // oci:DIR:TAG: the tag follows the last colon after the last slash.
    auto slash = rest.rfind('/');
    auto colon = rest.rfind(':');
    if (colon != std::string_view::npos && (slash == std::string_view::npos || colon > slash)) {
      ref.tag = std::string(rest.substr(colon + 1));
      rest = rest.substr(0, colon);
      if (ref.tag.empty()) bad("an empty tag");
    }
    ref.path = std::string(rest);
  } else if (text.starts_with(kArchivePrefix)) {
    ref.transport = Transport::kDockerArchive;
    ref.path = std::string(text.substr(kArchivePrefix.size()));
  } else if (text.starts_with(kRegistryPrefix)) {
    ref.transport = Transport::kRegistry;
    std::string_view rest = text.substr(kRegistryPrefix.size());
    auto slash = rest.find('/');
    if (slash == std::string_view::npos || slash == 0) bad("expected docker://HOST/REPOSITORY");
    ref.registry = std::string(rest.substr(0, slash));
    rest = rest.substr(slash + 1);
    if (auto at = rest.find('@'); at != std::string_view::npos) {
      ref.reference = std::string(rest.substr(at + 1));
      Digest::Parse(ref.reference);  // @ takes a digest only
      rest = rest.substr(0, at);
    } else if (auto colon = rest.rfind(':');
               colon != std::string_view::npos && rest.find('/', colon) == std::string_view::npos) {
      ref.reference = std::string(rest.substr(colon + 1));
      rest = rest.substr(0, colon);
      // The distribution spec's tag grammar: it goes into a URL path as it is.
      bool ok = !ref.reference.empty() && ref.reference.size() <= 128 && ref.reference[0] != '.' &&
                ref.reference[0] != '-';
      for (char c : ref.reference) {
        ok = ok && ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '_' || c == '.' || c == '-');
      }
      if (!ok) bad("a tag is 1 to 128 letters, digits and _ . - (not first . or -)");
    } else {
      ref.reference = "latest";
    }
    ref.repository = std::string(rest);
    for (char c : ref.repository) {
      const bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
                      c == '-' || c == '/';
      if (!ok) bad("a repository is lowercase letters, digits and . _ - /");
    }
    if (ref.repository.empty()) bad("no repository");
    std::string_view rest_repo = ref.repository;
    while (!rest_repo.empty()) {
      const auto slash = rest_repo.find('/');
      std::string_view component = rest_repo.substr(0, slash);
      if (component.empty() || component == "." || component == "..") {
        bad("a repository's components are not empty, '.' or '..'");
      }
      if (slash == std::string_view::npos) break;
      rest_repo.remove_prefix(slash + 1);
      if (rest_repo.empty()) bad("a repository's components are not empty, '.' or '..'");
    }
  } else {
    bad("expected oci:DIR[:TAG], docker-archive:FILE or docker://HOST/REPO[:TAG|@DIGEST]");
  }
  if (ref.transport != Transport::kRegistry && ref.path.empty()) bad("no path");
  return ref;
}

std::string ImageReference::str() const {
  switch (transport) {
    case Transport::kOciLayout:
      return std::string(kOciPrefix) + path + (tag.empty() ? "" : ":" + tag);
    case Transport::kDockerArchive:
      return std::string(kArchivePrefix) + path;
    case Transport::kRegistry:
      return std::string(kRegistryPrefix) + registry + "/" + repository +
             (reference.starts_with("sha256:") ? "@" : ":") + reference;
  }
  return "";
}

void CheckConfigPlatform(const std::string& config, const std::string& what) {
  json j = json::parse(config, nullptr, false);
  if (!j.is_object()) Fail(ErrorCode::kInvalidArgument, "{}: the image config is not JSON", what);
  auto field = [&](const char* name) {
    auto it = j.find(name);
    if (it == j.end() || !it->is_string()) {
      Fail(ErrorCode::kInvalidArgument, "{}: the image config names no {}", what, name);
    }
    return it->get<std::string>();
  };
  const std::string os = field("os"), architecture = field("architecture");
  if (os != "linux" || architecture != "amd64") {
    Fail(ErrorCode::kInvalidArgument, "{}: the image is for {}/{}, not linux/amd64", what,
         EscapeForLog(os, 40), EscapeForLog(architecture, 40));
  }
}

void VerifyBlob(const fs::path& file, const Descriptor& d, const std::string& what) {
  std::error_code ec;
  const std::uint64_t size = fs::file_size(file, ec);
  if (ec) Fail(ErrorCode::kNotFound, "{}: blob {} is missing", what, file.string());
  if (size != d.size) {
    Fail(ErrorCode::kFailedPrecondition, "{}: {} bytes where its descriptor gives {}", what, size,
         d.size);
  }
  if (const std::string hex = Sha256File(file); hex != d.digest.hex) {
    Fail(ErrorCode::kFailedPrecondition, "{}: its content has digest sha256:{}, not {}", what, hex,
         d.digest.str());
  }
}

LocalImage ReadLocalImage(const ImageReference& ref, const fs::path& staging) {
  switch (ref.transport) {
    case ImageReference::Transport::kOciLayout:
      return ReadOciLayout(ref);
    case ImageReference::Transport::kDockerArchive:
      return ReadDockerArchive(ref, staging);
    case ImageReference::Transport::kRegistry:
      break;
  }
  Fail(ErrorCode::kInvalidArgument, "{} is a registry reference, not a local image", ref.str());
}

}  // namespace ephemera::oci
