#include "image/catalog.h"

#include <sys/stat.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/fs.h"
#include "core/sha256.h"
#include "core/text.h"
#include "image/file_probe.h"

namespace ephemera {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr char kManifest[] = "manifest.json";
constexpr char kDigestCache[] = "sha256sums.json";
// Anweddol's ISO mirror layout.
constexpr char kMirrorIso[] = "anweddol_container.iso";
constexpr char kMirrorSha256[] = "sha256sum.txt";
constexpr char kMirrorMd5[] = "md5sum.txt";
constexpr char kMirrorVersion[] = "version.txt";

bool IsPlainFileName(const std::string& name) {
  return !name.empty() && name.find('/') == std::string::npos && name != "." && name != "..";
}

std::string RequireString(const json& manifest, const std::string& key, const fs::path& where) {
  auto it = manifest.find(key);
  if (it == manifest.end() || !it->is_string() || it->get<std::string>().empty()) {
    Fail(ErrorCode::kFailedPrecondition, "{}: field '{}' must be a non-empty string",
         where.string(), key);
  }
  return it->get<std::string>();
}

void ExpectKind(const ImageFile& file, std::initializer_list<FileKind> kinds,
                const std::string& field) {
  FileKind kind = ProbeFileKind(file.path);
  for (FileKind k : kinds) {
    if (k == kind) return;
  }
  Fail(ErrorCode::kFailedPrecondition, "image {} '{}' is {}, not a usable {}", field,
       file.path.string(), FileKindName(kind), field);
}

bool IsLowerHex(std::string_view text, std::size_t length) {
  if (text.size() != length) return false;
  for (char c : text) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

// A checksum file as sha256sum/md5sum write it ("HEX  NAME" or "HEX *NAME",
// one line), or the bare digest, as mirrors often publish. The digest for
// `file_name`; kFailedPrecondition naming the file for anything else.
std::string ReadChecksumFile(const fs::path& path, std::size_t hex_length,
                             const std::string& file_name) {
  std::string text;
  try {
    text = ReadFile(path);
  } catch (const Error& e) {
    Fail(ErrorCode::kFailedPrecondition, "cannot read {}: {}", path.string(), e.what());
  }
  if (text.size() > 4096) Fail(ErrorCode::kFailedPrecondition, "{} is too large", path.string());
  std::istringstream lines(text);
  std::string line;
  while (std::getline(lines, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) continue;
    std::string digest = line.substr(0, line.find_first_of(" \t"));
    for (char& c : digest) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (!IsLowerHex(digest, hex_length)) {
      Fail(ErrorCode::kFailedPrecondition, "{}: '{}' is not a {}-digit hex digest", path.string(),
           EscapeForLog(digest, 80), hex_length);
    }
    std::string rest = line.size() > digest.size() ? line.substr(digest.size()) : "";
    rest.erase(0, rest.find_first_not_of(" \t"));
    if (!rest.empty() && rest[0] == '*') rest.erase(0, 1);
    if (rest.empty() || rest == file_name) return digest;
  }
  Fail(ErrorCode::kFailedPrecondition, "{} has no digest for {}", path.string(), file_name);
}

}  // namespace

ImageCatalog::ImageCatalog(fs::path image_dir) : image_dir_(std::move(image_dir)) {}

std::vector<std::string> ImageCatalog::List() const {
  // A folder a name points at is that name's, not an image of its own.
  std::set<std::string> linked;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(image_dir_, ec)) {
    if (entry.is_symlink(ec)) linked.insert(fs::read_symlink(entry.path(), ec).filename().string());
  }
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(image_dir_, ec)) {
    std::string name = entry.path().filename().string();
    if (IsValidImageName(name) && !linked.count(name) &&
        (fs::exists(entry.path() / kManifest, ec) || fs::exists(entry.path() / kMirrorIso, ec))) {
      names.push_back(name);
    }
  }
  std::sort(names.begin(), names.end());
  return names;
}

Image ImageCatalog::Get(const std::string& name) {
  if (!IsValidImageName(name)) {
    Fail(ErrorCode::kInvalidArgument, "'{}' is not a valid image name", name.substr(0, 80));
  }
  fs::path link = image_dir_ / name;
  std::error_code ec;
  fs::path dir = fs::canonical(link, ec);
  if (ec || !fs::is_directory(dir)) {
    Fail(ErrorCode::kNotFound, "image '{}' not found in {}", name, image_dir_.string());
  }
  if (!fs::exists(dir / kManifest, ec) && fs::exists(dir / kMirrorIso, ec)) {
    return LoadAnweddolMirror(name, dir);
  }
  return LoadManifest(name, dir);
}

