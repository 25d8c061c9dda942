// `ephemerad` in the foreground: wires config -> store, images, VM driver,
// networks, provisioner -> engine -> local API, reconciles, serves until
// SIGTERM/SIGINT, then stops (destroying sandboxes only if configured).
#pragma once

#include "config/config.h"

namespace ephemera {

// Returns the process exit code.
int Serve(const Config& config);

}  // namespace ephemera
