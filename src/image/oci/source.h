// Where an image comes from, by reference, and reading the local kinds:
//   oci:DIR[:TAG]                an OCI image layout (index.json, blobs/sha256/)
//   docker-archive:FILE.tar      what `docker save` writes
//   docker://HOST/REPO[:TAG|@DIGEST]  a registry (the distribution API)
// Every blob is checked against its digest before it is used: an OCI
// layout's against its descriptor, a docker archive's layers against the
// config's diff_ids.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "image/oci/manifest.h"

namespace ephemera::oci {

struct ImageReference {
  enum class Transport { kOciLayout, kDockerArchive, kRegistry };
  Transport transport = Transport::kOciLayout;
  std::string path;  // oci: the layout folder; docker-archive: the tar file
  std::string tag;   // oci: the ref.name annotation to pick (empty: the only image)
  std::string registry, repository, reference;  // docker://: host, repo, tag or digest

  // kInvalidArgument naming what is wrong with `text`.
  static ImageReference Parse(std::string_view text);
  std::string str() const;
};

// A local image, its layers in order as files on disk, each verified.
struct LocalImage {
  std::string config;      // the image config JSON
  Digest manifest_digest;  // what the image is known by (the cache key)
  struct LayerFile {
    std::filesystem::path path;
    Digest digest;  // of the file as it is
  };
  std::vector<LayerFile> layers;
  // Registry pulls: the config's blob in the blob store (kept with the
  // layers, so that a re-pull of the same image fetches nothing).
  std::optional<Digest> config_blob;
};

// Reads an oci: or docker-archive: image. A docker archive is unpacked into
// `staging` (its members under names of ephemera's own, never the
// archive's); an OCI layout is read in place. kInvalidArgument or
// kFailedPrecondition naming the reference and the cause; kNotFound for a
// missing file or tag.
LocalImage ReadLocalImage(const ImageReference& ref, const std::filesystem::path& staging);

// The image config's os/architecture must be linux/amd64 (what ephemera
// boots). kInvalidArgument naming `what` and the platform it is for.
void CheckConfigPlatform(const std::string& config, const std::string& what);

// Checks a file against a descriptor (size and digest). kFailedPrecondition
// naming `what` when it does not match.
void VerifyBlob(const std::filesystem::path& file, const Descriptor& descriptor,
                const std::string& what);

}  // namespace ephemera::oci
