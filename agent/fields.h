// Checks of a request's fields: each failure is a FieldError naming the
// field, thrown before the request changes anything.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <string_view>

namespace ephemera::agent {

// The field's value; nullptr when absent or null.
const nlohmann::json* Find(const nlohmann::json& object, const char* field);

// `name` is how errors call the field (a path such as "network.mac").
const std::string& RequireString(const nlohmann::json& object, const std::string& name,
                                 const char* field);

// An integer in [min, max]; floats ("1.0") and strings are refused.
int64_t RequireInteger(const nlohmann::json& object, const std::string& name, const char* field,
                       int64_t min, int64_t max);

// An optional integer in [min, max]: `fallback` when absent.
int64_t OptionalInteger(const nlohmann::json& object, const char* field, int64_t min, int64_t max,
                        int64_t fallback);

// An optional boolean: `fallback` when absent.
bool OptionalBool(const nlohmann::json& object, const char* field, bool fallback);

void RefuseUnknownFields(const nlohmann::json& object, const std::set<std::string_view>& known,
                         std::string_view prefix);

// Standard base64 with padding.
std::string EncodeBase64(std::string_view bytes);

}  // namespace ephemera::agent
