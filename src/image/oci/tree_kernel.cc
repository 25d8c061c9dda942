#include "image/oci/tree_kernel.h"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <sstream>

#include "core/error.h"
#include "core/fs.h"
#include "core/unique_fd.h"
#include "image/oci/layer_reader.h"

namespace ephemera::oci {

namespace fs = std::filesystem;

namespace {

constexpr std::size_t kMaxKernelFile = 128 << 20;
constexpr std::size_t kMaxVmlinux = 512 << 20;
constexpr std::size_t kMaxModule = 64 << 20;
constexpr std::size_t kMaxModuleIndex = 16 << 20;

// What the initrd's /init needs (images/default/modules.list, "initrd").
const std::vector<std::string> kInitrdModules = {"virtio_mmio",    "virtio_pci", "virtio_blk",
                                                 "crc32c_generic", "ext4",       "virtio_net",
                                                 "qemu_fw_cfg"};

bool ExistsInTree(int root, const std::string& path) {
  UniqueFd fd(OpenInRoot(root, path, O_PATH));
  return static_cast<bool>(fd);
}

// Version order: runs of digits compare as numbers ("6.10" after "6.9").
bool VersionLess(const std::string& a, const std::string& b) {
  std::size_t i = 0, j = 0;
  while (i < a.size() && j < b.size()) {
    if (std::isdigit(static_cast<unsigned char>(a[i])) &&
        std::isdigit(static_cast<unsigned char>(b[j]))) {
      std::size_t ie = i, je = j;
      while (ie < a.size() && std::isdigit(static_cast<unsigned char>(a[ie]))) ++ie;
      while (je < b.size() && std::isdigit(static_cast<unsigned char>(b[je]))) ++je;
      const std::string x = a.substr(i, ie - i), y = b.substr(j, je - j);
      const std::string xs = x.substr(std::min(x.find_first_not_of('0'), x.size()));
      const std::string ys = y.substr(std::min(y.find_first_not_of('0'), y.size()));
      if (xs.size() != ys.size()) return xs.size() < ys.size();
      if (xs != ys) return xs < ys;
      i = ie;
      j = je;
    } else {
      if (a[i] != b[j]) return a[i] < b[j];
      ++i;
      ++j;
    }
  }
  return a.size() - i < b.size() - j;
}

using ArchivePtr = std::unique_ptr<archive, int (*)(archive*)>;

// The data of a single compressed stream (or of uncompressed data as it
// is), as far as it decompresses: a stream followed by other bytes (a
// bzImage's trailer) stops with an error after its last byte.
std::string Decompress(std::string_view data, std::size_t limit, const std::string& what) {
  ArchivePtr a(archive_read_new(), archive_read_free);
  archive_read_support_filter_all(a.get());
  archive_read_support_format_raw(a.get());
  archive_entry* entry = nullptr;
  if (archive_read_open_memory(a.get(), data.data(), data.size()) != ARCHIVE_OK ||
      archive_read_next_header(a.get(), &entry) != ARCHIVE_OK) {
    Fail(ErrorCode::kFailedPrecondition, "{}: cannot decompress: {}", what,
         archive_error_string(a.get()) ? archive_error_string(a.get()) : "unknown format");
  }
  std::string out;
  char buffer[1 << 16];
  for (;;) {
    la_ssize_t n = archive_read_data(a.get(), buffer, sizeof buffer);
    if (n <= 0) break;
    out.append(buffer, static_cast<std::size_t>(n));
    if (out.size() > limit) {
      Fail(ErrorCode::kFailedPrecondition, "{}: decompresses to over {} MiB", what, limit >> 20);
    }
  }
  return out;
}

template <typename T>
T Get(std::string_view data, std::size_t offset) {
  T value{};
  if (offset + sizeof(T) <= data.size()) std::memcpy(&value, data.data() + offset, sizeof(T));
  return value;
}

// An x86-64 ELF64 whose headers all lie inside the data (a complete file).
bool IsWholeElf64(std::string_view elf) {
  if (elf.size() < 64 ||
      elf.substr(0, 4) !=
          "\x7f"
          "ELF" ||
      elf[4] != 2 || Get<std::uint16_t>(elf, 0x12) != 62) {
    return false;
  }
  const auto phoff = Get<std::uint64_t>(elf, 0x20), shoff = Get<std::uint64_t>(elf, 0x28);
  const auto phentsize = Get<std::uint16_t>(elf, 0x36), phnum = Get<std::uint16_t>(elf, 0x38);
  const auto shentsize = Get<std::uint16_t>(elf, 0x3a), shnum = Get<std::uint16_t>(elf, 0x3c);
  return phoff + std::uint64_t{phentsize} * phnum <= elf.size() &&
         shoff + std::uint64_t{shentsize} * shnum <= elf.size();
}

// Reads a newc cpio (any compression) and writes it again into `out`,
// leaving out the entries `skip` names.
void CopyArchive(archive* out, const fs::path& from,
                 const std::function<bool(const std::string&)>& skip, const std::string& what) {
  ArchivePtr in(archive_read_new(), archive_read_free);
  archive_read_support_filter_all(in.get());
  archive_read_support_format_cpio(in.get());
  if (archive_read_open_filename(in.get(), from.c_str(), 1 << 16) != ARCHIVE_OK) {
    Fail(ErrorCode::kFailedPrecondition, "{}: cannot read ephemera's initrd {}: {}", what,
         from.string(), archive_error_string(in.get()));
  }
  archive_entry* entry = nullptr;
  int r;
  while ((r = archive_read_next_header(in.get(), &entry)) == ARCHIVE_OK) {
    std::string name = archive_entry_pathname(entry);
    if (name.starts_with("./")) name.erase(0, 2);
    if (name.empty() || name == "." || skip(name)) continue;
    archive_entry_set_pathname(entry, name.c_str());
    if (archive_write_header(out, entry) != ARCHIVE_OK) {
      Fail(ErrorCode::kInternal, "{}: cannot write the initrd: {}", what,
           archive_error_string(out));
    }
    const void* block = nullptr;
    size_t size = 0;
    la_int64_t offset = 0;
    while ((r = archive_read_data_block(in.get(), &block, &size, &offset)) == ARCHIVE_OK) {
      if (archive_write_data(out, block, size) < 0) {
        Fail(ErrorCode::kInternal, "{}: cannot write the initrd: {}", what,
             archive_error_string(out));
      }
    }
    if (r != ARCHIVE_EOF) break;
  }
  if (r != ARCHIVE_EOF) {
    Fail(ErrorCode::kFailedPrecondition, "{}: ephemera's initrd {} is damaged: {}", what,
         from.string(), archive_error_string(in.get()));
  }
}

void AddFile(archive* out, const std::string& name, std::string_view content,
             const std::string& what) {
  std::unique_ptr<archive_entry, void (*)(archive_entry*)> entry(archive_entry_new(),
                                                                 archive_entry_free);
  archive_entry_set_pathname(entry.get(), name.c_str());
  archive_entry_set_filetype(entry.get(), AE_IFREG);
  archive_entry_set_perm(entry.get(), 0644);
  archive_entry_set_size(entry.get(), static_cast<la_int64_t>(content.size()));
  if (archive_write_header(out, entry.get()) != ARCHIVE_OK ||
      archive_write_data(out, content.data(), content.size()) < 0) {
    Fail(ErrorCode::kInternal, "{}: cannot write {} to the initrd: {}", what, name,
         archive_error_string(out));
  }
}

// "kernel/fs/ext4/ext4.ko.xz" -> "ext4"; as /sys/module names it.
std::string ModuleName(const std::string& path) {
  std::string name = path.substr(path.rfind('/') + 1);
  name = name.substr(0, name.find(".ko"));
  std::replace(name.begin(), name.end(), '-', '_');
  return name;
}

}  // namespace

std::optional<TreeKernel> FindTreeKernel(const fs::path& root) {
  UniqueFd dir(::open(root.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!dir) FailErrno("cannot open " + root.string(), errno);
  std::vector<TreeKernel> found;
  for (const std::string& name : ListInRoot(dir.get(), "boot")) {
    if (name.starts_with("vmlinuz-") && name.size() > 8 && !name.ends_with(".old")) {
      found.push_back({name.substr(8), "boot/" + name});
    }
  }
  for (const char* modules : {"lib/modules", "usr/lib/modules"}) {
    for (const std::string& version : ListInRoot(dir.get(), modules)) {
      const std::string path = std::string(modules) + "/" + version + "/vmlinuz";
      if (ExistsInTree(dir.get(), path)) found.push_back({version, path});
    }
  }
  if (found.empty()) return std::nullopt;
  return *std::max_element(
      found.begin(), found.end(),
      [](const TreeKernel& a, const TreeKernel& b) { return VersionLess(a.version, b.version); });
}

bool HasPvhEntry(std::string_view elf) {
  if (!IsWholeElf64(elf)) return false;
  const auto phoff = Get<std::uint64_t>(elf, 0x20);
  const auto phentsize = Get<std::uint16_t>(elf, 0x36), phnum = Get<std::uint16_t>(elf, 0x38);
  for (std::uint16_t i = 0; i < phnum; ++i) {
    const std::uint64_t ph = phoff + std::uint64_t{phentsize} * i;
    if (Get<std::uint32_t>(elf, ph) != 4) continue;  // PT_NOTE
    std::uint64_t at = Get<std::uint64_t>(elf, ph + 8);
    const std::uint64_t end = at + Get<std::uint64_t>(elf, ph + 32);
    if (end > elf.size() || end < at) continue;
    while (at + 12 <= end) {
      const auto namesz = Get<std::uint32_t>(elf, at), descsz = Get<std::uint32_t>(elf, at + 4);
      const auto type = Get<std::uint32_t>(elf, at + 8);
      const std::uint64_t name_at = at + 12;
      if (namesz == 4 && type == 18 && name_at + 4 <= end &&
          elf.substr(name_at, 4) == std::string_view("Xen\0", 4)) {
        return true;
      }
      at = name_at + ((std::uint64_t{namesz} + 3) & ~3ULL) + ((std::uint64_t{descsz} + 3) & ~3ULL);
    }
  }
  return false;
}

std::string UnpackBzImage(std::string_view bzimage, const std::string& what) {
  // The boot protocol's setup header (2.08 and later) says where the
  // compressed payload is.
  if (bzimage.size() < 0x250 || bzimage.substr(0x202, 4) != "HdrS" ||
      Get<std::uint16_t>(bzimage, 0x206) < 0x0208) {
    Fail(ErrorCode::kFailedPrecondition, "{}: not a bzImage (boot protocol 2.08 or later)", what);
  }
  std::uint64_t setup_sects = static_cast<std::uint8_t>(bzimage[0x1f1]);
  if (setup_sects == 0) setup_sects = 4;
  const std::uint64_t start = (setup_sects + 1) * 512 + Get<std::uint32_t>(bzimage, 0x248);
  const std::uint64_t length = Get<std::uint32_t>(bzimage, 0x24c);
  if (length == 0 || start + length > bzimage.size()) {
    Fail(ErrorCode::kFailedPrecondition, "{}: the bzImage's payload lies outside the file", what);
  }
  // The payload ends with the kernel's size (gzip's own trailer; 4 bytes
  // appended to the other compressors' streams, which a decompressor would
  // take for the start of another stream).
  const std::string_view payload = bzimage.substr(start, length);
  const std::uint64_t size = length >= 4 ? Get<std::uint32_t>(payload, length - 4) : 0;
  std::string elf;
  std::string failure = "it is empty";
  for (std::string_view stream :
       {payload.substr(0, length - std::min<std::uint64_t>(length, 4)), payload}) {
    try {
      elf = Decompress(stream, kMaxVmlinux, what);
    } catch (const Error& e) {
      failure = e.what();
      continue;
    }
    if (elf.size() == size) break;
    failure = fmt::format("{}: the bzImage's payload decompresses to {} bytes where it says {}",
                          what, elf.size(), size);
  }
  if (elf.size() != size) Fail(ErrorCode::kFailedPrecondition, "{}", failure);
  if (!IsWholeElf64(elf)) {
    Fail(ErrorCode::kFailedPrecondition,
         "{}: the bzImage's payload is not a whole x86-64 ELF kernel once decompressed", what);
  }
  if (!HasPvhEntry(elf)) {
    Fail(ErrorCode::kFailedPrecondition,
         "{}: the kernel has no PVH entry point (CONFIG_PVH): QEMU cannot boot it directly", what);
  }
  return elf;
}

std::vector<std::string> ModuleClosure(const std::string& modules_dep,
                                       const std::string& modules_builtin,
                                       const std::vector<std::string>& wanted,
                                       const std::string& what) {
  std::map<std::string, std::pair<std::string, std::vector<std::string>>> modules;
  std::istringstream lines(modules_dep);
  for (std::string line; std::getline(lines, line);) {
    const auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    const std::string path = line.substr(0, colon);
    std::vector<std::string> deps;
    std::istringstream rest(line.substr(colon + 1));
    for (std::string dep; rest >> dep;) deps.push_back(dep);
    modules[ModuleName(path)] = {path, deps};
  }
  std::set<std::string> builtin;
  std::istringstream builtin_lines(modules_builtin);
  for (std::string line; std::getline(builtin_lines, line);) {
    if (!line.empty()) builtin.insert(ModuleName(line));
  }
  std::vector<std::string> order;
  std::set<std::string> placed, visiting;
  std::function<void(const std::string&)> place = [&](const std::string& name) {
    if (placed.count(name) || builtin.count(name)) return;
    auto it = modules.find(name);
    if (it == modules.end()) {
      Fail(ErrorCode::kFailedPrecondition,
           "{}: the kernel has no module {} (neither built in nor in modules.dep)", what, name);
    }
    if (!visiting.insert(name).second) {
      Fail(ErrorCode::kFailedPrecondition, "{}: modules.dep has a cycle through {}", what, name);
    }
    for (const std::string& dep : it->second.second) place(ModuleName(dep));
    placed.insert(name);
    order.push_back(it->second.first);
  };
  for (const std::string& name : wanted) place(name);
  return order;
}

void ExtractTreeKernel(const fs::path& root, const TreeKernel& kernel, const fs::path& base_initrd,
                       const fs::path& out, const std::string& what) {
  UniqueFd dir(::open(root.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!dir) FailErrno("cannot open " + root.string(), errno);
  const std::string kernel_what = what + ": /" + kernel.path;
  const std::string vmlinux =
      UnpackBzImage(ReadInRoot(dir.get(), kernel.path, kMaxKernelFile, what), kernel_what);

  std::string moddir = "lib/modules/" + kernel.version;
  if (!ExistsInTree(dir.get(), moddir + "/modules.dep")) {
    Fail(ErrorCode::kFailedPrecondition,
         "{}: /{}/modules.dep is missing (depmod never ran for kernel {})", what, moddir,
         kernel.version);
  }
  const std::string builtin =
      ExistsInTree(dir.get(), moddir + "/modules.builtin")
          ? ReadInRoot(dir.get(), moddir + "/modules.builtin", kMaxModuleIndex, what)
          : "";
  const std::vector<std::string> modules =
      ModuleClosure(ReadInRoot(dir.get(), moddir + "/modules.dep", kMaxModuleIndex, what), builtin,
                    kInitrdModules, what + ": kernel " + kernel.version);

  WriteFileAtomic(out / "vmlinux", vmlinux, 0644);
  ArchivePtr initrd(archive_write_new(), archive_write_free);
  archive_write_set_format_cpio_newc(initrd.get());
  archive_write_add_filter_gzip(initrd.get());
  if (archive_write_open_filename(initrd.get(), (out / "initrd.img").c_str()) != ARCHIVE_OK) {
    Fail(ErrorCode::kInternal, "{}: cannot write {}: {}", what, (out / "initrd.img").string(),
         archive_error_string(initrd.get()));
  }
  // The base's modules are for the default image's kernel.
  CopyArchive(
      initrd.get(), base_initrd,
      [](const std::string& name) { return name.starts_with("lib/modules/"); }, what);
  std::string load_order;
  for (const std::string& path : modules) {
    const std::string file = path.substr(path.rfind('/') + 1);
    std::string content = ReadInRoot(dir.get(), moddir + "/" + path, kMaxModule, what);
    if (!file.ends_with(".ko")) {
      // .ko.xz, .ko.zst, .ko.gz: busybox's insmod in the initrd takes them plain.
      content = Decompress(content, kMaxModule, what + ": /" + moddir + "/" + path);
    }
    const std::string name = file.substr(0, file.find(".ko")) + ".ko";
    AddFile(initrd.get(), "lib/modules/" + name, content, what);
    load_order += name + "\n";
  }
  AddFile(initrd.get(), "lib/modules/load.order", load_order, what);
  if (archive_write_close(initrd.get()) != ARCHIVE_OK) {
    Fail(ErrorCode::kInternal, "{}: cannot write {}: {}", what, (out / "initrd.img").string(),
         archive_error_string(initrd.get()));
  }
}

}  // namespace ephemera::oci
