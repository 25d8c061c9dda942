#include "image/oci/importer.h"

#include "image/oci/guest_contract.h"
#include "image/oci/tree_kernel.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <set>

#include "core/error.h"
#include "core/fs.h"
#include "core/sha256.h"
#include "core/unique_fd.h"
#include "image/file_probe.h"
#include "image/image.h"

namespace ephemera::oci {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// The command line the default image's initrd expects (see images/default).
constexpr char kCmdline[] =
    "console=ttyS0 root=/dev/vda rw quiet panic=-1 tsc=reliable 8250.nr_uarts=1 i8042.noaux "
    "i8042.nokbd cryptomgr.notests random.trust_cpu=on";

// The kernel image's /boot/vmlinux and /boot/initrd, copied into `out`.
void ExtractKernel(const LocalImage& kernel, const ImportRequest& request, const fs::path& scratch,
                   const fs::path& out) {
  const std::string what = request.kernel->str();
  RemoveOnExit guard(scratch);
  MakeDirs(scratch, 0700);
  RootfsWriter writer(scratch, request.limits);
  for (std::size_t i = 0; i < kernel.layers.size(); ++i) {
    writer.Apply(kernel.layers[i].path, fmt::format("{}: layer {}", what, i + 1));
  }
  for (const auto& [from, to] :
       {std::pair{"boot/vmlinux", "vmlinux"}, {"boot/initrd", "initrd.img"}}) {
    struct stat st {};
    if (::lstat((scratch / from).c_str(), &st) != 0 || !S_ISREG(st.st_mode)) {
      Fail(ErrorCode::kFailedPrecondition, "{}: a kernel image needs a file /{}", what, from);
    }
    fs::rename(scratch / from, out / to);  // same filesystem: no copy
  }
  if (ProbeFileKind(out / "vmlinux") != FileKind::kElf) {
    Fail(ErrorCode::kFailedPrecondition, "{}: /boot/vmlinux is not an uncompressed ELF kernel",
         what);
  }
}

// The guest contract's first condition: something to log in to.
void RequireSshd(const ImportRequest& request, const fs::path& root) {
  for (const char* sshd : {"usr/sbin/sshd", "sbin/sshd"}) {
    struct stat st {};
    if (::lstat((root / sshd).c_str(), &st) == 0) return;
  }
  Fail(ErrorCode::kFailedPrecondition,
       "{}: the root filesystem has no sshd (/usr/sbin/sshd): sandboxes are reached over SSH",
       request.rootfs.str());
}

LocalImage ReadImage(const ImageReference& ref, const ImportRequest& request,
                     const fs::path& image_dir, const fs::path& staging) {
  if (ref.transport == ImageReference::Transport::kRegistry) {
    return PullRegistryImage(ref, request.registry, BlobStoreOf(image_dir), request.progress);
  }
  return ReadLocalImage(ref, staging);
}

}  // namespace

fs::path BlobStoreOf(const fs::path& image_dir) { return image_dir / ".blobs"; }

std::vector<std::string> PruneBlobStore(const fs::path& image_dir, std::chrono::seconds min_age) {
  std::set<std::string> referenced;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(image_dir, ec)) {
    const fs::path manifest = entry.path() / "manifest.json";
    if (entry.is_symlink(ec) || !fs::exists(manifest, ec)) continue;
    json j = json::parse(ReadFile(manifest), nullptr, false);
    if (!j.is_object() || !j.contains("blobs") || !j["blobs"].is_array()) continue;
    for (const auto& b : j["blobs"]) {
      if (b.is_string()) referenced.insert(b.get<std::string>());
    }
  }
  std::vector<std::string> removed;
  const fs::path dir = BlobStoreOf(image_dir) / "sha256";
  const auto now = fs::file_time_type::clock::now();
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    // Young files may belong to a pull under way (blobs come before the
    // folder); old locks and partial files are what a crash left.
    auto written = entry.last_write_time(ec);
    if (ec || now - written < min_age || referenced.count("sha256:" + name)) continue;
    fs::remove(entry.path(), ec);
    if (!ec) removed.push_back("sha256:" + name);
  }
  std::sort(removed.begin(), removed.end());
  return removed;
}

