// Recognises image files by their headers, so a wrong or damaged file is
// reported before QEMU sees it.
#pragma once

#include <filesystem>
#include <string>

namespace ephemera {

enum class FileKind { kUnknown, kElf, kBzImage, kQcow2, kExt4, kIso9660 };

std::string_view FileKindName(FileKind kind);
FileKind ProbeFileKind(const std::filesystem::path& path);

}  // namespace ephemera
