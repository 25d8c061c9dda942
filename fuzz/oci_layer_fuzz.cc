// The layer reader on arbitrary archives: each input is applied to a fresh
// root; it either succeeds or throws ephemera::Error, and never writes
// outside that root (checked: a sentinel folder beside it stays empty).
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "image/oci/layer_reader.h"

namespace fs = std::filesystem;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const fs::path base = [] {
    std::string pattern = (fs::temp_directory_path() / "ephemera-layer-fuzz-XXXXXX").string();
    if (!::mkdtemp(pattern.data())) std::abort();
    return fs::path(pattern);
  }();
  const fs::path root = base / "root", sentinel = base / "sentinel", layer = base / "layer";
  fs::remove_all(root);
  fs::create_directories(root);
  fs::create_directories(sentinel);
  {
    std::ofstream out(layer, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  }
  try {
    ephemera::oci::RootfsWriter(root, {1 << 20, 1000}).Apply(layer, "fuzzed layer");
  } catch (const ephemera::Error&) {
    // A clear error is the right answer to a bad layer.
  }
  if (!fs::is_empty(sentinel)) std::abort();
  return 0;
}
