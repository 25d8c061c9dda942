// The daemon's configuration: YAML on disk, every key optional with the
// default given here, unknown keys rejected, errors naming the key.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

namespace ephemera {

enum class Accel { kAuto, kKvm, kTcg };
enum class MachineType { kMicrovm, kQ35 };

std::string_view AccelName(Accel accel);
std::string_view MachineTypeName(MachineType machine);

struct LogConfig {
  std::string level = "info";   // trace|debug|info|warn|error
  std::string format = "text";  // text|json
};

struct VmConfig {
  std::string driver = "qemu";
  std::string qemu_binary = "qemu-system-x86_64";
  std::string qemu_img_binary = "qemu-img";
  MachineType machine = MachineType::kMicrovm;
  Accel accel = Accel::kAuto;
  // Bounds QEMU's TCG translation cache (1 GiB by default); see docs/benchmarks.md.
  unsigned tcg_tb_size_mib = 64;
  unsigned powerdown_timeout_ms = 5000;
};

struct DefaultsConfig {
  std::string image = "default";
  unsigned memory_mib = 256;
  unsigned vcpus = 1;
};

struct Config {
  std::filesystem::path state_dir = "/var/lib/ephemera";
  std::filesystem::path image_dir = "/var/cache/ephemera/images";
  LogConfig log;
  VmConfig vm;
  DefaultsConfig defaults;
};

// Parses YAML text; throws kInvalidArgument naming the offending key.
Config ParseConfig(std::string_view yaml_text);
// Reads and parses a file; a missing file is kNotFound.
Config LoadConfigFile(const std::filesystem::path& path);

}  // namespace ephemera
