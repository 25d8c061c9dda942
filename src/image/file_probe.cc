#include "image/file_probe.h"

#include <fcntl.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>

#include "core/error.h"
#include "core/unique_fd.h"

namespace ephemera {

std::string_view FileKindName(FileKind kind) {
  switch (kind) {
    case FileKind::kElf:
      return "ELF kernel";
    case FileKind::kBzImage:
      return "bzImage kernel";
    case FileKind::kQcow2:
      return "qcow2 disk";
    case FileKind::kExt4:
      return "ext2/3/4 filesystem";
    case FileKind::kIso9660:
      return "ISO 9660 image";
    case FileKind::kUnknown:
      break;
  }
  return "unrecognised data";
}

FileKind ProbeFileKind(const std::filesystem::path& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) FailErrno(fmt::format("cannot open {}", path.string()), errno, ErrorCode::kNotFound);
  // Enough to cover the ISO 9660 primary volume descriptor at 0x8001.
  std::array<unsigned char, 0x8010> head{};
  ssize_t n = ::pread(fd.get(), head.data(), head.size(), 0);
  if (n < 0) FailErrno(fmt::format("cannot read {}", path.string()), errno);
  auto has = [&](std::size_t offset, const void* magic, std::size_t length) {
    return static_cast<std::size_t>(n) >= offset + length &&
           std::memcmp(head.data() + offset, magic, length) == 0;
  };
  if (has(0,
          "\x7f"
          "ELF",
          4))
    return FileKind::kElf;
  if (has(0, "QFI\xfb", 4)) return FileKind::kQcow2;
  if (has(0x202, "HdrS", 4)) return FileKind::kBzImage;
  if (has(0x438, "\x53\xef", 2)) return FileKind::kExt4;
  if (has(0x8001, "CD001", 5)) return FileKind::kIso9660;
  return FileKind::kUnknown;
}

}  // namespace ephemera
