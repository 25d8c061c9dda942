// One libvirt connection for the whole daemon, never one per request: kept
// alive with libvirt's keepalive on an event-loop thread of its own, and
// reopened with backoff when libvirtd restarts or the link drops. While it
// is down, every call fails at once with kUnavailable (never "not found"),
// and Health() says so. Lifecycle events (a domain that stopped) are handed
// to a listener from the event-loop thread.
#pragma once

#include <libvirt/libvirt.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

namespace ephemera {

// Throws the last libvirt error as an Error with `what` in front: kNotFound
// for a missing domain, network or filter, kUnavailable for a connection
// problem, kInvalidArgument for XML libvirt refused, kInternal otherwise.
[[noreturn]] void FailLibvirt(std::string_view what);
// The same classification without throwing (for "already gone is fine").
bool LastLibvirtErrorIsNotFound();
// Not found, or no longer running or active: what a repeated destroy meets.
bool LastLibvirtErrorIsGone();

class LibvirtConnection {
 public:
  using StoppedListener = std::function<void(const std::string& uuid)>;

  // Opens `uri` once (kInvalidArgument for a URI libvirt does not know,
  // kUnavailable naming the URI when it cannot be reached), then keeps it.
  explicit LibvirtConnection(std::string uri);
  ~LibvirtConnection();
  LibvirtConnection(const LibvirtConnection&) = delete;
  LibvirtConnection& operator=(const LibvirtConnection&) = delete;

  // The open connection for one call (kept open while the caller holds
  // it), or kUnavailable while libvirt is unreachable.
  std::shared_ptr<virConnect> Get();
  // Called with the UUID of each domain that stops or is undefined.
  void OnStopped(StoppedListener listener);

  const std::string& uri() const { return uri_; }
  bool connected() const;
  // "connected to URI", or "unreachable since HH:MM:SS: why".
  std::string Health() const;
  // Tells the connection a call found it broken (reconnects sooner).
  void Broken();

 private:
  std::shared_ptr<virConnect> Open();  // throws like the constructor
  void Install(std::shared_ptr<virConnect> conn);
  void ReconnectLoop();
  static void OnClose(virConnectPtr conn, int reason, void* opaque);
  static int OnLifecycle(virConnectPtr conn, virDomainPtr dom, int event, int detail, void* opaque);

  const std::string uri_;
  std::atomic<bool> stopping_{false};
  std::thread event_loop_;
  std::thread reconnector_;

  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::shared_ptr<virConnect> conn_;  // null while unreachable
  int lifecycle_callback_ = -1;
  std::string down_reason_;
  std::chrono::system_clock::time_point down_since_;
  StoppedListener listener_;
};

}  // namespace ephemera
