#include "net/port_forwarder.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>
#include <vector>

#include "core/error.h"
#include "core/random.h"

namespace ephemera {

namespace {

// A direction's buffer starts small (an SSH session moves little) and
// doubles each time a read fills it, up to the maximum: large copies cost
// far fewer system calls and TCP segments per byte for a bulk transfer.
// Measured: 1 MiB copies reach about 0.6 of a direct loopback connection,
// 64 KiB ones 0.35, a splice through a pipe 0.5 (docs/benchmarks.md).
constexpr std::size_t kInitialBuffer = 64 * 1024;
constexpr std::size_t kMaxBuffer = 1 << 20;
constexpr std::uint64_t kWakeupKey = 0;

void SetNoDelay(int fd) {
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

template <typename Deadlines>
void ForgetConnectDeadline(Deadlines& deadlines, typename Deadlines::key_type at,
                           std::uint64_t key) {
  auto [first, last] = deadlines.equal_range(at);
  for (auto it = first; it != last; ++it) {
    if (it->second == key) {
      deadlines.erase(it);
      return;
    }
  }
}

}  // namespace

// One direction of a connection: bytes move from -> buffer -> to.
struct PortForwarder::Direction {
  int from = -1;
  int to = -1;
  std::unique_ptr<char[]> buffer;  // allocated at the first byte
  std::size_t capacity = 0;
  std::size_t begin = 0;  // bytes [begin, end) are read but not yet sent
  std::size_t end = 0;
  bool eof = false;        // `from` has no more to send
  bool shut_down = false;  // and that end-of-stream was passed on to `to`
  std::size_t pending() const { return end - begin; }
};

struct PortForwarder::Connection {
  Connection(SandboxId sandbox, std::uint64_t listener)
      : owner(std::move(sandbox)), listener_key(listener) {}
  SandboxId owner;
  std::uint64_t listener_key;  // the forward it came through
  UniqueFd client;
  UniqueFd upstream;
  std::uint32_t source = 0;  // the client's address, host byte order
  std::uint64_t client_key = 0;
  std::uint64_t upstream_key = 0;
  bool connecting = true;
  Clock::time_point connect_deadline;
  Direction up;                     // client -> guest
  Direction down;                   // guest -> client
  std::uint32_t client_events = 0;  // what epoll watches now, per fd
  std::uint32_t upstream_events = 0;
};

struct PortForwarder::Forward {
  SandboxId owner;
  UniqueFd listener;
  sockaddr_in target{};
  std::uint16_t port = 0;
};

PortForwarder::PortForwarder(ForwarderOptions options) : options_(std::move(options)) {
  in_addr addr{};
  if (::inet_pton(AF_INET, options_.listen_address.c_str(), &addr) != 1) {
    Fail(ErrorCode::kInvalidArgument, "forward listen address '{}' is not an IPv4 address",
         options_.listen_address);
  }
  listen_address_ = addr.s_addr;
  if (options_.ports.first == 0 || options_.ports.first > options_.ports.last) {
    Fail(ErrorCode::kInvalidArgument, "forward port range {}-{} is empty or reversed",
         options_.ports.first, options_.ports.last);
  }
  epoll_.reset(::epoll_create1(EPOLL_CLOEXEC));
  if (!epoll_) FailErrno("epoll_create1", errno);
  wakeup_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!wakeup_) FailErrno("eventfd", errno);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = kWakeupKey;
  ::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, wakeup_.get(), &ev);
  // Start the port search somewhere random so restarts spread out.
  std::byte b[4];
  FillRandom(b);
  std::uint32_t span = options_.ports.last - options_.ports.first + 1u;
  std::uint32_t r;
  std::memcpy(&r, b, sizeof r);
  next_port_offset_ = r % span;
  thread_ = std::thread([this] { Loop(); });
}

