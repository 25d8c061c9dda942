// `ephemerad` in the foreground: wires config -> store, images, VM driver,
// networks, provisioner -> engine -> local API, reconciles, serves until
// SIGTERM/SIGINT, then stops (destroying sandboxes only if configured).
#pragma once

#include "config/config.h"

namespace ephemera {

enum class ServeMode {
  kServe,    // serve until SIGTERM/SIGINT
  kCleanup,  // `ephemerad cleanup`: destroy every sandbox, then exit
};

// Returns the process exit code. kCleanup refuses to run while a daemon
// answers on the socket, and opens no front door.
int Serve(const Config& config, ServeMode mode = ServeMode::kServe);

}  // namespace ephemera
