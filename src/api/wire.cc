#include "api/wire.h"

#include <algorithm>
#include <charconv>
#include <chrono>
#include <ctime>

#include "core/text.h"
#include "guest/credentials.h"

namespace ephemera {

using nlohmann::json;

namespace {

std::string Iso8601(UnixSeconds t) {
  std::time_t tt = static_cast<std::time_t>(t);
  std::tm tm{};
  gmtime_r(&tt, &tm);
  char buffer[32];
  std::strftime(buffer, sizeof buffer, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buffer;
}

template <typename T>
std::optional<T> OptionalInteger(const json& body, const char* key, std::int64_t min,
                                 std::int64_t max) {
  auto it = body.find(key);
  if (it == body.end() || it->is_null()) return std::nullopt;
  if (!it->is_number_integer()) Fail(ErrorCode::kInvalidArgument, "'{}' must be an integer", key);
  std::int64_t value = it->get<std::int64_t>();
  if (value < min || value > max) {
    Fail(ErrorCode::kInvalidArgument, "'{}' must be between {} and {}, not {}", key, min, max,
         value);
  }
  return static_cast<T>(value);
}

std::optional<std::string> OptionalText(const json& body, const char* key) {
  auto it = body.find(key);
  if (it == body.end() || it->is_null()) return std::nullopt;
  if (!it->is_string()) Fail(ErrorCode::kInvalidArgument, "'{}' must be a string", key);
  return it->get<std::string>();
}

}  // namespace

json ParseJsonObject(std::string_view body) {
  if (body.size() > kMaxRequestBody) {
    Fail(ErrorCode::kInvalidArgument, "request body exceeds {} bytes", kMaxRequestBody);
  }
  if (body.find_first_not_of(" \t\r\n") == std::string_view::npos) return json::object();
  // No request of ours nests deeper than a few levels; a deep one is refused
  // while it is parsed, before it costs anything.
  json parsed = json::parse(
      body,
      [](int depth, json::parse_event_t, json&) {
        if (depth > kMaxJsonDepth) {
          Fail(ErrorCode::kInvalidArgument, "request body nests deeper than {} levels",
               kMaxJsonDepth);
        }
        return true;
      },
      /*allow_exceptions=*/false);
  if (parsed.is_discarded()) Fail(ErrorCode::kInvalidArgument, "request body is not valid JSON");
  if (!parsed.is_object()) Fail(ErrorCode::kInvalidArgument, "request body must be a JSON object");
  return parsed;
}

namespace {

void RejectUnknownFields(const json& body, std::initializer_list<std::string_view> known) {
  for (const auto& [key, _] : body.items()) {
    if (std::find(known.begin(), known.end(), key) == known.end()) {
      Fail(ErrorCode::kInvalidArgument, "unknown field '{}'", key.substr(0, 64));
    }
  }
}

// "none" | "all" | {"mode": "allow", "allow": ["example.test", "10.1.0.0/16"]}
// (the object form takes every mode).
EgressPolicy ParseEgressField(const json& egress) {
  if (egress.is_string()) return MakeEgressPolicy(egress.get<std::string>(), {});
  if (!egress.is_object()) {
    Fail(ErrorCode::kInvalidArgument,
         "'egress' must be \"none\", \"all\" or an object {{\"mode\", \"allow\"}}");
  }
  RejectUnknownFields(egress, {"mode", "allow"});
  auto mode = egress.find("mode");
  if (mode == egress.end() || !mode->is_string()) {
    Fail(ErrorCode::kInvalidArgument, "'egress.mode' must be one of none, all, allow");
  }
  std::vector<std::string> allow;
  if (auto list = egress.find("allow"); list != egress.end() && !list->is_null()) {
    if (!list->is_array() || list->size() > kMaxEgressEntries) {
      Fail(ErrorCode::kInvalidArgument, "'egress.allow' must be an array of at most {} entries",
           kMaxEgressEntries);
    }
    for (const json& entry : *list) {
      if (!entry.is_string()) Fail(ErrorCode::kInvalidArgument, "'egress.allow' must hold strings");
      allow.push_back(entry.get<std::string>());
    }
  }
  return MakeEgressPolicy(mode->get<std::string>(), allow);
}

}  // namespace

CreateRequest ParseCreateRequest(std::string_view body) {
  json parsed = ParseJsonObject(body);
  CreateRequest request;
  RejectUnknownFields(parsed,
                      {"kind", "image", "kernel", "rootfs", "run_id", "name", "memory_mib", "vcpus",
                       "ttl_seconds", "idle_timeout_seconds", "ssh_keys", "egress"});
  if (auto kind = OptionalText(parsed, "kind")) request.kind = ParseKind(*kind);
  request.image = OptionalText(parsed, "image");
  request.kernel = OptionalText(parsed, "kernel");
  request.rootfs = OptionalText(parsed, "rootfs");
  request.run_id = OptionalText(parsed, "run_id");
  request.machine = OptionalText(parsed, "name");
  // Wide bounds here; the engine applies the configured ones.
  request.memory_mib = OptionalInteger<unsigned>(parsed, "memory_mib", 0, 1 << 24);
  request.vcpus = OptionalInteger<unsigned>(parsed, "vcpus", 0, 1024);
  request.ttl_seconds = OptionalInteger<std::int64_t>(parsed, "ttl_seconds", INT32_MIN, INT32_MAX);
  request.idle_timeout_seconds =
      OptionalInteger<std::int64_t>(parsed, "idle_timeout_seconds", INT32_MIN, INT32_MAX);
  if (auto egress = parsed.find("egress"); egress != parsed.end() && !egress->is_null()) {
    request.egress = ParseEgressField(*egress);
  }
  if (auto keys = parsed.find("ssh_keys"); keys != parsed.end() && !keys->is_null()) {
    if (!keys->is_array() || keys->size() > 32) {
      Fail(ErrorCode::kInvalidArgument, "'ssh_keys' must be an array of at most 32 keys");
    }
    for (const json& key : *keys) {
      if (!key.is_string()) Fail(ErrorCode::kInvalidArgument, "'ssh_keys' must hold strings");
      CheckAuthorizedKey(key.get<std::string>());
      request.authorized_keys.push_back(key.get<std::string>());
    }
  }
  return request;
}

json SandboxToJson(const Sandbox& s, const std::string& host) {
  json j = {{"id", s.id.str()},
            {"state", std::string(StateName(s.state))},
            {"kind", std::string(KindName(s.spec.kind))},
            {"driver", s.driver},
            {"mac", s.mac},
            {"network", s.network},
            {"image", s.spec.image},
            {"image_sha256", s.image_sha256},
            {"memory_mib", s.spec.memory_mib},
            {"vcpus", s.spec.vcpus},
            {"host", host},
            {"port", s.host_port},
            {"username", s.username},
            {"guest_ip", s.guest_ip},
            {"host_key_fingerprint", s.host_key_fingerprint},
            {"host_key", s.host_key},
            {"created_at", Iso8601(s.created_at)},
            {"expires_at", s.expires_at ? json(Iso8601(*s.expires_at)) : json(nullptr)}};
  j["running"] = s.running ? json(*s.running) : json(nullptr);
  j["egress"] = {{"mode", std::string(EgressModeName(s.spec.egress.mode))},
                 {"allow", s.spec.egress.Entries()}};
  if (s.spec.idle_timeout_seconds > 0)
    j["idle_timeout_seconds"] = s.spec.idle_timeout_seconds;  // null: the driver cannot tell now
  if (!s.iso_path.empty()) {
    j["iso_path"] = s.iso_path;
    j["iso_sha256"] = s.image_sha256;
  }
  if (!s.spec.run_id.empty()) {
    j["run_id"] = s.spec.run_id;
    j["name"] = s.spec.machine;
    j["tap"] = s.tap;
    j["subnet"] = s.subnet;
  }
  if (s.paused_at) {
    // Paused: expires_at is when its time paused ends; the TTL waits.
    j["paused_at"] = Iso8601(*s.paused_at);
    j["ttl_left_seconds"] = s.ttl_left_seconds;
  }
  if (!s.name.empty()) j["vm_name"] = s.name;
  if (auto uid = OwnerUid(s.owner)) j["owner_uid"] = *uid;
  if (!s.reason.empty()) j["reason"] = s.reason;
  return j;
}

ImageImport ParseImageImport(std::string_view body) {
  json parsed = ParseJsonObject(body);
  RejectUnknownFields(parsed, {"name", "kernel", "rootfs", "headroom_mib"});
  ImageImport import;
  for (auto [key, out] :
       {std::pair{"name", &import.name}, {"kernel", &import.kernel}, {"rootfs", &import.rootfs}}) {
    auto it = parsed.find(key);
    if (it == parsed.end() && out != &import.name) continue;  // the configured references
    if (it == parsed.end() || !it->is_string() || it->get<std::string>().empty()) {
      Fail(ErrorCode::kInvalidArgument, "'{}' must be a non-empty string", key);
    }
    *out = it->get<std::string>();
  }
  if (!import.kernel.empty() && import.rootfs.empty()) {
    Fail(ErrorCode::kInvalidArgument,
         "'kernel' needs a 'rootfs' (a 'rootfs' alone boots its own kernel; neither, an image "
         "configured under images:)");
  }
  import.headroom_mib = OptionalInteger<std::int64_t>(parsed, "headroom_mib", 0, 1 << 20);
  return import;
}

json ImageEntryToJson(const ImageCatalog::Entry& entry) {
  json j = {{"name", entry.name}};
  if (!entry.image) {
    j["valid"] = false;
    j["error"] = entry.error;
    return j;
  }
  const Image& image = *entry.image;
  j["valid"] = true;
  j["format"] = image.format == ImageFormat::kIso ? "iso" : "kernel";
  j["layout"] = std::string(ImageLayoutName(image.layout));
  j["version"] = image.version_label;
  j["sha256"] = image.PrimarySha256();
  j["endpoint"] = image.takes_endpoint_key ? "key" : "password";
  if (image.iso) {
    j["iso_path"] = image.iso->path.string();
    j["size"] = image.iso->size;
  } else if (image.rootfs) {
    j["size"] = image.rootfs->size;
  }
  return j;
}

json ImageDetailsToJson(const ImageDetails& d) {
  json j = ImageEntryToJson({d.image.name, d.image, ""});
  const Image& image = d.image;
  j["dir"] = image.dir.string();
  if (!image.cmdline.empty()) j["cmdline"] = image.cmdline;
  json files = json::array();
  for (auto [role, file] : {std::pair{"kernel", &image.kernel},
                            {"kernel_compressed", &image.kernel_compressed},
                            {"initrd", &image.initrd},
                            {"rootfs", &image.rootfs},
                            {"iso", &image.iso}}) {
    if (!*file) continue;
    files.push_back({{"role", role},
                     {"path", (*file)->path.string()},
                     {"size", (*file)->size},
                     {"sha256", (*file)->sha256}});
  }
  j["files"] = files;
  j["disk_bytes"] = d.disk_bytes;
  if (const auto& p = image.provenance) {
    j["source"] = {{"kernel", p->kernel_reference},
                   {"rootfs", p->rootfs_reference},
                   {"kernel_digest", p->kernel_digest},
                   {"rootfs_digest", p->rootfs_digest},
                   {"guest_contract", p->guest_contract},
                   {"registry_blobs", p->blobs},
                   {"imported_at", p->imported_at ? json(Iso8601(p->imported_at)) : json(nullptr)}};
  }
  json used_by = json::array();
  for (const auto& id : d.used_by) used_by.push_back(id.str());
  j["used_by"] = used_by;
  return j;
}

json CreateResultToJson(const CreateResult& r, const std::string& host) {
  json j = SandboxToJson(r.sandbox, host);
  j["password"] = r.password;
  j["token"] = r.token;
  j["phases_ms"] = {{"network", r.phases.network.count()},
                    {"vm_start", r.phases.vm_start.count()},
                    {"sshd_up", r.phases.sshd_up.count()},
                    {"provision", r.phases.provision.count()},
                    {"total", r.phases.total.count()}};
  j["start"] = r.phases.start;
  return j;
}

NewAccessToken ParseNewAccessToken(std::string_view body) {
  json parsed = ParseJsonObject(body);
  RejectUnknownFields(parsed, {"name", "expires_in_seconds", "max_sandboxes", "rate_per_minute"});
  NewAccessToken request;
  if (auto it = parsed.find("name"); it != parsed.end() && !it->is_null()) {
    if (!it->is_string()) Fail(ErrorCode::kInvalidArgument, "'name' must be a string");
    request.name = it->get<std::string>();
  }
  // The engine checks the ranges.
  request.expires_in_seconds =
      OptionalInteger<std::int64_t>(parsed, "expires_in_seconds", INT32_MIN, INT32_MAX);
  request.max_sandboxes =
      OptionalInteger<std::int64_t>(parsed, "max_sandboxes", INT32_MIN, INT32_MAX);
  request.rate_per_minute =
      OptionalInteger<std::int64_t>(parsed, "rate_per_minute", INT32_MIN, INT32_MAX);
  return request;
}

bool ParseTokenEnabled(std::string_view body) {
  json parsed = ParseJsonObject(body);
  RejectUnknownFields(parsed, {"enabled"});
  auto it = parsed.find("enabled");
  if (it == parsed.end() || !it->is_boolean()) {
    Fail(ErrorCode::kInvalidArgument, "'enabled' must be given as true or false");
  }
  return it->get<bool>();
}

std::optional<std::int64_t> ParseLifetimeChange(std::string_view body) {
  json parsed = ParseJsonObject(body);
  RejectUnknownFields(parsed, {"ttl_seconds"});
  return OptionalInteger<std::int64_t>(parsed, "ttl_seconds", INT32_MIN, INT32_MAX);
}

std::uint16_t ParsePortExposure(std::string_view body) {
  json parsed = ParseJsonObject(body);
  RejectUnknownFields(parsed, {"guest_port"});
  auto port = OptionalInteger<std::int64_t>(parsed, "guest_port", 1, 65535);
  if (!port) Fail(ErrorCode::kInvalidArgument, "'guest_port' is required (1 to 65535)");
  return static_cast<std::uint16_t>(*port);
}

ParsedExec ParseExecRequest(std::string_view body) {
  json parsed = ParseJsonObject(body);
  RejectUnknownFields(
      parsed, {"argv", "env", "cwd", "user", "stdin", "timeout_seconds", "tty", "rows", "cols"});
  ParsedExec exec;
  auto argv = parsed.find("argv");
  if (argv == parsed.end() || !argv->is_array() || argv->empty()) {
    Fail(ErrorCode::kInvalidArgument, "'argv' must be a non-empty list of strings");
  }
  for (const json& arg : *argv) {
    if (!arg.is_string()) Fail(ErrorCode::kInvalidArgument, "'argv' must hold strings only");
    exec.request.argv.push_back(arg.get<std::string>());
  }
  if (exec.request.argv[0].empty()) Fail(ErrorCode::kInvalidArgument, "'argv[0]' is empty");
  if (auto env = parsed.find("env"); env != parsed.end() && !env->is_null()) {
    if (!env->is_object()) Fail(ErrorCode::kInvalidArgument, "'env' must be an object of strings");
    for (const auto& [name, value] : env->items()) {
      if (!value.is_string()) {
        Fail(ErrorCode::kInvalidArgument, "'env.{}' must be a string", name.substr(0, 64));
      }
      exec.request.env[name] = value.get<std::string>();
    }
  }
  exec.request.cwd = OptionalText(parsed, "cwd").value_or("");
  exec.request.user = OptionalText(parsed, "user").value_or("");
  if (auto in = parsed.find("stdin"); in != parsed.end() && !in->is_null()) {
    if (in->is_boolean()) {
      exec.request.stdin_open = in->get<bool>();
    } else if (in->is_string()) {
      exec.request.stdin_open = true;
      exec.stdin_data = in->get<std::string>();
    } else {
      Fail(ErrorCode::kInvalidArgument, "'stdin' must be true, false or the input as a string");
    }
  }
  exec.request.timeout_seconds =
      OptionalInteger<std::int64_t>(parsed, "timeout_seconds", 0, 30LL * 24 * 3600).value_or(0);
  if (auto tty = parsed.find("tty"); tty != parsed.end() && !tty->is_null()) {
    if (!tty->is_boolean()) Fail(ErrorCode::kInvalidArgument, "'tty' must be true or false");
    exec.request.tty = tty->get<bool>();
  }
  exec.request.rows = OptionalInteger<std::uint16_t>(parsed, "rows", 1, 10000).value_or(24);
  exec.request.cols = OptionalInteger<std::uint16_t>(parsed, "cols", 1, 10000).value_or(80);
  return exec;
}

std::pair<std::uint16_t, std::uint16_t> ParseTerminalSize(std::string_view body) {
  json parsed = ParseJsonObject(body);
  RejectUnknownFields(parsed, {"rows", "cols"});
  auto rows = OptionalInteger<std::uint16_t>(parsed, "rows", 1, 10000);
  auto cols = OptionalInteger<std::uint16_t>(parsed, "cols", 1, 10000);
  if (!rows || !cols) Fail(ErrorCode::kInvalidArgument, "'rows' and 'cols' are required");
  return {*rows, *cols};
}

int ParseSignal(std::string_view body) {
  json parsed = ParseJsonObject(body);
  RejectUnknownFields(parsed, {"signal"});
  auto signal = parsed.find("signal");
  if (signal != parsed.end() && signal->is_number_integer()) {
    return *OptionalInteger<int>(parsed, "signal", 1, 64);
  }
  if (signal == parsed.end() || !signal->is_string()) {
    Fail(ErrorCode::kInvalidArgument, "'signal' must be a number (1-64) or a name such as TERM");
  }
  std::string name = signal->get<std::string>();
  if (name.starts_with("SIG")) name.erase(0, 3);
  static const std::map<std::string, int> kNames = {
      {"HUP", 1},   {"INT", 2},   {"QUIT", 3},  {"KILL", 9},  {"USR1", 10},
      {"USR2", 12}, {"PIPE", 13}, {"ALRM", 14}, {"TERM", 15}, {"CONT", 18},
      {"STOP", 19}, {"TSTP", 20}, {"WINCH", 28}};
  auto it = kNames.find(name);
  if (it == kNames.end()) {
    Fail(ErrorCode::kInvalidArgument, "'signal': no signal named {}", EscapeForLog(name, 20));
  }
  return it->second;
}

std::map<std::string, std::string> ParseQuery(std::string_view target,
                                              std::initializer_list<std::string_view> known) {
  std::map<std::string, std::string> query;
  const auto mark = target.find('?');
  if (mark == std::string_view::npos) return query;
  std::string_view rest = target.substr(mark + 1);
  auto decode = [](std::string_view text) {
    std::string out;
    for (std::size_t i = 0; i < text.size(); ++i) {
      if (text[i] == '+') {
        out += ' ';
      } else if (text[i] != '%') {
        out += text[i];
      } else {
        unsigned value = 0;
        const char* begin = text.data() + i + 1;
        if (i + 2 >= text.size() || std::from_chars(begin, begin + 2, value, 16).ptr != begin + 2) {
          Fail(ErrorCode::kInvalidArgument, "a bad %-escape in the query");
        }
        out += static_cast<char>(value);
        i += 2;
      }
    }
    return out;
  };
  while (!rest.empty()) {
    std::string_view pair = rest.substr(0, rest.find('&'));
    rest.remove_prefix(std::min(rest.size(), pair.size() + 1));
    if (pair.empty()) continue;
    const auto equals = pair.find('=');
    std::string name = decode(pair.substr(0, equals));
    if (std::find(known.begin(), known.end(), name) == known.end()) {
      Fail(ErrorCode::kInvalidArgument, "unknown query parameter '{}'",
           EscapeForLog(name.substr(0, 64)));
    }
    std::string value = equals == std::string_view::npos ? "" : decode(pair.substr(equals + 1));
    if (!query.emplace(std::move(name), std::move(value)).second) {
      Fail(ErrorCode::kInvalidArgument, "query parameter '{}' given twice",
           EscapeForLog(std::string(pair.substr(0, equals)).substr(0, 64)));
    }
  }
  return query;
}

mode_t ParseFileMode(std::string_view text) {
  unsigned value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value, 8);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size() || value > 07777) {
    Fail(ErrorCode::kInvalidArgument, "'mode' must be octal, 0 to 7777 (such as 0644)");
  }
  return static_cast<mode_t>(value);
}