PortForwarder::~PortForwarder() {
  stopping_ = true;
  std::uint64_t one = 1;
  (void)!::write(wakeup_.get(), &one, sizeof one);
  thread_.join();
}

std::uint64_t PortForwarder::Register(int fd, std::uint32_t events) {
  std::uint64_t key = next_key_++;
  epoll_event ev{};
  ev.events = events;
  ev.data.u64 = key;
  if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &ev) != 0) FailErrno("epoll_ctl", errno);
  return key;
}

std::uint16_t PortForwarder::Open(const SandboxId& owner, Ipv4 target, std::uint16_t target_port,
                                  std::optional<std::uint16_t> port) {
  std::lock_guard lock(mutex_);
  if (listener_of_.count({owner, target_port})) {
    Fail(ErrorCode::kAlreadyExists, "sandbox {} already forwards a port to its port {}",
         owner.str(), target_port);
  }
  auto forward = std::make_unique<Forward>(Forward{owner, {}, {}, 0});
  forward->target.sin_family = AF_INET;
  forward->target.sin_addr.s_addr = htonl(target.value);
  forward->target.sin_port = htons(target_port);

  const std::uint32_t span = options_.ports.last - options_.ports.first + 1u;
  const std::uint32_t attempts = port ? 1 : span;
  for (std::uint32_t i = 0; i < attempts && !forward->listener; ++i) {
    std::uint16_t candidate =
        port ? *port
             : static_cast<std::uint16_t>(options_.ports.first + (next_port_offset_ + i) % span);
    UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!fd) FailErrno("socket", errno);
    int one = 1;
    ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = listen_address_;
    addr.sin_port = htons(candidate);
    if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      if (errno == EADDRINUSE && !port) continue;
      FailErrno(fmt::format("cannot listen on {}:{}", options_.listen_address, candidate), errno,
                errno == EADDRINUSE ? ErrorCode::kAlreadyExists : ErrorCode::kInternal);
    }
    if (::listen(fd.get(), 128) != 0) FailErrno("listen", errno);
    forward->listener = std::move(fd);
    forward->port = candidate;
    if (!port) next_port_offset_ = (next_port_offset_ + i + 1) % span;
  }
  if (!forward->listener) {
    Fail(ErrorCode::kResourceExhausted, "no free port in the forward range {}-{}",
         options_.ports.first, options_.ports.last);
  }
  std::uint64_t key = Register(forward->listener.get(), EPOLLIN);
  std::uint16_t bound = forward->port;
  listener_of_[{owner, target_port}] = key;
  listeners_[key] = std::move(forward);
  return bound;
}

void PortForwarder::CloseListenerLocked(
    std::map<std::pair<SandboxId, std::uint16_t>, std::uint64_t>::iterator it) {
  const std::uint64_t listener_key = it->second;
  std::vector<std::uint64_t> doomed;
  for (const auto& [key, connection] : connections_) {
    if (connection->listener_key == listener_key && key == connection->client_key) {
      doomed.push_back(key);
    }
  }
  for (auto key : doomed) CloseConnectionLocked(key);
  auto listener = listeners_.find(listener_key);
  ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, listener->second->listener.get(), nullptr);
  listeners_.erase(listener);
  listener_of_.erase(it);
}

void PortForwarder::Close(const SandboxId& owner) {
  std::lock_guard lock(mutex_);
  auto it = listener_of_.lower_bound({owner, 0});
  while (it != listener_of_.end() && it->first.first == owner) {
    auto next = std::next(it);
    CloseListenerLocked(it);
    it = next;
  }
}

void PortForwarder::Close(const SandboxId& owner, std::uint16_t target_port) {
  std::lock_guard lock(mutex_);
  if (auto it = listener_of_.find({owner, target_port}); it != listener_of_.end()) {
    CloseListenerLocked(it);
  }
}

