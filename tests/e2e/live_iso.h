// Checks shared by the live ISO tests of both drivers: the project's own
// ISO (images/live-iso), in Anweddol's mirror layout, booted with the
// endpoint password that Anweddol ISOs need.
#pragma once

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

namespace ephemera::test {

inline constexpr const char* kLiveImage = "live";
inline constexpr const char* kLiveEndpointPassword = "endpoint";  // images/live-iso's default

// The YAML line that lets the endpoint log in to the live ISO.
std::string LiveIsoConfig();
// The digest sha256sum.txt publishes for the live ISO.
std::string PublishedLiveIsoSha256();
// A sandbox from the live ISO: what the API shows, a login with the
// returned credentials, the guest booted from the CD, and the well-known
// endpoint password retired.
void ExpectLiveIsoSandbox(const nlohmann::json& sandbox);

}  // namespace ephemera::test
