// Imports a pair of OCI images (the kernel-testing layout: a kernel image
// holding /boot/vmlinux and /boot/initrd, and a rootfs image whose whole
// tree becomes the root disk) as one catalog image:
//   IMAGE_DIR/NAME-<hash12>/{vmlinux,initrd.img,rootfs.ext4,manifest.json}
// with IMAGE_DIR/NAME pointing at it. The folder is named by the two
// images' digests: a moved tag gives a new folder, the same content finds
// the one there is. Concurrent imports of one name do the work once.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>

#include "image/oci/rootfs_image.h"
#include "image/oci/source.h"

namespace ephemera::oci {

struct ImportRequest {
  std::string name;  // the catalog name (IsValidImageName)
  ImageReference kernel;
  ImageReference rootfs;
  std::uint64_t headroom_mib = 1024;  // free space in the root disk beyond the content
  LayerLimits limits;
};

struct ImportResult {
  std::filesystem::path dir;
  Digest kernel_digest, rootfs_digest;
  RootfsBuild rootfs;
  bool cached = false;  // the same content was imported before
};

// kInvalidArgument / kFailedPrecondition / kNotFound naming the reference
// and the cause; nothing partial is left in IMAGE_DIR.
ImportResult ImportImage(const std::filesystem::path& image_dir, const ImportRequest& request);

}  // namespace ephemera::oci
