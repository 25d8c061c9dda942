// The /v1 JSON wire format: request bodies parsed strictly (types checked,
// unknown fields rejected, sizes bounded) and records rendered the same way
// for every front door and the CLI.
#pragma once

#include <sys/types.h>

#include <map>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "api/http_server.h"
#include "core/error.h"
#include "engine/engine.h"

namespace ephemera {

inline constexpr std::size_t kMaxRequestBody = 64 * 1024;
inline constexpr int kMaxJsonDepth = 32;

// POST /v1/sandboxes body: {"image"?, "memory_mib"?, "vcpus"?, "ttl_seconds"?}.
// An empty body means all defaults. kInvalidArgument naming the field.
CreateRequest ParseCreateRequest(std::string_view body);

// A sandbox as GET returns it: never a password or token.
nlohmann::json SandboxToJson(const Sandbox& sandbox, const std::string& host);
// The create answer: the record plus password, token and host key, once.
nlohmann::json CreateResultToJson(const CreateResult& result, const std::string& host);
// POST /v1/images body: {"name", "kernel", "rootfs", "headroom_mib"?}, the
// references as `ephemera image pull` takes them. kInvalidArgument naming the field.
ImageImport ParseImageImport(std::string_view body);

// One entry of GET /v1/images: what the image is, or why it cannot be used.
nlohmann::json ImageEntryToJson(const ImageCatalog::Entry& entry);
// GET /v1/images/{name} (`image inspect`): the entry plus its files, sources and users.
nlohmann::json ImageDetailsToJson(const ImageDetails& details);

// POST /v1/tokens body: {"name"?, "expires_in_seconds"?, "max_sandboxes"?, "rate_per_minute"?}.
NewAccessToken ParseNewAccessToken(std::string_view body);
// PATCH /v1/tokens/{id} body: {"enabled": bool}.
bool ParseTokenEnabled(std::string_view body);
// PATCH /v1/sandboxes/{id}: {"ttl_seconds": N} (optional: the default TTL).
std::optional<std::int64_t> ParseLifetimeChange(std::string_view body);
// POST /v1/sandboxes/{id}/ports: {"guest_port": 1-65535}.
std::uint16_t ParsePortExposure(std::string_view body);
// A port number in a path ("8080"): kInvalidArgument unless 1-65535, digits only.
std::uint16_t ParsePortNumber(std::string_view text);
// POST /v1/sandboxes/{id}/exec body: {"argv", "env"?, "cwd"?, "user"?,
// "stdin"? (false: none; true: streamed by .../stdin; a string: all of it),
// "timeout_seconds"?, "tty"?, "rows"?, "cols"?}.
struct ParsedExec {
  ExecRequest request;
  std::optional<std::string> stdin_data;  // "stdin" given as a string
};
ParsedExec ParseExecRequest(std::string_view body);
// POST .../exec/{exec}/resize: {"rows", "cols"}, each 1-10000.
std::pair<std::uint16_t, std::uint16_t> ParseTerminalSize(std::string_view body);
// POST .../exec/{exec}/signal: {"signal": 1-64 or a name ("TERM", "SIGKILL")}.
int ParseSignal(std::string_view body);

// A request target's query ("?path=%2Fetc&x=1") decoded; kInvalidArgument
// for a bad escape, a repeated or unknown name.
std::map<std::string, std::string> ParseQuery(std::string_view target,
                                              std::initializer_list<std::string_view> known);
// A file mode in octal ("0644", "755"): kInvalidArgument past 07777.
mode_t ParseFileMode(std::string_view text);

// An event of the log as /v1/events and the hooks give it:
// {"seq", "at", "type", "sandbox"?, "detail", "cause"?}.
nlohmann::json EventToJson(const Event& event);

// A token as GET returns it: never the secret or its hash.
nlohmann::json AccessTokenToJson(const AccessToken& token);

// The body as a JSON object (empty: {}); kInvalidArgument otherwise.
nlohmann::json ParseJsonObject(std::string_view body);

nlohmann::json ErrorToJson(const Error& error);
// Whether an error's message may carry the host's internals (paths, a
// program's stderr, guest output): kInternal, kUnavailable, kTimeout,
// kFailedPrecondition, kAlreadyExists, kNoSpace.
bool RevealsInternals(ErrorCode code);
// The same error with a message fit for a remote caller: what kind of
// failure it is, and that the daemon's log has the rest.
Error ForRemoteCaller(const Error& error);
// `value` as one line of JSON; bytes that are not UTF-8 (a request's, a
// guest's) are replaced rather than thrown on.
std::string JsonText(const nlohmann::json& value);
// An HTTP answer with `body` as JSON, never cached. Bytes that are not
// UTF-8 (echoed from a request) are replaced rather than thrown on.
HttpResponse JsonResponse(unsigned status, const nlohmann::json& body);
unsigned HttpStatusFor(ErrorCode code);

}  // namespace ephemera