std::uint16_t ParsePortNumber(std::string_view text) {
  unsigned value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  // from_chars takes no sign or space: digits only, and all of them.
  if (ec != std::errc() || end != text.data() + text.size() || value == 0 || value > 65535) {
    Fail(ErrorCode::kInvalidArgument, "'{}' is not a port number (1 to 65535)",
         EscapeForLog(std::string(text.substr(0, 20))));
  }
  return static_cast<std::uint16_t>(value);
}

json EventToJson(const Event& event) {
  json out = {{"seq", event.seq}, {"at", event.at}, {"type", event.kind}, {"detail", event.detail}};
  if (!event.sandbox_id.empty()) out["sandbox"] = event.sandbox_id;
  if (!event.cause.empty()) out["cause"] = event.cause;
  return out;
}

json AccessTokenToJson(const AccessToken& t) {
  auto optional_time = [](const std::optional<UnixSeconds>& at) {
    return at ? json(Iso8601(*at)) : json(nullptr);
  };
  auto optional_int = [](const std::optional<std::int64_t>& v) {
    return v ? json(*v) : json(nullptr);
  };
  return {{"id", t.id},
          {"name", t.name},
          {"enabled", t.enabled},
          {"created_at", Iso8601(t.created_at)},
          {"expires_at", optional_time(t.expires_at)},
          {"max_sandboxes", optional_int(t.max_sandboxes)},
          {"rate_per_minute", optional_int(t.rate_per_minute)},
          {"last_used_at", optional_time(t.last_used_at)}};
}

