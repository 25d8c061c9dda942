// What the daemon tells a user about a VM: ~/wirt/info/vm/NAME/status.xml,
// and the timestamps of log lines and history names.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "core/sandbox.h"

namespace ephemera::wirt {

struct VmStatus {
  std::string name;
  std::string user;
  uid_t uid = 0;
  std::string state;  // starting | running | stopping | stopped | failed
  bool autostart = false;
  std::optional<Sandbox> instance;
  std::string host;  // what clients connect to
  std::string last_action, last_outcome, last_message;
  UnixSeconds last_at = 0;
  std::string domain_xml;  // the libvirt driver's domain, when there is one
};

std::string StatusXml(const VmStatus& status, UnixSeconds now);

std::int64_t NowUnixMicros();
// UTC, sortable, unique to the microsecond: 20261205T110102.123456Z.
std::string Timestamp(std::int64_t unix_micros);
// UTC ISO 8601 to the second: 2026-12-05T11:01:02Z.
std::string IsoTime(UnixSeconds at);

}  // namespace ephemera::wirt