std::optional<std::uint16_t> PortForwarder::PortOf(const SandboxId& owner,
                                                   std::uint16_t target_port) const {
  std::lock_guard lock(mutex_);
  auto it = listener_of_.find({owner, target_port});
  if (it == listener_of_.end()) return std::nullopt;
  return listeners_.at(it->second)->port;
}

std::size_t PortForwarder::ConnectionCount(const SandboxId& owner) const {
  std::lock_guard lock(mutex_);
  std::size_t count = 0;
  for (const auto& [key, connection] : connections_) {
    if (connection->owner == owner && key == connection->client_key) ++count;
  }
  return count;
}

int PortForwarder::NextTimeoutMs() const {
  std::optional<Clock::time_point> next = accept_paused_until_;
  if (!connecting_.empty() && (!next || connecting_.begin()->first < *next)) {
    next = connecting_.begin()->first;
  }
  if (!next) return -1;
  auto left = std::chrono::ceil<std::chrono::milliseconds>(*next - Clock::now()).count();
  return static_cast<int>(std::clamp<long long>(left, 0, 60'000));
}

void PortForwarder::ExpireLocked(Clock::time_point now) {
  while (!connecting_.empty() && connecting_.begin()->first <= now) {
    std::uint64_t key = connecting_.begin()->second;
    connecting_.erase(connecting_.begin());
    CloseConnectionLocked(key);  // the guest never accepted
  }
  if (accept_paused_until_ && *accept_paused_until_ <= now) {
    accept_paused_until_.reset();
    for (const auto& [key, forward] : listeners_) SetListenerInterest(*forward, key, EPOLLIN);
  }
}

void PortForwarder::Loop() {
  std::vector<epoll_event> events(64);
  while (!stopping_) {
    int timeout;
    {
      std::lock_guard lock(mutex_);
      timeout = NextTimeoutMs();
    }
    int n = ::epoll_wait(epoll_.get(), events.data(), static_cast<int>(events.size()), timeout);
    if (n < 0) {
      if (errno == EINTR) continue;
      spdlog::error("forwarder: epoll_wait: {}", std::strerror(errno));
      break;
    }
    std::lock_guard lock(mutex_);
    for (int i = 0; i < n; ++i) {
      std::uint64_t key = events[i].data.u64;
      // One connection's failure (an fd or memory limit) must not take the
      // loop, and every other sandbox's connections, down with it.
      try {
        if (key == kWakeupKey) {
          std::uint64_t value;
          (void)!::read(wakeup_.get(), &value, sizeof value);
        } else if (listeners_.count(key)) {
          HandleListener(key);
        } else if (connections_.count(key)) {
          HandleConnection(key, events[i].events);
        }  // else: closed after epoll_wait returned; ignore the stale event
      } catch (const std::exception& e) {
        spdlog::error("forwarder: {}", e.what());
        CloseConnectionLocked(key);
      }
    }
    ExpireLocked(Clock::now());
  }
}

void PortForwarder::SetListenerInterest(const Forward& forward, std::uint64_t key,
                                        std::uint32_t events) {
  epoll_event ev{};
  ev.events = events;
  ev.data.u64 = key;
  ::epoll_ctl(epoll_.get(), EPOLL_CTL_MOD, forward.listener.get(), &ev);
}

void PortForwarder::HandleListener(std::uint64_t key) {
  Forward& forward = *listeners_.at(key);
  for (;;) {
    sockaddr_in peer{};
    socklen_t peer_len = sizeof peer;
    UniqueFd client(::accept4(forward.listener.get(), reinterpret_cast<sockaddr*>(&peer), &peer_len,
                              SOCK_NONBLOCK | SOCK_CLOEXEC));
    if (!client) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
        // The pending connection stays queued and the listener stays
        // readable: stop watching listeners for a moment rather than spin.
        if (!accept_failing_) {
          spdlog::warn("forwarder: cannot accept ({}); pausing accepts until it can",
                       std::strerror(errno));
          accept_failing_ = true;
        }
        accept_paused_until_ = Clock::now() + std::chrono::milliseconds(100);
        for (const auto& [k, f] : listeners_) SetListenerInterest(*f, k, 0);
      }
      return;  // EAGAIN: drained
    }
    accept_failing_ = false;
    try {
      AcceptOne(key, forward, std::move(client), peer);
    } catch (const std::exception& e) {
      spdlog::error("forwarder: sandbox {}: dropped a connection: {}", forward.owner.str(),
                    e.what());
    }
  }
}

