#include "vm/libvirt/connection.h"

#include <libvirt/virterror.h>
#include <spdlog/spdlog.h>

#include <ctime>

#include "core/error.h"

namespace ephemera {

using namespace std::chrono_literals;

namespace {

// libvirt prints every error to stderr unless told otherwise; ours carry
// them in exceptions instead.
void Silence(void*, virErrorPtr) {}

// The event loop is process-wide in libvirt: registered once, and run by
// one thread (the connection's) while a connection exists.
void RegisterEventLoopOnce() {
  static std::once_flag once;
  std::call_once(once, [] {
    virSetErrorFunc(nullptr, Silence);
    if (virEventRegisterDefaultImpl() < 0) FailLibvirt("cannot start libvirt's event loop");
  });
}

ErrorCode CodeFor(const virError* e) {
  if (!e) return ErrorCode::kInternal;
  switch (e->code) {
    case VIR_ERR_NO_DOMAIN:
    case VIR_ERR_NO_NETWORK:
    case VIR_ERR_NO_NWFILTER:
    case VIR_ERR_NO_STORAGE_VOL:
      return ErrorCode::kNotFound;
    case VIR_ERR_NO_CONNECT:
    case VIR_ERR_RPC:
    case VIR_ERR_SYSTEM_ERROR:
    case VIR_ERR_AUTH_FAILED:
    case VIR_ERR_AUTH_UNAVAILABLE:
    case VIR_ERR_AGENT_UNRESPONSIVE:
      return ErrorCode::kUnavailable;
    case VIR_ERR_INVALID_ARG:
    case VIR_ERR_XML_ERROR:
    case VIR_ERR_XML_DETAIL:
    case VIR_ERR_CONFIG_UNSUPPORTED:
    case VIR_ERR_NO_SUPPORT:
      return ErrorCode::kInvalidArgument;
    case VIR_ERR_OPERATION_INVALID:
    case VIR_ERR_OPERATION_FAILED:
      return ErrorCode::kFailedPrecondition;
    case VIR_ERR_DOM_EXIST:
    case VIR_ERR_NETWORK_EXIST:
      return ErrorCode::kAlreadyExists;
    default:
      break;
  }
  // A connection closed under a call reports an internal error with this text.
  if (e->message && std::string_view(e->message).find("closed") != std::string_view::npos) {
    return ErrorCode::kUnavailable;
  }
  return ErrorCode::kInternal;
}

std::string Clock(std::chrono::system_clock::time_point t) {
  std::time_t s = std::chrono::system_clock::to_time_t(t);
  std::tm tm{};
  gmtime_r(&s, &tm);
  char buffer[32];
  std::strftime(buffer, sizeof buffer, "%H:%M:%S UTC", &tm);
  return buffer;
}

}  // namespace

void FailLibvirt(std::string_view what) {
  const virError* e = virGetLastError();
  std::string message = e && e->message ? e->message : "unknown libvirt error";
  ErrorCode code = CodeFor(e);
  virResetLastError();
  throw Error(code, fmt::format("{}: {}", what, message));
}

bool LastLibvirtErrorIsNotFound() {
  const virError* e = virGetLastError();
  bool not_found = CodeFor(e) == ErrorCode::kNotFound;
  if (not_found) virResetLastError();
  return not_found;
}

bool LastLibvirtErrorIsGone() {
  const virError* e = virGetLastError();
  bool gone = CodeFor(e) == ErrorCode::kNotFound || (e && e->code == VIR_ERR_OPERATION_INVALID);
  if (gone) virResetLastError();
  return gone;
}

LibvirtConnection::LibvirtConnection(std::string uri) : uri_(std::move(uri)) {
  RegisterEventLoopOnce();
  // Timers keep the loop turning, so that it notices stopping_.
  virEventAddTimeout(
      200, [](int, void*) {}, nullptr, nullptr);
  event_loop_ = std::thread([this] {
    while (!stopping_) {
      if (virEventRunDefaultImpl() < 0) std::this_thread::sleep_for(100ms);
    }
  });
  try {
    Install(Open());
  } catch (...) {
    stopping_ = true;
    event_loop_.join();
    throw;
  }
  reconnector_ = std::thread([this] { ReconnectLoop(); });
  spdlog::info("libvirt: connected to {}", uri_);
}

LibvirtConnection::~LibvirtConnection() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (reconnector_.joinable()) reconnector_.join();
  std::shared_ptr<virConnect> conn;
  {
    std::lock_guard lock(mutex_);
    conn.swap(conn_);
    if (conn && lifecycle_callback_ >= 0) {
      virConnectDomainEventDeregisterAny(conn.get(), lifecycle_callback_);
    }
    if (conn) virConnectUnregisterCloseCallback(conn.get(), OnClose);
  }
  conn.reset();
  event_loop_.join();
}

