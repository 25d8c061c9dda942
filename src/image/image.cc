#include "image/image.h"

#include "core/error.h"

namespace ephemera {

std::string_view DiskFormatName(DiskFormat format) {
  return format == DiskFormat::kRaw ? "raw" : "qcow2";
}

std::string_view ImageLayoutName(ImageLayout layout) {
  return layout == ImageLayout::kManifest ? "manifest" : "anweddol-mirror";
}

const std::string& Image::PrimarySha256() const {
  if (iso) return iso->sha256;
  return rootfs->sha256;
}

std::vector<const ImageFile*> Image::BootFiles() const {
  std::vector<const ImageFile*> files;
  if (format == ImageFormat::kKernel) {
    if (!kernel || !initrd || !rootfs) {
      Fail(ErrorCode::kInvalidArgument, "image '{}' lacks a kernel, initrd or rootfs", name);
    }
    files = {&*kernel, &*initrd, &*rootfs};
  } else if (iso) {
    files = {&*iso};
  } else {
    Fail(ErrorCode::kNotFound, "image '{}' has no ISO file", name);
  }
  for (const ImageFile* file : files) {
    std::error_code ec;
    if (!std::filesystem::is_regular_file(file->path, ec)) {
      Fail(ErrorCode::kNotFound, "image '{}' file {} is missing", name, file->path.string());
    }
  }
  return files;
}

bool IsValidImageName(std::string_view name) {
  if (name.empty() || name.size() > 64) return false;
  auto lower_alnum = [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); };
  if (!lower_alnum(name[0])) return false;
  for (char c : name) {
    if (!lower_alnum(c) && c != '.' && c != '_' && c != '-') return false;
  }
  return true;
}

}  // namespace ephemera
