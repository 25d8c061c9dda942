// The NIC's configuration through rtnetlink, hand-rolled: one socket, one
// batch of requests, one answer per request. Starting busybox ip for each
// step would cost tens of milliseconds apiece under emulation.
#pragma once

#include <string>

#include "agent/protocol.h"

namespace ephemera::agent {

// The first network interface (by name) that is not the loopback; empty
// when there is none.
std::string FirstInterface(const std::string& sys_class_net = "/sys/class/net");

// Sets the MAC of interface `name`, brings it up, adds the address and the
// default route (replacing any). Throws std::runtime_error naming what the
// kernel refused.
void ConfigureInterface(const std::string& name, const Network& network,
                        const std::string& sys_class_net = "/sys/class/net");

}  // namespace ephemera::agent
