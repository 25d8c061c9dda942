// Files between this host and a sandbox's guest over the daemon's /v1 files
// route, streamed both ways (libephemera-client's Upload and Download, and
// `ephemera cp`).
#pragma once

#include <string>
#include <string_view>

#include "client/api_client.h"

namespace ephemera::client {

// Copies between this host (a file; "-" for stdout when reading) and a
// guest path. A guest folder comes as a tar; `tar` sends a local tar to be
// unpacked into the guest folder. A local file is written whole or not at all.
void CopyFromGuest(ApiClient& client, const Headers& token, const std::string& id,
                   const std::string& guest_path, const std::string& local);
void CopyToGuest(ApiClient& client, const Headers& token, const std::string& local,
                 const std::string& id, const std::string& guest_path, bool tar);

// Writes all of `bytes` to `fd`; ApiError naming `what` when it cannot.
void WriteAll(int fd, std::string_view bytes, std::string_view what);

// Percent-encodes text for one path segment or query value.
std::string PathSegment(const std::string& text);

}  // namespace ephemera::client
