// OCI image manifests and indexes (and Docker's schema 2 equivalents, which
// registries and `docker save` still write), parsed strictly: bounded sizes,
// known media types, digests checked for form. What the conversion needs
// and no more.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "image/oci/digest.h"

namespace ephemera::oci {

inline constexpr std::size_t kMaxManifestBytes = 4 << 20;
inline constexpr std::size_t kMaxLayers = 1000;

inline constexpr std::string_view kOciManifest = "application/vnd.oci.image.manifest.v1+json";
inline constexpr std::string_view kOciIndex = "application/vnd.oci.image.index.v1+json";
inline constexpr std::string_view kDockerManifest =
    "application/vnd.docker.distribution.manifest.v2+json";
inline constexpr std::string_view kDockerManifestList =
    "application/vnd.docker.distribution.manifest.list.v2+json";

struct Platform {
  std::string os;
  std::string architecture;
  std::string variant;
};

struct Descriptor {
  std::string media_type;
  Digest digest;
  std::uint64_t size = 0;
  std::optional<Platform> platform;  // in an index
  std::string ref_name;  // in an index: the org.opencontainers.image.ref.name annotation (a tag)
};

enum class LayerCompression { kNone, kGzip, kZstd };

struct Layer {
  Descriptor descriptor;
  LayerCompression compression = LayerCompression::kNone;
};

struct ImageManifest {
  Descriptor config;
  std::vector<Layer> layers;
};

struct ImageIndex {
  std::vector<Descriptor> manifests;
};

enum class ManifestKind { kManifest, kIndex };

// Which of the two `body` is, from its mediaType (or, for a registry's
// answer, its Content-Type). kInvalidArgument for anything else.
ManifestKind ClassifyManifest(std::string_view body, std::string_view content_type = "");

// kInvalidArgument naming the field for anything malformed or unsupported
// (an unknown layer type, a foreign layer, more than kMaxLayers).
ImageManifest ParseImageManifest(std::string_view body);
ImageIndex ParseImageIndex(std::string_view body);

// The manifest for os/architecture; kNotFound naming the platforms there are.
const Descriptor& SelectPlatform(const ImageIndex& index, std::string_view os = "linux",
                                 std::string_view architecture = "amd64");

// `docker save`'s manifest.json: one entry per image, its config and layer
// files by their paths inside the archive.
struct DockerArchiveImage {
  std::string config;
  std::vector<std::string> repo_tags;
  std::vector<std::string> layers;
};
std::vector<DockerArchiveImage> ParseDockerArchiveManifest(std::string_view body);

}  // namespace ephemera::oci