void ImageCatalog::Remove(const std::string& name) {
  if (!IsValidImageName(name)) {
    Fail(ErrorCode::kInvalidArgument, "'{}' is not a valid image name", name.substr(0, 80));
  }
  const fs::path entry = image_dir_ / name;
  std::error_code ec;
  auto status = fs::symlink_status(entry, ec);
  if (ec || !fs::exists(status)) Fail(ErrorCode::kNotFound, "no image '{}'", name);
  if (fs::is_symlink(status)) {
    fs::path target = fs::read_symlink(entry, ec);
    fs::remove(entry, ec);
    // Only a folder of the catalog's own, never one a link leads elsewhere to.
    if (!ec && target.has_filename() && target.parent_path().empty()) {
      fs::remove_all(image_dir_ / target, ec);
    }
  } else {
    fs::remove_all(entry, ec);
  }
  if (ec) FailErrno("cannot remove image " + name, ec.value());
}

std::vector<std::string> ImageCatalog::Prune(const std::function<bool(const std::string&)>& keep) {
  std::set<std::string> linked;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(image_dir_, ec)) {
    if (entry.is_symlink(ec)) linked.insert(fs::read_symlink(entry.path(), ec).filename().string());
  }
  std::vector<std::string> removed;
  for (const auto& entry : fs::directory_iterator(image_dir_, ec)) {
    const std::string name = entry.path().filename().string();
    // NAME-<hash12> folders only: what builds and imports leave behind.
    auto dash = name.rfind('-');
    if (entry.is_symlink(ec) || !entry.is_directory(ec) || dash == std::string::npos ||
        name.size() - dash - 1 != 12 || linked.count(name) || keep(name)) {
      continue;
    }
    fs::remove_all(entry.path(), ec);
    if (!ec) removed.push_back(name);
  }
  std::sort(removed.begin(), removed.end());
  return removed;
}

std::vector<ImageCatalog::Entry> ImageCatalog::ListLoaded() {
  std::vector<Entry> entries;
  for (const std::string& name : List()) {
    Entry entry{name, std::nullopt, ""};
    try {
      entry.image = Get(name);
    } catch (const Error& e) {
      entry.error = e.what();
    }
    entries.push_back(std::move(entry));
  }
  return entries;
}

Image ImageCatalog::LoadAnweddolMirror(const std::string& name, const fs::path& dir) {
  Image image;
  image.name = name;
  image.dir = dir;
  image.layout = ImageLayout::kAnweddolMirror;
  image.format = ImageFormat::kIso;
  // Anweddol's ISOs know only their built-in endpoint password.
  image.takes_endpoint_key = false;
  fs::path version_path = dir / kMirrorVersion;
  std::string version;
  try {
    version = ReadFile(version_path);
  } catch (const Error& e) {
    Fail(ErrorCode::kFailedPrecondition, "image '{}': cannot read {}: {}", name,
         version_path.string(), e.what());
  }
  while (!version.empty() && std::isspace(static_cast<unsigned char>(version.back()))) {
    version.pop_back();
  }
  const bool printable =
      std::all_of(version.begin(), version.end(), [](char c) { return c > ' ' && c < 0x7f; });
  if (version.empty() || version.size() > 64 || !printable) {
    Fail(ErrorCode::kFailedPrecondition,
         "image '{}': {} must hold one version word (printable, up to 64 characters)", name,
         version_path.string());
  }
  image.version_label = version;
  // The leading number of "1.2.3", for what carries an integer version.
  image.version =
      std::isdigit(static_cast<unsigned char>(version[0])) ? std::atoi(version.c_str()) : 0;
  image.iso = Describe(dir, "iso", kMirrorIso);
  ExpectKind(*image.iso, {FileKind::kIso9660}, "iso");
  std::string sha256 = ReadChecksumFile(dir / kMirrorSha256, 64, kMirrorIso);
  if (sha256 != image.iso->sha256) {
    Fail(ErrorCode::kFailedPrecondition,
         "image '{}': {} does not match {} (the file's SHA-256 is {}, the list says {})", name,
         image.iso->path.string(), kMirrorSha256, image.iso->sha256, sha256);
  }
  if (fs::path md5 = dir / kMirrorMd5; fs::exists(md5)) {
    VerifyMd5(*image.iso, ReadChecksumFile(md5, 32, kMirrorIso), md5.string());
  }
  return image;
}