ImportResult ImportImage(const fs::path& image_dir, const ImportRequest& request) {
  if (!IsValidImageName(request.name)) {
    Fail(ErrorCode::kInvalidArgument, "'{}' is not a valid image name", request.name.substr(0, 80));
  }
  MakeDirs(image_dir, 0755);
  // One import of a name at a time; the loser finds the winner's result.
  UniqueFd lock(::open((image_dir / ("." + request.name + ".import.lock")).c_str(),
                       O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (!lock || ::flock(lock.get(), LOCK_EX) != 0) {
    FailErrno("cannot lock the import of " + request.name, errno);
  }
  std::string staging_template = (image_dir / ".import-XXXXXX").string();
  if (!::mkdtemp(staging_template.data())) FailErrno("cannot make a staging folder", errno);
  RemoveOnExit staging(staging_template);

  ImportResult result;
  LocalImage kernel;
  if (request.kernel) {
    kernel = ReadImage(*request.kernel, request, image_dir, staging.path() / "kernel-archive");
    result.kernel_digest = kernel.manifest_digest;
  }
  LocalImage rootfs =
      ReadImage(request.rootfs, request, image_dir, staging.path() / "rootfs-archive");
  result.rootfs_digest = rootfs.manifest_digest;
  const std::string key = Sha256Hex(
      (request.kernel ? kernel.manifest_digest.str() : std::string("the rootfs's own kernel")) +
      "\n" + rootfs.manifest_digest.str() + "\n" + std::to_string(request.headroom_mib));
  const std::string folder = request.name + "-" + key.substr(0, 12);
  result.dir = image_dir / folder;
  auto link = [&] {
    const fs::path tmp = image_dir / ("." + request.name + ".link");
    std::error_code ec;
    fs::remove(tmp, ec);
    fs::create_directory_symlink(folder, tmp);
    fs::rename(tmp, image_dir / request.name);
  };
  if (fs::exists(result.dir / "manifest.json")) {
    result.cached = true;
    link();
    return result;
  }

  const fs::path out = staging.path() / folder;
  MakeDirs(out, 0755);
  if (request.kernel) ExtractKernel(kernel, request, staging.path() / "kernel-tree", out);
  GuestContract contract = GuestContract::kPresent;
  result.rootfs = BuildRootfsExt4(
      rootfs, staging.path() / "rootfs-tree", out / "rootfs.ext4", request.headroom_mib,
      request.rootfs.str(), request.limits, [&](const fs::path& tree) {
        RequireSshd(request, tree);
        if (!request.kernel) {
          std::optional<TreeKernel> own = FindTreeKernel(tree);
          if (!own) {
            Fail(ErrorCode::kFailedPrecondition,
                 "{}: no kernel image given, and the root filesystem carries none "
                 "(/boot/vmlinuz-VERSION or /lib/modules/VERSION/vmlinuz)",
                 request.rootfs.str());
          }
          ExtractTreeKernel(tree, *own, request.base_initrd, out, request.rootfs.str());
          result.kernel_version = own->version;
        }
        contract =
            AdoptGuestContract(tree, request.rootfs.str(),
                               request.kernel ? KernelModules::kElsewhere : KernelModules::kInTree);
      });
  json manifest = {
      {"name", request.name},
      {"version", 1},
      {"format", "kernel"},
      {"kernel", "vmlinux"},
      {"initrd", "initrd.img"},
      {"rootfs", "rootfs.ext4"},
      {"cmdline", kCmdline},
      {"source",
       {{"kernel", request.kernel ? request.kernel->str()
                                  : "the rootfs's own (" + result.kernel_version + ")"},
        {"rootfs", request.rootfs.str()}}},
      {"kernel_digest", request.kernel ? kernel.manifest_digest.str() : ""},
      {"rootfs_digest", rootfs.manifest_digest.str()},
      {"imported_at", static_cast<std::int64_t>(::time(nullptr))}};
  manifest["guest_contract"] = contract == GuestContract::kAdded ? "added" : "present";
  if (contract == GuestContract::kAdded) {
    manifest["cmdline"] = std::string(kCmdline) + kGuestContractCmdline;
    manifest["tcg_tb_size_mib"] = kGuestContractTcgTbSizeMib;
  }
  // The registry blobs it came from, which `image prune` keeps while it is here.
  json blobs = json::array();
  for (const LocalImage* image : {&kernel, &rootfs}) {
    if (image->config_blob) blobs.push_back(image->config_blob->str());
    for (const auto& layer : image->layers) {
      if (layer.path.parent_path().parent_path() == BlobStoreOf(image_dir)) {
        blobs.push_back(layer.digest.str());
      }
    }
  }
  if (!blobs.empty()) manifest["blobs"] = blobs;
  WriteFileAtomic(out / "manifest.json", manifest.dump(2) + "\n", 0644);
  // QEMU runs as a uid of its own: every file must be readable by others.
  for (const char* f : {"vmlinux", "initrd.img", "rootfs.ext4"}) ::chmod((out / f).c_str(), 0644);
  fs::rename(out, result.dir);
  link();
  return result;
}

}  // namespace ephemera::oci