void PortForwarder::AcceptOne(std::uint64_t listener_key, Forward& forward, UniqueFd client,
                              const sockaddr_in& peer) {
  const std::uint32_t source = ntohl(peer.sin_addr.s_addr);
  if (options_.admit && !options_.admit(Ipv4{source})) return;  // closed: filtered
  if (auto open = per_sandbox_.find(forward.owner);
      open != per_sandbox_.end() && open->second >= options_.max_connections_per_sandbox) {
    return;
  }
  if (per_source_[source] >= options_.max_connections_per_source) {
    if (per_source_[source] == 0) per_source_.erase(source);
    return;
  }
  auto c = std::make_shared<Connection>(forward.owner, listener_key);
  c->client = std::move(client);
  c->source = source;
  c->upstream.reset(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!c->upstream) FailErrno("socket", errno);
  SetNoDelay(c->client.get());
  SetNoDelay(c->upstream.get());
  if (::connect(c->upstream.get(), reinterpret_cast<const sockaddr*>(&forward.target),
                sizeof forward.target) != 0 &&
      errno != EINPROGRESS) {
    return;  // refused at once: the client's connection closes
  }
  c->up.from = c->client.get();
  c->up.to = c->upstream.get();
  c->down.from = c->upstream.get();
  c->down.to = c->client.get();
  // Until the guest accepts, only the connect's completion matters (and
  // the client's error or hang-up, which epoll reports regardless).
  c->client_key = Register(c->client.get(), 0);
  c->upstream_key = Register(c->upstream.get(), EPOLLOUT);
  c->upstream_events = EPOLLOUT;
  c->connect_deadline = Clock::now() + options_.connect_timeout;
  connections_[c->client_key] = c;
  connections_[c->upstream_key] = c;
  connecting_.emplace(c->connect_deadline, c->client_key);
  ++per_source_[source];
  ++per_sandbox_[forward.owner];
}

bool PortForwarder::Pump(Direction& d) {
  for (;;) {
    if (d.pending() > 0) {
      ssize_t m = ::send(d.to, d.buffer.get() + d.begin, d.pending(), MSG_NOSIGNAL);
      if (m > 0) {
        d.begin += static_cast<std::size_t>(m);
        if (d.begin == d.end) d.begin = d.end = 0;
        continue;
      }
      if (m < 0 && errno == EINTR) continue;
      return m < 0 && errno == EAGAIN;  // wait for `to` to drain, or fail
    }
    if (d.eof) {
      if (!d.shut_down) {
        ::shutdown(d.to, SHUT_WR);
        d.shut_down = true;
      }
      return true;
    }
    if (!d.buffer) {
      d.capacity = kInitialBuffer;
      d.buffer = std::make_unique<char[]>(d.capacity);
    }
    // Only read with an empty buffer, so EAGAIN means the socket is drained.
    ssize_t n = ::recv(d.from, d.buffer.get(), d.capacity, 0);
    if (n > 0) {
      d.end = static_cast<std::size_t>(n);
      if (d.end == d.capacity && d.capacity < kMaxBuffer) {
        auto larger = std::make_unique<char[]>(d.capacity * 2);
        std::memcpy(larger.get(), d.buffer.get(), d.end);
        d.buffer = std::move(larger);
        d.capacity *= 2;
      }
    } else if (n == 0) {
      d.eof = true;
    } else if (errno != EINTR) {
      return errno == EAGAIN;
    }
  }
}