void ImageCatalog::VerifyMd5(const ImageFile& file, const std::string& expected,
                             const std::string& source) {
  auto key = std::make_tuple(file.path.string(), file.size, file.mtime_ns);
  std::string actual;
  {
    std::lock_guard lock(mutex_);
    if (auto it = md5s_.find(key); it != md5s_.end()) actual = it->second;
  }
  if (actual.empty()) {
    actual = Md5File(file.path);
    std::lock_guard lock(mutex_);
    md5s_[key] = actual;
  }
  if (actual != expected) {
    Fail(ErrorCode::kFailedPrecondition,
         "{} does not match {} (the file's MD5 is {}, the list says {})", file.path.string(),
         source, actual, expected);
  }
}

namespace {

// The import's record of its sources; wrong types make the image unusable
// like any other bad manifest field.
std::optional<ImageProvenance> ReadProvenance(const json& manifest, const fs::path& path) {
  auto source = manifest.find("source");
  if (source == manifest.end()) return std::nullopt;
  ImageProvenance p;
  try {
    p.kernel_reference = source->at("kernel").get<std::string>();
    p.rootfs_reference = source->at("rootfs").get<std::string>();
    p.kernel_digest = manifest.value("kernel_digest", std::string());
    p.rootfs_digest = manifest.value("rootfs_digest", std::string());
    p.guest_contract = manifest.value("guest_contract", std::string());
    p.imported_at = manifest.value("imported_at", std::int64_t{0});
    if (auto blobs = manifest.find("blobs"); blobs != manifest.end()) p.blobs = blobs->size();
  } catch (const json::exception& e) {
    Fail(ErrorCode::kFailedPrecondition, "{}: field 'source' or its digests are malformed: {}",
         path.string(), e.what());
  }
  return p;
}

}  // namespace

Image ImageCatalog::LoadManifest(const std::string& name, const fs::path& dir) {
  fs::path manifest_path = dir / kManifest;
  json manifest;
  try {
    manifest = json::parse(ReadFile(manifest_path));
  } catch (const json::exception& e) {
    Fail(ErrorCode::kFailedPrecondition, "{}: not valid JSON: {}", manifest_path.string(),
         e.what());
  } catch (const Error& e) {
    throw e.WithContext(fmt::format("image '{}'", name));
  }
  if (!manifest.is_object()) {
    Fail(ErrorCode::kFailedPrecondition, "{}: expected a JSON object", manifest_path.string());
  }

  Image image;
  image.name = name;
  image.dir = dir;
  auto version = manifest.find("version");
  if (version == manifest.end() || !version->is_number_integer() || version->get<int>() < 0) {
    Fail(ErrorCode::kFailedPrecondition, "{}: field 'version' must be a non-negative integer",
         manifest_path.string());
  }
  image.version = version->get<int>();
  image.version_label = std::to_string(image.version);
  if (auto endpoint = manifest.find("endpoint"); endpoint != manifest.end()) {
    if (*endpoint == "password") {
      image.takes_endpoint_key = false;
    } else if (*endpoint != "key") {
      Fail(ErrorCode::kFailedPrecondition, "{}: field 'endpoint' must be 'key' or 'password'",
           manifest_path.string());
    }
  }
  std::string format = RequireString(manifest, "format", manifest_path);
  if (format == "kernel") {
    image.format = ImageFormat::kKernel;
    image.kernel = Describe(dir, "kernel", RequireString(manifest, "kernel", manifest_path));
    ExpectKind(*image.kernel, {FileKind::kElf, FileKind::kBzImage}, "kernel");
    if (manifest.contains("kernel_compressed")) {
      image.kernel_compressed = Describe(
          dir, "kernel_compressed", RequireString(manifest, "kernel_compressed", manifest_path));
      ExpectKind(*image.kernel_compressed, {FileKind::kBzImage}, "kernel_compressed");
    }
    image.initrd = Describe(dir, "initrd", RequireString(manifest, "initrd", manifest_path));
    image.rootfs = Describe(dir, "rootfs", RequireString(manifest, "rootfs", manifest_path));
    ExpectKind(*image.rootfs, {FileKind::kExt4, FileKind::kQcow2}, "rootfs");
    image.rootfs_format = ProbeFileKind(image.rootfs->path) == FileKind::kQcow2 ? DiskFormat::kQcow2
                                                                                : DiskFormat::kRaw;
    image.cmdline = manifest.value("cmdline", std::string("console=ttyS0 root=/dev/vda rw"));
    if (auto tb = manifest.find("tcg_tb_size_mib"); tb != manifest.end()) {
      if (!tb->is_number_unsigned() || tb->get<unsigned>() < 16 || tb->get<unsigned>() > 2048) {
        Fail(ErrorCode::kFailedPrecondition,
             "{}: field 'tcg_tb_size_mib' must be an integer from 16 to 2048",
             manifest_path.string());
      }
      image.tcg_tb_size_mib = tb->get<unsigned>();
    }
    if (auto agent = manifest.find("agent"); agent != manifest.end()) {
      // Only the protocol this daemon speaks (docs/guest-agent.md); an image
      // with another falls back to the guest contract's SSH provisioning.
      if (!agent->is_object() || !agent->contains("protocol") ||
          !(*agent)["protocol"].is_number_unsigned()) {
        Fail(ErrorCode::kFailedPrecondition,
             "{}: field 'agent' must be an object with a numeric 'protocol'",
             manifest_path.string());
      }
      const unsigned protocol = (*agent)["protocol"].get<unsigned>();
      image.has_agent = protocol >= 1 && protocol <= 3 &&  // 3: streams (exec, files)
                        agent->value("channel", json()) == json(kAgentChannelName);
      if (image.has_agent) image.agent_protocol = protocol;
    }
    image.provenance = ReadProvenance(manifest, manifest_path);
  } else if (format == "iso") {
    image.format = ImageFormat::kIso;
    image.iso = Describe(dir, "iso", RequireString(manifest, "iso", manifest_path));
    ExpectKind(*image.iso, {FileKind::kIso9660}, "iso");
    if (auto sha = manifest.find("sha256"); sha != manifest.end()) {
      if (!sha->is_string() || !IsLowerHex(sha->get<std::string>(), 64)) {
        Fail(ErrorCode::kFailedPrecondition, "{}: field 'sha256' must be 64 lowercase hex digits",
             manifest_path.string());
      }
      if (*sha != image.iso->sha256) {
        Fail(ErrorCode::kFailedPrecondition,
             "image '{}': {} does not match the manifest's sha256 (the file's is {})", name,
             image.iso->path.string(), image.iso->sha256);
      }
    }
  } else {
    Fail(ErrorCode::kFailedPrecondition, "{}: field 'format' is '{}', expected 'kernel' or 'iso'",
         manifest_path.string(), format);
  }
  return image;
}

