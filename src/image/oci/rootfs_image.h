// Turns an image's layers into the ext4 root disk a VM boots: the layers
// applied in order into a scratch tree, then `mke2fs -d` copies the tree
// into a sparse ext4 file without mounting anything, sized to the content
// plus headroom. The scratch tree is removed on every path out.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>

#include "image/oci/layer_reader.h"
#include "image/oci/source.h"

namespace ephemera::oci {

struct RootfsBuild {
  std::uint64_t content_bytes = 0;  // file content in the tree
  std::uint64_t image_bytes = 0;    // the ext4 file's apparent size
};

// `scratch` must not exist (it is made and removed); `output` is written
// atomically. `what` names the image in errors.
// `check` sees the tree before the disk is made (and may throw to refuse it,
// or add to it).
RootfsBuild BuildRootfsExt4(const LocalImage& image, const std::filesystem::path& scratch,
                            const std::filesystem::path& output, std::uint64_t headroom_mib,
                            const std::string& what, LayerLimits limits = {},
                            const std::function<void(const std::filesystem::path&)>& check = {});

}  // namespace ephemera::oci
