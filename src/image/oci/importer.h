// Imports a pair of OCI images (the kernel-testing layout: a kernel image
// holding /boot/vmlinux and /boot/initrd, and a rootfs image whose whole
// tree becomes the root disk) as one catalog image:
//   IMAGE_DIR/NAME-<hash12>/{vmlinux,initrd.img,rootfs.ext4,manifest.json}
// with IMAGE_DIR/NAME pointing at it. The folder is named by the two
// images' digests: a moved tag gives a new folder, the same content finds
// the one there is. Concurrent imports of one name do the work once.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "image/oci/registry.h"
#include "image/oci/rootfs_image.h"
#include "image/oci/source.h"

namespace ephemera::oci {

struct ImportRequest {
  std::string name;  // the catalog name (IsValidImageName)
  // None: the rootfs carries its own kernel (tree_kernel.h), booted with
  // ephemera's initrd from `base_initrd` (the default image's).
  std::optional<ImageReference> kernel;
  ImageReference rootfs;
  std::filesystem::path base_initrd;
  std::uint64_t headroom_mib = 1024;  // free space in the root disk beyond the content
  LayerLimits limits;
  RegistryOptions registry;  // for docker:// references
  PullProgressFn progress;   // registry transfers, as they go
};

struct ImportResult {
  std::filesystem::path dir;
  std::optional<Digest> kernel_digest;  // none: the rootfs's own kernel
  Digest rootfs_digest;
  std::string kernel_version;  // the rootfs's own kernel
  RootfsBuild rootfs;
  bool cached = false;  // the same content was imported before
};

// kInvalidArgument / kFailedPrecondition / kNotFound naming the reference
// and the cause; nothing partial is left in IMAGE_DIR.
ImportResult ImportImage(const std::filesystem::path& image_dir, const ImportRequest& request);

// Where an image folder's registry blobs are kept.
std::filesystem::path BlobStoreOf(const std::filesystem::path& image_dir);

// Removes blobs no image folder names (manifest.json "blobs") and older
// than `min_age` (younger ones may belong to a pull under way). Returns the
// digests removed.
std::vector<std::string> PruneBlobStore(const std::filesystem::path& image_dir,
                                        std::chrono::seconds min_age);

}  // namespace ephemera::oci
