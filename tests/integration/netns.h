// Runs the whole test process in a network namespace of its own (with its
// own mount namespace and /sys, so sysfs shows that namespace). The
// namespace disappears with the process: nothing a test does can send a
// packet to any real network.
#pragma once

namespace ephemera::test {

// Call first thing in main(), before any thread starts. Aborts the test
// program with a message if it cannot (for example, without root).
void EnterPrivateNetworkNamespace();

// Kills the orphans (parent 1) living in this process's network namespace:
// what a daemon that died without its teardown left (dnsmasq, QEMU). The
// namespace is the test's own, so they are its own.
void EndNamespaceOrphans();

}  // namespace ephemera::test
