// Base64 (RFC 4648, with padding) for HTTP basic auth and the credential
// files registries use.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace ephemera {

std::string Base64Encode(std::string_view data);
// nullopt for anything that is not canonical padded base64.
std::optional<std::string> Base64Decode(std::string_view text);

}  // namespace ephemera