void PortForwarder::HandleConnection(std::uint64_t key, std::uint32_t events) {
  std::shared_ptr<Connection> c = connections_.at(key);
  bool just_connected = false;
  if (c->connecting) {
    if (key == c->client_key) {
      // The client failed or left before the guest answered: level-triggered
      // ERR/HUP would otherwise wake this loop until the connect ends.
      if (events & (EPOLLERR | EPOLLHUP)) CloseConnectionLocked(c->client_key);
      return;
    }
    int err = 0;
    socklen_t len = sizeof err;
    ::getsockopt(c->upstream.get(), SOL_SOCKET, SO_ERROR, &err, &len);
    if (err != 0) {
      CloseConnectionLocked(c->client_key);
      return;
    }
    sockaddr_in peer{};
    socklen_t peer_len = sizeof peer;
    if (::getpeername(c->upstream.get(), reinterpret_cast<sockaddr*>(&peer), &peer_len) != 0) {
      return;  // still connecting; the client's bytes wait in its socket
    }
    c->connecting = false;
    just_connected = true;
    ForgetConnectDeadline(connecting_, c->connect_deadline, c->client_key);
  }
  // Pump only what this event can move: readable feeds the direction
  // leaving this socket, writable drains the one entering it. Errors and
  // hang-ups (and the first event after connecting) pump both.
  const bool is_client = key == c->client_key;
  const bool everything = just_connected || (events & (EPOLLERR | EPOLLHUP | EPOLLRDHUP));
  Direction& outgoing = is_client ? c->up : c->down;
  Direction& incoming = is_client ? c->down : c->up;
  bool ok = true;
  if (everything || (events & EPOLLIN)) ok = Pump(outgoing);
  if (ok && (everything || (events & EPOLLOUT))) ok = Pump(incoming);
  if (!ok || (c->up.shut_down && c->down.shut_down)) {
    CloseConnectionLocked(c->client_key);
    return;
  }
  UpdateInterest(*c);
}

// Level-triggered, and only for what can make progress: read a side while
// its buffer is empty, watch for writability only while a buffer is stuck. A
// full receiver thus stops reading from the sender (backpressure) and no
// wakeup is wasted on an idle direction.
void PortForwarder::UpdateInterest(Connection& c) {
  auto wanted = [](const Direction& reading, const Direction& writing) {
    std::uint32_t events = 0;
    if (!reading.eof && reading.pending() == 0) events |= EPOLLIN;
    if (writing.pending() > 0) events |= EPOLLOUT;
    return events;
  };
  auto apply = [this](int fd, std::uint64_t key, std::uint32_t events, std::uint32_t& current) {
    if (events == current) return;
    epoll_event ev{};
    ev.events = events;
    ev.data.u64 = key;
    ::epoll_ctl(epoll_.get(), EPOLL_CTL_MOD, fd, &ev);
    current = events;
  };
  apply(c.client.get(), c.client_key, wanted(c.up, c.down), c.client_events);
  apply(c.upstream.get(), c.upstream_key, wanted(c.down, c.up), c.upstream_events);
}

void PortForwarder::CloseConnectionLocked(std::uint64_t key) {
  auto it = connections_.find(key);
  if (it == connections_.end()) return;
  std::shared_ptr<Connection> c = it->second;
  ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, c->client.get(), nullptr);
  ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, c->upstream.get(), nullptr);
  connections_.erase(c->client_key);
  connections_.erase(c->upstream_key);
  if (c->connecting) ForgetConnectDeadline(connecting_, c->connect_deadline, c->client_key);
  if (auto s = per_sandbox_.find(c->owner); s != per_sandbox_.end() && --s->second == 0) {
    per_sandbox_.erase(s);
  }
  if (auto s = per_source_.find(c->source); s != per_source_.end() && --s->second == 0) {
    per_source_.erase(s);
  }
}

}  // namespace ephemera