json ErrorToJson(const Error& error) {
  return {
      {"error", {{"code", std::string(ErrorCodeName(error.code()))}, {"message", error.what()}}}};
}

std::string JsonText(const json& value) {
  return value.dump(-1, ' ', false, json::error_handler_t::replace);
}

HttpResponse JsonResponse(unsigned status, const json& body) {
  namespace http = boost::beast::http;
  HttpResponse response{static_cast<http::status>(status), 11};
  response.set(http::field::content_type, "application/json");
  response.set(http::field::cache_control, "no-store");
  response.body() = JsonText(body) + "\n";
  return response;
}

bool RevealsInternals(ErrorCode code) {
  switch (code) {
    case ErrorCode::kInternal:
    case ErrorCode::kUnavailable:
    case ErrorCode::kTimeout:
    case ErrorCode::kFailedPrecondition:
    case ErrorCode::kAlreadyExists:
    case ErrorCode::kNoSpace:
      return true;
    default:
      return false;
  }
}

Error ForRemoteCaller(const Error& error) {
  std::string_view what;
  switch (error.code()) {
    case ErrorCode::kUnavailable:
      what = "a service the sandbox needs is unavailable";
      break;
    case ErrorCode::kTimeout:
      what = "the sandbox did not become ready in time";
      break;
    case ErrorCode::kFailedPrecondition:
      what = "the sandbox could not be set up";
      break;
    case ErrorCode::kAlreadyExists:
      what = "a conflicting resource exists";
      break;
    case ErrorCode::kNoSpace:
      what = "the host is out of disk space";
      break;
    default:
      what = "internal error";
  }
  return Error(error.code(), fmt::format("{} (the server's log has the details)", what));
}

unsigned HttpStatusFor(ErrorCode code) {
  switch (code) {
    case ErrorCode::kInvalidArgument:
      return 400;
    case ErrorCode::kPermissionDenied:
      return 403;
    case ErrorCode::kUnauthenticated:
      return 401;
    case ErrorCode::kNotFound:
      return 404;
    case ErrorCode::kAlreadyExists:
      return 409;
    case ErrorCode::kFailedPrecondition:
      return 409;
    case ErrorCode::kResourceExhausted:
      return 429;
    case ErrorCode::kUnavailable:
      return 503;
    case ErrorCode::kTimeout:
      return 504;
    case ErrorCode::kNoSpace:
      return 507;  // Insufficient Storage
    case ErrorCode::kInternal:
      return 500;
  }
  return 500;
}

}  // namespace ephemera
