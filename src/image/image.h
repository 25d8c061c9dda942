// An image: what a sandbox boots from. Either a kernel + initrd + rootfs
// (direct kernel boot) or an ISO (firmware boot, as Anweddol's live ISOs).
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ephemera {

enum class ImageFormat { kKernel, kIso };
enum class DiskFormat { kRaw, kQcow2 };

std::string_view DiskFormatName(DiskFormat format);

struct ImageFile {
  std::filesystem::path path;  // absolute
  std::uint64_t size = 0;
  std::int64_t mtime_ns = 0;  // with path and size, names this version of the file
  std::string sha256;         // lowercase hex, computed once per file version
};

// How an image directory is laid out: a manifest.json of ephemera's, or
// Anweddol's ISO mirror (anweddol_container.iso, sha256sum.txt, md5sum.txt,
// version.txt).
enum class ImageLayout { kManifest, kAnweddolMirror };
std::string_view ImageLayoutName(ImageLayout layout);

// Where an imported image came from (its manifest.json says; absent for
// images ephemera built).
struct ImageProvenance {
  std::string kernel_reference, rootfs_reference;
  std::string kernel_digest, rootfs_digest;  // the image manifests' sha256:...
  std::string guest_contract;                // "added" (at import) or "present" (the image's own)
  std::int64_t imported_at = 0;              // Unix seconds
  std::size_t blobs = 0;                     // registry blobs it was made from
};

struct Image {
  std::string name;
  int version = 0;
  std::string version_label;  // as shown: the manifest's number, or version.txt's text
  ImageLayout layout = ImageLayout::kManifest;
  // False for guests that read no key from fw_cfg (Anweddol's ISOs): the
  // endpoint then logs in with the configured endpoint_password only.
  bool takes_endpoint_key = true;
  ImageFormat format = ImageFormat::kKernel;
  std::filesystem::path dir;  // resolved (symlinks followed)
  std::string cmdline;        // kernel command line (kernel format)
  // The TCG translation cache this guest's code needs not to thrash (a
  // distribution's systemd boot runs far more code than the default
  // image); 0: whatever vm.tcg_tb_size_mib says.
  unsigned tcg_tb_size_mib = 0;
  // The guest agent (docs/guest-agent.md) runs inside: provisioning takes
  // one message on its virtio channel instead of SSH logins.
  bool has_agent = false;
  // Its protocol version: 2 takes a new token with the identity, so that
  // clones restored from one snapshot are told apart (snapshots need it).
  unsigned agent_protocol = 0;
  std::optional<ImageFile> kernel;
  std::optional<ImageFile> kernel_compressed;  // bzImage, for firmware-style machines
  std::optional<ImageFile> initrd;
  std::optional<ImageFile> rootfs;
  DiskFormat rootfs_format = DiskFormat::kRaw;
  std::optional<ImageFile> iso;
  std::optional<ImageProvenance> provenance;

  // The digest Anweddol clients see as container_iso_sha256: the ISO's, or
  // for kernel images the rootfs's.
  const std::string& PrimarySha256() const;
  // The files a VM boots from (kernel, initrd, rootfs; or the ISO), each
  // still there. kInvalidArgument for an incomplete image, kNotFound for a
  // file gone since the catalog read it.
  std::vector<const ImageFile*> BootFiles() const;
};

// The virtio-serial port name the agent listens on.
inline constexpr std::string_view kAgentChannelName = "org.ephemera.agent.0";

// True for names safe to use as a path component: [a-z0-9][a-z0-9._-]{0,63}.
bool IsValidImageName(std::string_view name);

}  // namespace ephemera
