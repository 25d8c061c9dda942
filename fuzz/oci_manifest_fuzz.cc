// The OCI manifest, index and docker-archive manifest parsers, which read
// what registries and image archives send: each returns a value or throws
// ephemera::Error, nothing else.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "core/error.h"
#include "image/oci/manifest.h"

namespace {

template <typename F>
void Expect(F parse) {
  try {
    parse();
  } catch (const ephemera::Error&) {
    // A clear error is the right answer to bad input.
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  namespace oci = ephemera::oci;
  std::string_view body(reinterpret_cast<const char*>(data), size);
  Expect([&] { oci::ClassifyManifest(body); });
  Expect([&] { oci::ParseImageManifest(body); });
  Expect([&] {
    oci::ImageIndex index = oci::ParseImageIndex(body);
    oci::SelectPlatform(index);
  });
  Expect([&] { oci::ParseDockerArchiveManifest(body); });
  return 0;
}
