#include "agent/fields.h"

#include "agent/error.h"

namespace ephemera::agent {

using nlohmann::json;

const json* Find(const json& object, const char* field) {
  auto it = object.find(field);
  if (it == object.end() || it->is_null()) return nullptr;
  return &*it;
}

const std::string& RequireString(const json& object, const std::string& name, const char* field) {
  const json* value = Find(object, field);
  if (value == nullptr) throw FieldError(name, "missing");
  if (!value->is_string()) throw FieldError(name, "must be a string");
  return value->get_ref<const std::string&>();
}

// An integer in [min, max]; floats ("1.0") and strings are refused.
int64_t RequireInteger(const json& object, const std::string& name, const char* field, int64_t min,
                       int64_t max) {
  const json* value = Find(object, field);
  if (value == nullptr) throw FieldError(name, "missing");
  if (!value->is_number_integer()) throw FieldError(name, "must be an integer");
  bool in_range = value->is_number_unsigned()
                      ? value->get<uint64_t>() <= static_cast<uint64_t>(max) &&
                            static_cast<int64_t>(value->get<uint64_t>()) >= min
                      : value->get<int64_t>() >= min && value->get<int64_t>() <= max;
  if (!in_range) {
    throw FieldError(name, "must be from " + std::to_string(min) + " to " + std::to_string(max));
  }
  return value->get<int64_t>();
}

void RefuseUnknownFields(const json& object, const std::set<std::string_view>& known,
                         std::string_view prefix) {
  for (const auto& [key, value] : object.items()) {
    if (known.count(key) == 0) {
      throw FieldError(std::string(prefix) + key.substr(0, 64), "unknown field");
    }
  }
}

int64_t OptionalInteger(const json& object, const char* field, int64_t min, int64_t max,
                        int64_t fallback) {
  if (Find(object, field) == nullptr) return fallback;
  return RequireInteger(object, field, field, min, max);
}

bool OptionalBool(const json& object, const char* field, bool fallback) {
  const json* value = Find(object, field);
  if (value == nullptr) return fallback;
  if (!value->is_boolean()) throw FieldError(field, "must be true or false");
  return value->get<bool>();
}

std::string EncodeBase64(std::string_view bytes) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 3 <= bytes.size(); i += 3) {
    uint32_t group = (static_cast<uint8_t>(bytes[i]) << 16) |
                     (static_cast<uint8_t>(bytes[i + 1]) << 8) | static_cast<uint8_t>(bytes[i + 2]);
    out += kAlphabet[group >> 18];
    out += kAlphabet[(group >> 12) & 63];
    out += kAlphabet[(group >> 6) & 63];
    out += kAlphabet[group & 63];
  }
  if (i < bytes.size()) {
    uint32_t group = static_cast<uint8_t>(bytes[i]) << 16;
    if (i + 1 < bytes.size()) group |= static_cast<uint8_t>(bytes[i + 1]) << 8;
    out += kAlphabet[group >> 18];
    out += kAlphabet[(group >> 12) & 63];
    out += i + 1 < bytes.size() ? kAlphabet[(group >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

}  // namespace ephemera::agent
