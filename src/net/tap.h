// TAP devices: created persistent through /dev/net/tun (the only way the
// kernel offers), addressed, brought up and deleted through rtnetlink.
#pragma once

#include <string>
#include <vector>

#include "core/ipv4.h"
#include "core/sandbox_id.h"

namespace ephemera {

// "eph" + the first 8 hex digits of the id: unique enough, and at most
// IFNAMSIZ-1 characters.
std::string TapNameFor(const SandboxId& id);
inline constexpr std::string_view kTapPrefix = "eph";
// A pipeline machine's: "ephr" + 10 hex digits of SHA-256(run id, NUL,
// machine name), so a rerun of the run gets the same name.
std::string TapNameForRun(std::string_view run_id, std::string_view machine);

// Creates TAP `name` with `gateway`/30 on it, link up. kAlreadyExists if an
// interface of that name exists (a clash is never adopted silently);
// kPermissionDenied without CAP_NET_ADMIN. Nothing is left on failure.
void CreateTap(const std::string& name, Ipv4 gateway);

// Deletes the interface; an absent one is fine (idempotent).
void DeleteTap(const std::string& name);

bool InterfaceExists(const std::string& name);
// Names of existing TAP devices named as the two above name them (for reconcile).
std::vector<std::string> ListEphemeraTaps();

}  // namespace ephemera
