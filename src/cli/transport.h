// The `ephemera` command is built on libephemera-client: the transport (the
// local socket or a server, certificate pinning, tokens) and the file
// transfers are the library's, and so are their names here.
#pragma once

#include "client/api_client.h"
#include "client/parse.h"
#include "client/private_file.h"
#include "client/servers.h"
#include "client/transfer.h"

namespace ephemera::cli {
using namespace ephemera::client;
}  // namespace ephemera::cli
