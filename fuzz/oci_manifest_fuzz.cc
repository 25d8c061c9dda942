// The OCI manifest, index and docker-archive manifest parsers, which read
// what registries and image archives send: each returns a value or throws
// ephemera::Error, nothing else.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "core/error.h"
#include "expect_error.h"
#include "image/oci/manifest.h"

using ephemera::fuzz::ExpectValueOrError;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  namespace oci = ephemera::oci;
  std::string_view body(reinterpret_cast<const char*>(data), size);
  ExpectValueOrError([&] { oci::ClassifyManifest(body); });
  ExpectValueOrError([&] { oci::ParseImageManifest(body); });
  ExpectValueOrError([&] {
    oci::ImageIndex index = oci::ParseImageIndex(body);
    oci::SelectPlatform(index);
  });
  ExpectValueOrError([&] { oci::ParseDockerArchiveManifest(body); });
  return 0;
}
