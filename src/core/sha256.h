// SHA-256 of files, streamed (images are hundreds of MiB).
#pragma once

#include <filesystem>
#include <string>
#include <string_view>

namespace ephemera {

std::string Sha256File(const std::filesystem::path& path);  // lowercase hex
std::string Sha256Hex(std::string_view data);
// Only to check published md5sum.txt files (Anweddol's ISO mirror), never for trust on its own.
std::string Md5File(const std::filesystem::path& path);

}  // namespace ephemera
