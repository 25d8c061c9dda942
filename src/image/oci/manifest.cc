#include "image/oci/manifest.h"

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/text.h"

namespace ephemera::oci {

using nlohmann::json;

namespace {

constexpr std::uint64_t kMaxBlobSize = std::uint64_t{1} << 40;  // 1 TiB: beyond is nonsense

json ParseBounded(std::string_view body, std::string_view what) {
  if (body.size() > kMaxManifestBytes) {
    Fail(ErrorCode::kInvalidArgument, "{} is {} bytes, over the {} allowed", what, body.size(),
         kMaxManifestBytes);
  }
  json parsed = json::parse(body, nullptr, false);
  if (parsed.is_discarded()) Fail(ErrorCode::kInvalidArgument, "{} is not valid JSON", what);
  return parsed;
}

const json& Member(const json& object, const char* key, std::string_view what) {
  if (!object.is_object()) Fail(ErrorCode::kInvalidArgument, "{} is not a JSON object", what);
  auto it = object.find(key);
  if (it == object.end()) Fail(ErrorCode::kInvalidArgument, "{} has no '{}'", what, key);
  return *it;
}

std::string String(const json& object, const char* key, std::string_view what) {
  const json& v = Member(object, key, what);
  if (!v.is_string()) Fail(ErrorCode::kInvalidArgument, "{}: '{}' must be a string", what, key);
  return v.get<std::string>();
}

std::string OptionalString(const json& object, const char* key, std::string_view what) {
  auto it = object.find(key);
  if (it == object.end()) return "";
  if (!it->is_string()) Fail(ErrorCode::kInvalidArgument, "{}: '{}' must be a string", what, key);
  return it->get<std::string>();
}

Descriptor ParseDescriptor(const json& j, const std::string& what) {
  Descriptor d;
  d.media_type = String(j, "mediaType", what);
  try {
    d.digest = Digest::Parse(String(j, "digest", what));
  } catch (const Error& e) {
    throw e.WithContext(what);
  }
  const json& size = Member(j, "size", what);
  if (!size.is_number_unsigned() || size.get<std::uint64_t>() > kMaxBlobSize) {
    Fail(ErrorCode::kInvalidArgument, "{}: 'size' must be a byte count", what);
  }
  d.size = size.get<std::uint64_t>();
  if (auto a = j.find("annotations"); a != j.end() && a->is_object()) {
    d.ref_name = OptionalString(*a, "org.opencontainers.image.ref.name", what);
  }
  if (auto p = j.find("platform"); p != j.end()) {
    std::string where = what + " platform";
    d.platform = Platform{String(*p, "os", where), String(*p, "architecture", where),
                          OptionalString(*p, "variant", where)};
  }
  return d;
}

LayerCompression CompressionOf(const Descriptor& d, const std::string& what) {
  const std::string& t = d.media_type;
  if (t == "application/vnd.oci.image.layer.v1.tar") return LayerCompression::kNone;
  if (t == "application/vnd.oci.image.layer.v1.tar+gzip" ||
      t == "application/vnd.docker.image.rootfs.diff.tar.gzip") {
    return LayerCompression::kGzip;
  }
  if (t == "application/vnd.oci.image.layer.v1.tar+zstd") return LayerCompression::kZstd;
  if (t.find("nondistributable") != std::string::npos || t.find("foreign") != std::string::npos) {
    Fail(ErrorCode::kInvalidArgument, "{} is a foreign layer ({}), which ephemera does not fetch",
         what, t);
  }
  Fail(ErrorCode::kInvalidArgument, "{} has media type '{}', not a tar layer", what,
       EscapeForLog(t, 100));
}

}  // namespace

ManifestKind ClassifyManifest(std::string_view body, std::string_view content_type) {
  std::string type(content_type.substr(0, content_type.find(';')));
  if (type.empty() || type == "application/json") {
    json parsed = ParseBounded(body, "the manifest");
    if (!parsed.is_object()) Fail(ErrorCode::kInvalidArgument, "the manifest is not an object");
    type = OptionalString(parsed, "mediaType", "the manifest");
    // An OCI document may leave mediaType out: its shape says which it is.
    if (type.empty())
      return parsed.contains("manifests") ? ManifestKind::kIndex : ManifestKind::kManifest;
  }
  if (type == kOciManifest || type == kDockerManifest) return ManifestKind::kManifest;
  if (type == kOciIndex || type == kDockerManifestList) return ManifestKind::kIndex;
  Fail(ErrorCode::kInvalidArgument, "manifest media type '{}' is not supported",
       EscapeForLog(type, 100));
}

ImageManifest ParseImageManifest(std::string_view body) {
  json j = ParseBounded(body, "the image manifest");
  const std::string what = "the image manifest";
  if (auto v = j.find("schemaVersion"); v == j.end() || *v != 2) {
    Fail(ErrorCode::kInvalidArgument, "{}: schemaVersion must be 2", what);
  }
  ImageManifest m;
  m.config = ParseDescriptor(Member(j, "config", what), "the image config descriptor");
  const json& layers = Member(j, "layers", what);
  if (!layers.is_array()) Fail(ErrorCode::kInvalidArgument, "{}: 'layers' must be an array", what);
  if (layers.size() > kMaxLayers) {
    Fail(ErrorCode::kInvalidArgument, "{} has {} layers, over the {} allowed", what, layers.size(),
         kMaxLayers);
  }
  for (std::size_t i = 0; i < layers.size(); ++i) {
    const std::string name = fmt::format("layer {}", i + 1);
    Layer layer{ParseDescriptor(layers[i], name), {}};
    layer.compression = CompressionOf(layer.descriptor, name);
    m.layers.push_back(std::move(layer));
  }
  return m;
}

ImageIndex ParseImageIndex(std::string_view body) {
  json j = ParseBounded(body, "the image index");
  const json& manifests = Member(j, "manifests", "the image index");
  if (!manifests.is_array() || manifests.size() > kMaxLayers) {
    Fail(ErrorCode::kInvalidArgument, "the image index: 'manifests' must be an array of up to {}",
         kMaxLayers);
  }
  ImageIndex index;
  for (std::size_t i = 0; i < manifests.size(); ++i) {
    index.manifests.push_back(ParseDescriptor(manifests[i], fmt::format("index entry {}", i + 1)));
  }
  return index;
}

const Descriptor& SelectPlatform(const ImageIndex& index, std::string_view os,
                                 std::string_view architecture) {
  std::string seen;
  for (const Descriptor& d : index.manifests) {
    if (!d.platform) continue;
    if (d.platform->os == os && d.platform->architecture == architecture) return d;
    seen += (seen.empty() ? "" : ", ") + d.platform->os + "/" + d.platform->architecture;
  }
  Fail(ErrorCode::kNotFound, "the image has no {}/{} manifest (it has: {})", os, architecture,
       seen.empty() ? "none with a platform" : EscapeForLog(seen, 300));
}

std::vector<DockerArchiveImage> ParseDockerArchiveManifest(std::string_view body) {
  json j = ParseBounded(body, "the archive's manifest.json");
  if (!j.is_array() || j.empty()) {
    Fail(ErrorCode::kInvalidArgument, "the archive's manifest.json must be a non-empty array");
  }
  std::vector<DockerArchiveImage> images;
  for (std::size_t i = 0; i < j.size(); ++i) {
    const std::string what = fmt::format("manifest.json entry {}", i + 1);
    DockerArchiveImage image;
    image.config = String(j[i], "Config", what);
    if (auto tags = j[i].find("RepoTags"); tags != j[i].end() && !tags->is_null()) {
      if (!tags->is_array())
        Fail(ErrorCode::kInvalidArgument, "{}: 'RepoTags' must be a list", what);
      for (const auto& t : *tags) {
        if (!t.is_string()) Fail(ErrorCode::kInvalidArgument, "{}: a tag is not a string", what);
        image.repo_tags.push_back(t.get<std::string>());
      }
    }
    const json& layers = Member(j[i], "Layers", what);
    if (!layers.is_array() || layers.size() > kMaxLayers) {
      Fail(ErrorCode::kInvalidArgument, "{}: 'Layers' must be a list of up to {}", what,
           kMaxLayers);
    }
    for (const auto& l : layers) {
      if (!l.is_string()) Fail(ErrorCode::kInvalidArgument, "{}: a layer is not a string", what);
      image.layers.push_back(l.get<std::string>());
    }
    images.push_back(std::move(image));
  }
  return images;
}

}  // namespace ephemera::oci
