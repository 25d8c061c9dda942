// The image catalog: image directories under one cache dir, each with a
// manifest.json. Digests are computed once per file version and remembered
// (in memory and in a sidecar file), never per sandbox.
#pragma once

#include <filesystem>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "image/image.h"

namespace ephemera {

class ImageCatalog {
 public:
  explicit ImageCatalog(std::filesystem::path image_dir);

  // Loads and validates the image `name` (image_dir/name/manifest.json).
  // kInvalidArgument for a bad name, kNotFound for a missing image or file,
  // kFailedPrecondition for a manifest or file that is wrong.
  Image Get(const std::string& name);

  // Names of the images present (entries with a manifest or an Anweddol
  // mirror's ISO, but not the folders names point at), sorted.
  std::vector<std::string> List() const;

  // Every image present, loaded and checked; a bad one carries its error.
  struct Entry {
    std::string name;
    std::optional<Image> image;
    std::string error;
  };
  std::vector<Entry> ListLoaded();

  // Removes the image `name`: its entry and, when the entry is a link
  // (images/default/build.sh and imports make one), the folder it points
  // at. kNotFound for an unknown name.
  void Remove(const std::string& name);
  // Folders that no name points at any more (older builds and imports),
  // except those `keep` says are still in use. Returns what was removed.
  std::vector<std::string> Prune(const std::function<bool(const std::string& folder)>& keep);

  const std::filesystem::path& dir() const { return image_dir_; }

 private:
  ImageFile Describe(const std::filesystem::path& dir, const std::string& field,
                     const std::string& file_name);
  std::string CachedSha256(const std::filesystem::path& path, std::uint64_t size,
                           std::int64_t mtime_ns);
  Image LoadManifest(const std::string& name, const std::filesystem::path& dir);
  Image LoadAnweddolMirror(const std::string& name, const std::filesystem::path& dir);
  // Compares a file with a published MD5 (computed once per file version).
  void VerifyMd5(const ImageFile& file, const std::string& expected, const std::string& source);

  std::filesystem::path image_dir_;
  std::mutex mutex_;
  // (path, size, mtime) -> digest; a rewritten file gets a new key.
  std::map<std::tuple<std::string, std::uint64_t, std::int64_t>, std::string> digests_;
  std::map<std::tuple<std::string, std::uint64_t, std::int64_t>, std::string> md5s_;
};

}  // namespace ephemera
