#include "wirt/request.h"

#include <nlohmann/json.hpp>
#include <sstream>

#include "core/error.h"
#include "core/sandbox.h"
#include "core/text.h"
#include "guest/credentials.h"

namespace ephemera::wirt {

namespace {

// The words of one line (split on spaces and tabs); kInvalidArgument if
// the content has a second line or a byte that is not printable.
std::vector<std::string> ParamWords(std::string_view content) {
  if (content.size() > kMaxRequestBytes) {
    Fail(ErrorCode::kInvalidArgument, "parameters: {} bytes (at most {})", content.size(),
         kMaxRequestBytes);
  }
  if (!content.empty() && content.back() == '\n') content.remove_suffix(1);
  if (!content.empty() && content.back() == '\r') content.remove_suffix(1);
  std::vector<std::string> words;
  std::string word;
  for (char c : content) {
    if (c == '\n') Fail(ErrorCode::kInvalidArgument, "parameters: more than one line");
    if (c == ' ' || c == '\t') {
      if (!word.empty()) words.push_back(std::move(word));
      word.clear();
      continue;
    }
    auto u = static_cast<unsigned char>(c);
    if (u < 0x21 || u > 0x7e) {
      Fail(ErrorCode::kInvalidArgument, "parameters: byte 0x{:02x} is not printable text", u);
    }
    word += c;
  }
  if (!word.empty()) words.push_back(std::move(word));
  if (words.size() == 1 && words[0] == "EMPTY") words.clear();
  return words;
}

template <typename T>
T NumberField(const nlohmann::json& value, std::string_view key, std::int64_t min,
              std::int64_t max) {
  if (!value.is_number_integer())
    Fail(ErrorCode::kInvalidArgument, "config: '{}' must be an integer", key);
  auto n = value.get<std::int64_t>();
  if (n < min || n > max) {
    Fail(ErrorCode::kInvalidArgument, "config: '{}' must be from {} to {}, not {}", key, min, max,
         n);
  }
  return static_cast<T>(n);
}

}  // namespace

bool IsValidVmName(std::string_view name) { return IsValidSandboxName(name); }

void CheckVmName(std::string_view name) { CheckSandboxName(name); }

std::string_view ActionName(Action action) {
  switch (action) {
    case Action::kStart:
      return "start";
    case Action::kShutdown:
      return "shutdown";
    case Action::kDestroy:
      return "destroy";
    case Action::kAutostart:
      return "autostart";
  }
  return "?";
}

std::optional<Action> ParseActionFile(std::string_view file_name) {
  if (file_name == "start") return Action::kStart;
  if (file_name == "stop" || file_name == "shutdown") return Action::kShutdown;
  if (file_name == "destroy") return Action::kDestroy;
  if (file_name == "autostart") return Action::kAutostart;
  return std::nullopt;
}

std::string_view AllowedParams(Action action) {
  switch (action) {
    case Action::kAutostart:
      return "--disable";
    case Action::kShutdown:
      return "--graceful, --mode acpi";
    case Action::kStart:
    case Action::kDestroy:
      return "none";
  }
  return "none";
}

ActionParams ParseActionParams(Action action, std::string_view content) {
  std::vector<std::string> words = ParamWords(content);
  ActionParams params;
  for (std::size_t i = 0; i < words.size(); ++i) {
    const std::string& w = words[i];
    bool ok = false;
    if (action == Action::kAutostart && w == "--disable") {
      params.disable = ok = true;
    } else if (action == Action::kShutdown && w == "--graceful") {
      ok = true;
    } else if (action == Action::kShutdown && w == "--mode=acpi") {
      ok = true;
    } else if (action == Action::kShutdown && w == "--mode" && i + 1 < words.size() &&
               words[i + 1] == "acpi") {
      ok = true;
      ++i;
    }
    if (!ok) {
      Fail(ErrorCode::kInvalidArgument, "{}: parameter '{}' is not accepted (accepted: {})",
           ActionName(action), EscapeForLog(w, 64), AllowedParams(action));
    }
  }
  return params;
}

bool IsPlainText(std::string_view content) {
  for (char c : content) {
    auto u = static_cast<unsigned char>(c);
    if (u == '\n' || u == '\t' || u == '\r') continue;
    if (u < 0x20 || u > 0x7e) return false;
  }
  return true;
}

VmConfig ParseVmConfig(std::string_view json_text) {
  if (json_text.size() > kMaxConfigBytes) {
    Fail(ErrorCode::kInvalidArgument, "config: {} bytes (at most {})", json_text.size(),
         kMaxConfigBytes);
  }
  if (!IsPlainText(json_text))
    Fail(ErrorCode::kInvalidArgument, "config: not text (binary content)");
  nlohmann::json doc = nlohmann::json::parse(json_text, nullptr, false);
  if (doc.is_discarded()) Fail(ErrorCode::kInvalidArgument, "config: not valid JSON");
  if (!doc.is_object()) Fail(ErrorCode::kInvalidArgument, "config: must be a JSON object");
  VmConfig config;
  for (const auto& [key, value] : doc.items()) {
    if (key == "kind") {
      if (!value.is_string()) Fail(ErrorCode::kInvalidArgument, "config: 'kind' must be a string");
      try {
        config.kind = ParseKind(value.get<std::string>());
      } catch (const Error& e) {
        throw Error(e.code(), std::string("config: 'kind': ") + e.what());
      }
    } else if (key == "image") {
      if (!value.is_string()) Fail(ErrorCode::kInvalidArgument, "config: 'image' must be a string");
      std::string image = value.get<std::string>();
      if (image.empty() || image.size() > 128 || !IsPlainText(image) ||
          image.find_first_of(" \t\n/") != std::string::npos) {
        Fail(ErrorCode::kInvalidArgument, "config: 'image' must be an image name");
      }
      config.image = image;
    } else if (key == "memory_mib") {
      config.memory_mib = NumberField<unsigned>(value, key, 64, 1 << 20);
    } else if (key == "vcpus") {
      config.vcpus = NumberField<unsigned>(value, key, 1, 256);
    } else if (key == "ttl_seconds") {
      config.ttl_seconds = NumberField<std::int64_t>(value, key, 1, std::int64_t{10} * 365 * 86400);
    } else if (key == "ssh_keys") {
      if (!value.is_array())
        Fail(ErrorCode::kInvalidArgument, "config: 'ssh_keys' must be an array");
      if (value.size() > 32)
        Fail(ErrorCode::kInvalidArgument, "config: 'ssh_keys': at most 32 keys");
      for (std::size_t i = 0; i < value.size(); ++i) {
        if (!value[i].is_string()) {
          Fail(ErrorCode::kInvalidArgument, "config: 'ssh_keys[{}]' must be a string", i);
        }
        std::string key_line = value[i].get<std::string>();
        try {
          CheckAuthorizedKey(key_line);
        } catch (const Error& e) {
          throw Error(e.code(), fmt::format("config: 'ssh_keys[{}]': {}", i, e.what()));
        }
        config.ssh_keys.push_back(key_line);
      }
    } else if (key == "autostart") {
      if (!value.is_boolean())
        Fail(ErrorCode::kInvalidArgument, "config: 'autostart' must be true or false");
      config.autostart = value.get<bool>();
    } else {
      Fail(
          ErrorCode::kInvalidArgument,
          "config: unknown key '{}' (known: kind, image, memory_mib, vcpus, ttl_seconds, ssh_keys, "
          "autostart)",
          EscapeForLog(key, 64));
    }
  }
  return config;
}

std::string VmConfigToJson(const VmConfig& config) {
  nlohmann::json doc = nlohmann::json::object();
  if (config.kind) doc["kind"] = std::string(KindName(*config.kind));
  if (config.image) doc["image"] = *config.image;
  if (config.memory_mib) doc["memory_mib"] = *config.memory_mib;
  if (config.vcpus) doc["vcpus"] = *config.vcpus;
  if (config.ttl_seconds) doc["ttl_seconds"] = *config.ttl_seconds;
  if (!config.ssh_keys.empty()) doc["ssh_keys"] = config.ssh_keys;
  if (config.autostart) doc["autostart"] = *config.autostart;
  return doc.dump(2) + "\n";
}

}  // namespace ephemera::wirt