std::shared_ptr<virConnect> LibvirtConnection::Open() {
  virConnectPtr raw = virConnectOpen(uri_.c_str());
  if (!raw) {
    const virError* e = virGetLastError();
    std::string message = e && e->message ? e->message : "unknown error";
    ErrorCode code = e && (e->code == VIR_ERR_INVALID_ARG || e->code == VIR_ERR_NO_CONNECT) &&
                             message.find("no connection driver") != std::string::npos
                         ? ErrorCode::kInvalidArgument
                         : ErrorCode::kUnavailable;
    virResetLastError();
    Fail(code, "cannot connect to libvirt at '{}': {}", uri_, message);
  }
  // libvirt pings, and closes (calling OnClose) after 3 missed answers.
  virConnectSetKeepAlive(raw, 5, 3);
  return std::shared_ptr<virConnect>(raw, [](virConnectPtr c) { virConnectClose(c); });
}

void LibvirtConnection::Install(std::shared_ptr<virConnect> conn) {
  if (virConnectRegisterCloseCallback(conn.get(), OnClose, this, nullptr) < 0) {
    FailLibvirt("cannot watch the libvirt connection");
  }
  int id = virConnectDomainEventRegisterAny(conn.get(), nullptr, VIR_DOMAIN_EVENT_ID_LIFECYCLE,
                                            VIR_DOMAIN_EVENT_CALLBACK(OnLifecycle), this, nullptr);
  if (id < 0) FailLibvirt("cannot subscribe to libvirt's domain events");
  std::lock_guard lock(mutex_);
  conn_ = std::move(conn);
  lifecycle_callback_ = id;
  down_reason_.clear();
}

void LibvirtConnection::OnClose(virConnectPtr, int reason, void* opaque) {
  auto* self = static_cast<LibvirtConnection*>(opaque);
  const char* why = reason == VIR_CONNECT_CLOSE_REASON_EOF ? "libvirtd closed the connection"
                    : reason == VIR_CONNECT_CLOSE_REASON_KEEPALIVE ? "keepalive timed out"
                    : reason == VIR_CONNECT_CLOSE_REASON_ERROR     ? "connection error"
                                                                   : "closed by the client";
  {
    std::lock_guard lock(self->mutex_);
    if (!self->conn_) return;
    // Not closed here (libvirt forbids it in this callback): the
    // reconnector drops it.
    self->down_reason_ = why;
    self->down_since_ = std::chrono::system_clock::now();
  }
  spdlog::warn("libvirt: lost the connection to {} ({}); reconnecting", self->uri_, why);
  self->wake_.notify_all();
}

int LibvirtConnection::OnLifecycle(virConnectPtr, virDomainPtr dom, int event, int, void* opaque) {
  if (event != VIR_DOMAIN_EVENT_STOPPED && event != VIR_DOMAIN_EVENT_UNDEFINED &&
      event != VIR_DOMAIN_EVENT_CRASHED) {
    return 0;
  }
  char uuid[VIR_UUID_STRING_BUFLEN] = {};
  if (virDomainGetUUIDString(dom, uuid) < 0) return 0;
  auto* self = static_cast<LibvirtConnection*>(opaque);
  StoppedListener listener;
  {
    std::lock_guard lock(self->mutex_);
    listener = self->listener_;
  }
  if (listener) listener(uuid);
  return 0;
}

void LibvirtConnection::ReconnectLoop() {
  auto backoff = 250ms;
  std::unique_lock lock(mutex_);
  while (!stopping_) {
    wake_.wait(lock, [this] { return stopping_ || !down_reason_.empty(); });
    if (stopping_) return;
    // Drop the broken one (outside the lock: closing may call back).
    std::shared_ptr<virConnect> old;
    old.swap(conn_);
    int callback = lifecycle_callback_;
    lifecycle_callback_ = -1;
    lock.unlock();
    if (old) {
      if (callback >= 0) virConnectDomainEventDeregisterAny(old.get(), callback);
      virConnectUnregisterCloseCallback(old.get(), OnClose);
      old.reset();
    }
    try {
      Install(Open());
      spdlog::info("libvirt: reconnected to {}", uri_);
      backoff = 250ms;
      lock.lock();
      continue;
    } catch (const Error& e) {
      lock.lock();
      down_reason_ = e.what();
    }
    wake_.wait_for(lock, backoff, [this] { return stopping_.load(); });
    backoff = std::min(backoff * 2, std::chrono::milliseconds(8000));
  }
}

std::shared_ptr<virConnect> LibvirtConnection::Get() {
  std::lock_guard lock(mutex_);
  if (!conn_ || !down_reason_.empty()) {
    Fail(ErrorCode::kUnavailable, "libvirt at {} is unreachable: {}", uri_,
         down_reason_.empty() ? "not connected" : down_reason_);
  }
  return conn_;
}

void LibvirtConnection::OnStopped(StoppedListener listener) {
  std::lock_guard lock(mutex_);
  listener_ = std::move(listener);
}

bool LibvirtConnection::connected() const {
  std::lock_guard lock(mutex_);
  return conn_ && down_reason_.empty();
}

std::string LibvirtConnection::Health() const {
  std::lock_guard lock(mutex_);
  if (conn_ && down_reason_.empty()) return "connected to " + uri_;
  return fmt::format("unreachable since {}: {}", Clock(down_since_), down_reason_);
}

void LibvirtConnection::Broken() {
  {
    std::lock_guard lock(mutex_);
    if (!down_reason_.empty()) return;
    down_reason_ = "a call found the connection broken";
    down_since_ = std::chrono::system_clock::now();
  }
  wake_.notify_all();
}

}  // namespace ephemera