ImageFile ImageCatalog::Describe(const fs::path& dir, const std::string& field,
                                 const std::string& file_name) {
  if (!IsPlainFileName(file_name)) {
    Fail(ErrorCode::kFailedPrecondition,
         "{}: field '{}' must name a file inside the image directory", (dir / kManifest).string(),
         field);
  }
  ImageFile file;
  file.path = dir / file_name;
  struct stat st {};
  if (::stat(file.path.c_str(), &st) != 0) {
    Fail(ErrorCode::kNotFound, "image {} file {} is missing", field, file.path.string());
  }
  if (!S_ISREG(st.st_mode)) {
    Fail(ErrorCode::kFailedPrecondition, "image {} {} is not a regular file", field,
         file.path.string());
  }
  if (st.st_size == 0) {
    Fail(ErrorCode::kFailedPrecondition, "image {} {} is empty", field, file.path.string());
  }
  file.size = static_cast<std::uint64_t>(st.st_size);
  std::int64_t mtime_ns =
      static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec;
  file.mtime_ns = mtime_ns;
  file.sha256 = CachedSha256(file.path, file.size, mtime_ns);
  return file;
}

std::string ImageCatalog::CachedSha256(const fs::path& path, std::uint64_t size,
                                       std::int64_t mtime_ns) {
  auto key = std::make_tuple(path.string(), size, mtime_ns);
  {
    std::lock_guard lock(mutex_);
    if (auto it = digests_.find(key); it != digests_.end()) return it->second;
  }
  // The sidecar keeps digests across daemon restarts.
  fs::path sidecar = path.parent_path() / kDigestCache;
  json cache = json::object();
  try {
    cache = json::parse(ReadFile(sidecar));
  } catch (const std::exception&) {
    cache = json::object();  // absent or damaged: recompute
  }
  std::string file = path.filename().string();
  std::string digest;
  if (cache.is_object() && cache.contains(file) && cache[file].is_object() &&
      cache[file].value("size", std::uint64_t{0}) == size &&
      cache[file].value("mtime_ns", std::int64_t{0}) == mtime_ns &&
      cache[file].contains("sha256") && cache[file]["sha256"].is_string()) {
    digest = cache[file]["sha256"].get<std::string>();
  } else {
    digest = Sha256File(path);
    if (!cache.is_object()) cache = json::object();
    cache[file] = {{"size", size}, {"mtime_ns", mtime_ns}, {"sha256", digest}};
    try {
      WriteFileAtomic(sidecar, cache.dump(2) + "\n", 0644);
    } catch (const Error&) {
      // A read-only image dir still works; the digest is then kept in memory only.
    }
  }
  std::lock_guard lock(mutex_);
  digests_[key] = digest;
  return digest;
}

}  // namespace ephemera
