// What operators and tools watch: /metrics (Prometheus), /v1/events (the
// event log as server-sent events), /v1/usage (what each sandbox uses now,
// for `ephemera top`).
#include <spdlog/spdlog.h>

#include <charconv>

#include "api/route_call.h"
#include "api/wire.h"
#include "core/error.h"

namespace ephemera::routes {

namespace http = boost::beast::http;
using nlohmann::json;

namespace {

// The stream's comment line every so often: a client that went away is
// noticed, and proxies keep the connection.
constexpr std::chrono::seconds kKeepAlive{15};
constexpr std::chrono::milliseconds kClientCheck{500};
constexpr std::size_t kBacklogPage = 500;

std::string_view Target(const HttpRequest& request) {
  return {request.target().data(), request.target().size()};
}

std::int64_t ParseSeq(std::string_view text, std::string_view what) {
  std::int64_t value = -1;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || value < 0) {
    Fail(ErrorCode::kInvalidArgument, "{} must be a sequence number (0 or more), not '{}'", what,
         text.substr(0, 40));
  }
  return value;
}

// One event as an SSE message: its seq as the id (EventSource sends it back
// as Last-Event-ID when it reconnects), its type as the event name.
std::string EventMessage(const Event& event) {
  return fmt::format("id: {}\nevent: {}\ndata: {}\n\n", event.seq, event.kind,
                     JsonText(EventToJson(event)));
}

class StreamSlot {
 public:
  explicit StreamSlot(StreamSlots* slots) : slots_(slots) {
    if (slots_ && !slots_->TryTake()) {
      Fail(ErrorCode::kResourceExhausted,
           "{} event streams are open already (events.max_subscribers)", slots_->max());
    }
  }
  ~StreamSlot() {
    if (slots_) slots_->Give();
  }
  StreamSlot(const StreamSlot&) = delete;
  StreamSlot& operator=(const StreamSlot&) = delete;

 private:
  StreamSlots* slots_;
};

}  // namespace

HttpResponse GetMetrics(const Call& call) {
  if (call.caller) {
    Fail(ErrorCode::kPermissionDenied,
         "metrics are for root on the local socket, or on metrics.listen");
  }
  return MetricsResponse(call.c.engine->metrics(), call.request.version());
}

HttpResponse StreamEvents(const Call& call) {
  if (call.caller) {
    Fail(ErrorCode::kPermissionDenied, "the event stream is for root on the local socket");
  }
  auto query = ParseQuery(Target(call.request), {"since", "follow"});
  std::optional<std::int64_t> since;
  if (auto it = query.find("since"); it != query.end()) {
    since = ParseSeq(it->second, "since");
  } else if (auto h = call.request.find("Last-Event-ID"); h != call.request.end()) {
    since = ParseSeq(std::string_view(h->value().data(), h->value().size()), "Last-Event-ID");
  }
  bool follow = true;
  if (auto it = query.find("follow"); it != query.end()) {
    if (it->second != "0" && it->second != "1" && it->second != "true" && it->second != "false") {
      Fail(ErrorCode::kInvalidArgument, "follow must be 0 or 1, not '{}'",
           it->second.substr(0, 20));
    }
    follow = it->second == "1" || it->second == "true";
  }
  if (!call.sink) Fail(ErrorCode::kInternal, "the event stream needs a streaming door");
  StreamSlot slot(call.c.event_streams);
  Engine& engine = *call.c.engine;

  // Followed before the log is read, so nothing falls between the two.
  auto subscription = engine.FollowEvents();
  std::int64_t last = since.value_or(-1);
  constexpr std::string_view kType = "text/event-stream";
  // The log from `last` on; false once the client has gone.
  auto send_backlog = [&]() {
    if (last < 0) return true;
    for (;;) {
      std::vector<Event> page = engine.Events(last, kBacklogPage);
      std::string text;
      for (const Event& e : page) {
        text += EventMessage(e);
        last = e.seq;
      }
      if (!text.empty() && !call.sink->Send(kType, text)) return false;
      if (page.size() < kBacklogPage) return true;
    }
  };
  // The stream starts with a comment: the client knows it is connected.
  if (!call.sink->Send(kType, ": ephemera events\n\n") || !send_backlog()) return {};
  if (!follow) return HttpResponse(http::status::ok, call.request.version());
  auto last_sent = std::chrono::steady_clock::now();
  for (;;) {
    std::optional<Event> event;
    try {
      event = subscription->Next(kClientCheck);
    } catch (const Error& e) {
      if (e.code() != ErrorCode::kResourceExhausted) break;  // the daemon stops
      // Too far behind for the feed: caught up from the log instead.
      spdlog::info("events: a follower fell behind at {}; catching up from the log", last);
      try {
        subscription = engine.FollowEvents();
      } catch (const Error&) {
        break;  // the daemon stops
      }
      if (last < 0) last = 0;
      if (!send_backlog()) return {};
      continue;
    }
    if (!event) {
      // A client that went away frees its slot now, not at the next write.
      if (!call.sink->ClientConnected()) return {};
      if (std::chrono::steady_clock::now() - last_sent < kKeepAlive) continue;
      if (!call.sink->Send(kType, ": keep-alive\n\n")) return {};
      last_sent = std::chrono::steady_clock::now();
      continue;
    }
    if (event->seq <= last) continue;  // sent from the log already
    last = event->seq;
    if (!call.sink->Send(kType, EventMessage(*event))) return {};
    last_sent = std::chrono::steady_clock::now();
  }
  return HttpResponse(http::status::ok, call.request.version());
}

HttpResponse GetUsage(const Call& call) {
  json list = json::array();
  std::optional<std::string> owner;
  if (call.caller) owner = call.caller->owner;
  for (const SandboxUsage& u : call.c.engine->Usage(owner)) {
    json item = {{"id", u.sandbox.id.str()},
                 {"name", u.sandbox.name},
                 {"kind", KindName(u.sandbox.spec.kind)},
                 {"state", StateName(u.sandbox.state)},
                 {"owner", u.sandbox.owner},
                 {"image", u.sandbox.spec.image},
                 {"memory_mib", u.sandbox.spec.memory_mib},
                 {"vcpus", u.sandbox.spec.vcpus},
                 {"created_at", u.sandbox.created_at},
                 {"received_bytes", u.received_bytes},
                 {"sent_bytes", u.sent_bytes}};
    item["expires_at"] = u.sandbox.expires_at ? json(*u.sandbox.expires_at) : json(nullptr);
    if (u.resources) {
      item["cpu_seconds"] = u.resources->cpu_seconds;
      item["memory_bytes"] = u.resources->memory_bytes;
    }
    list.push_back(std::move(item));
  }
  const auto now = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::system_clock::now().time_since_epoch());
  return JsonResponse(200, {{"at_ms", now.count()}, {"sandboxes", list}});
}

}  // namespace ephemera::routes

namespace ephemera {

HttpResponse MetricsResponse(const MetricsRegistry& registry, unsigned http_version) {
  namespace http = boost::beast::http;
  HttpResponse response(http::status::ok, http_version);
  response.set(http::field::content_type, std::string(kMetricsContentType));
  response.body() = registry.Render();
  response.prepare_payload();
  return response;
}

}  // namespace ephemera
