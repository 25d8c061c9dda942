// Where things are in a user's wirt tree, relative to the home directory.
// Users write requests under kServiceDir (or the older layout's
// virsh/dom-NAME); the daemon writes everything else.
#pragma once

#include <string_view>

namespace ephemera::wirt {

// ~/wirt/service/vm/NAME/{config,start,stop,shutdown,destroy,autostart}
inline constexpr std::string_view kServiceDir = "wirt/service/vm";
// ~/wirt/info/vm/NAME/{status.xml,credentials}
inline constexpr std::string_view kInfoDir = "wirt/info/vm";
inline constexpr std::string_view kStatusFile = "status.xml";
inline constexpr std::string_view kCredentialsFile = "credentials";
inline constexpr std::string_view kConfigFile = "config";
// ~/wirt/logs/vm/NAME.log (rotated to NAME.log.1.tgz ...), ~/wirt/logs/history/
inline constexpr std::string_view kLogDir = "wirt/logs/vm";
inline constexpr std::string_view kHistoryDir = "wirt/logs/history";
// The older layout: ~/virsh/dom-NAME/ACTION, answered in ~/virsh/history/
// and ~/virsh/log/.
inline constexpr std::string_view kOldRoot = "virsh";
inline constexpr std::string_view kOldVmPrefix = "dom-";
inline constexpr std::string_view kOldHistoryDir = "virsh/history";
inline constexpr std::string_view kOldLogDir = "virsh/log";

}  // namespace ephemera::wirt
