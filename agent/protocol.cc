#include "agent/protocol.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <set>

#include "agent/error.h"
#include "agent/fields.h"
#include "agent/log.h"
#include "agent/streams.h"

namespace ephemera::agent {

using nlohmann::json;
using nlohmann::ordered_json;

namespace {

constexpr size_t kMaxHostKey = 8 * 1024;
constexpr size_t kMaxAuthorizedKey = 8 * 1024;
constexpr size_t kMaxAuthorizedKeys = 64 * 1024;
constexpr size_t kMaxPasswordHash = 512;
constexpr size_t kMinEntropy = 32;
constexpr size_t kMaxEntropy = 512;
constexpr size_t kMaxDns = 3;
constexpr std::string_view kKeyBegin = "-----BEGIN OPENSSH PRIVATE KEY-----";
constexpr std::string_view kKeyEnd = "-----END OPENSSH PRIVATE KEY-----";
constexpr std::string_view kPublicPrefix = "ssh-ed25519 ";

bool IsLowerAlnum(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }
bool IsBase64Char(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' ||
         c == '/' || c == '=';
}

std::string CheckHostname(const json& request) {
  const std::string& name = RequireString(request, "hostname", "hostname");
  if (name.empty() || name.size() > 63) throw FieldError("hostname", "must be 1-63 characters");
  if (name.front() == '-') throw FieldError("hostname", "must not start with '-'");
  if (!std::all_of(name.begin(), name.end(), [](char c) { return IsLowerAlnum(c) || c == '-'; })) {
    throw FieldError("hostname", "only a-z, 0-9 and '-' are allowed");
  }
  return name;
}

std::string CheckUser(const json& request) {
  const std::string& user = RequireString(request, "user", "user");
  bool valid = !user.empty() && user.size() <= 32 &&
               ((user[0] >= 'a' && user[0] <= 'z') || user[0] == '_') &&
               std::all_of(user.begin(), user.end(),
                           [](char c) { return IsLowerAlnum(c) || c == '_' || c == '-'; });
  if (!valid) throw FieldError("user", "must match ^[a-z_][a-z0-9_-]{0,31}$");
  return user;
}

std::string CheckPasswordHash(const json& request) {
  const std::string& hash = RequireString(request, "password_hash", "password_hash");
  if (hash.empty() || hash[0] != '$') {
    throw FieldError("password_hash", "must be a crypt(3) hash starting with '$'");
  }
  if (hash.size() > kMaxPasswordHash) throw FieldError("password_hash", "longer than 512 bytes");
  // Anything else could break /etc/shadow's lines and fields.
  if (!std::all_of(hash.begin(), hash.end(), [](char c) {
        return IsLowerAlnum(c) || (c >= 'A' && c <= 'Z') || c == '.' || c == '/' || c == '$';
      })) {
    throw FieldError("password_hash", "only A-Z, a-z, 0-9, '.', '/' and '$' are allowed");
  }
  return hash;
}

std::string CheckEntropy(const json& request) {
  std::optional<std::string> bytes = DecodeBase64(RequireString(request, "entropy", "entropy"));
  if (!bytes) throw FieldError("entropy", "not base64");
  if (bytes->size() < kMinEntropy || bytes->size() > kMaxEntropy) {
    throw FieldError("entropy",
                     "must decode to 32-512 bytes, not " + std::to_string(bytes->size()));
  }
  return std::move(*bytes);
}

// A length-prefixed string of the OpenSSH key format, advancing `data`.
std::optional<std::string_view> TakeString(std::string_view& data) {
  if (data.size() < 4) return std::nullopt;
  uint32_t length = (uint32_t{static_cast<uint8_t>(data[0])} << 24) |
                    (uint32_t{static_cast<uint8_t>(data[1])} << 16) |
                    (uint32_t{static_cast<uint8_t>(data[2])} << 8) | static_cast<uint8_t>(data[3]);
  data.remove_prefix(4);
  if (length > data.size()) return std::nullopt;
  std::string_view value = data.substr(0, length);
  data.remove_prefix(length);
  return value;
}

// The private key's public half, as it is stored in the clear at the start
// of the key ("openssh-key-v1", cipher, kdf, kdf options, key count, key).
std::string PublicBlobOf(const std::string& key) {
  std::string_view text = key;
  if (!text.empty() && text.back() == '\n') text.remove_suffix(1);
  std::vector<std::string_view> lines;
  for (size_t start = 0;;) {
    size_t end = text.find('\n', start);
    lines.push_back(text.substr(start, end == std::string_view::npos ? end : end - start));
    if (end == std::string_view::npos) break;
    start = end + 1;
  }
  if (lines.front() != kKeyBegin) {
    throw FieldError("ssh_host_key", "must start with the line " + std::string(kKeyBegin));
  }
  if (lines.size() < 3 || lines.back() != kKeyEnd) {
    throw FieldError("ssh_host_key", "must end with the line " + std::string(kKeyEnd));
  }
  std::string body;
  for (size_t i = 1; i + 1 < lines.size(); ++i) {
    if (lines[i].empty() || !std::all_of(lines[i].begin(), lines[i].end(), IsBase64Char)) {
      throw FieldError("ssh_host_key", "line " + std::to_string(i + 1) + " is not base64");
    }
    body += lines[i];
  }
  std::optional<std::string> blob = DecodeBase64(body);
  constexpr std::string_view kMagic{"openssh-key-v1\0", 15};
  if (!blob || !blob->starts_with(kMagic)) {
    throw FieldError("ssh_host_key", "not an OpenSSH private key");
  }
  std::string_view data = std::string_view(*blob).substr(kMagic.size());
  std::optional<std::string_view> cipher = TakeString(data);
  std::optional<std::string_view> kdf = TakeString(data);
  std::optional<std::string_view> kdf_options = TakeString(data);
  if (!cipher || !kdf || !kdf_options || data.size() < 4) {
    throw FieldError("ssh_host_key", "truncated OpenSSH private key");
  }
  if (*cipher != "none") {
    throw FieldError("ssh_host_key", "encrypted with " + std::string(cipher->substr(0, 32)) +
                                         "; sshd needs it unencrypted");
  }
  if (data.substr(0, 4) != std::string_view("\0\0\0\1", 4)) {
    throw FieldError("ssh_host_key", "must hold exactly one key");
  }
  data.remove_prefix(4);
  std::optional<std::string_view> public_blob = TakeString(data);
  if (!public_blob) throw FieldError("ssh_host_key", "truncated OpenSSH private key");
  return std::string(*public_blob);
}

void CheckHostKeys(const json& request, Identity& identity) {
  identity.ssh_host_key = RequireString(request, "ssh_host_key", "ssh_host_key");
  if (identity.ssh_host_key.size() > kMaxHostKey) {
    throw FieldError("ssh_host_key", "longer than 8192 bytes");
  }
  std::string private_public = PublicBlobOf(identity.ssh_host_key);

  identity.ssh_host_key_public =
      RequireString(request, "ssh_host_key_public", "ssh_host_key_public");
  const std::string& line = identity.ssh_host_key_public;
  std::optional<std::string> blob;
  if (line.starts_with(kPublicPrefix)) blob = DecodeBase64(line.substr(kPublicPrefix.size()));
  if (!blob) {
    throw FieldError("ssh_host_key_public", "must be \"ssh-ed25519 \" and base64, nothing else");
  }
  constexpr std::string_view kEd25519Blob{"\0\0\0\x0bssh-ed25519", 15};
  if (!blob->starts_with(kEd25519Blob)) {
    throw FieldError("ssh_host_key_public", "not an ed25519 key");
  }
  if (*blob != private_public)
    throw FieldError("ssh_host_key_public", "does not match ssh_host_key");
}

std::vector<std::string> CheckAuthorizedKeys(const json& request) {
  std::vector<std::string> keys;
  const json* list = Find(request, "authorized_keys");
  if (list == nullptr) return keys;
  if (!list->is_array()) throw FieldError("authorized_keys", "must be a list of strings");
  size_t total = 0;
  for (size_t i = 0; i < list->size(); ++i) {
    std::string name = "authorized_keys[" + std::to_string(i) + "]";
    const json& key = (*list)[i];
    if (!key.is_string()) throw FieldError(name, "must be a string");
    const std::string& line = key.get_ref<const std::string&>();
    if (line.empty()) throw FieldError(name, "empty");
    if (line.size() > kMaxAuthorizedKey) throw FieldError(name, "longer than 8192 bytes");
    // Printable ASCII only: no newline could smuggle in a second key.
    if (!std::all_of(line.begin(), line.end(), [](char c) { return c >= 0x20 && c < 0x7f; })) {
      throw FieldError(name, "only printable ASCII characters are allowed");
    }
    total += line.size();
    if (total > kMaxAuthorizedKeys) {
      throw FieldError("authorized_keys", "more than 64 KiB together");
    }
    keys.push_back(line);
  }
  return keys;
}

in_addr CheckIpv4(const json& object, const std::string& name, const char* field) {
  const std::string& text = RequireString(object, name, field);
  in_addr address;
  if (::inet_pton(AF_INET, text.c_str(), &address) != 1) {
    throw FieldError(name, "must be a dotted IPv4 address");
  }
  return address;
}

std::optional<Network> CheckNetwork(const json& request) {
  const json* object = Find(request, "network");
  if (object == nullptr) return std::nullopt;
  if (!object->is_object()) throw FieldError("network", "must be an object");
  RefuseUnknownFields(*object, {"mac", "address", "prefix", "gateway", "dns"}, "network.");
  Network network;
  const std::string& mac = RequireString(*object, "network.mac", "mac");
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  bool valid_mac = mac.size() == 17;
  for (size_t i = 0; valid_mac && i < 6; ++i) {
    int high = hex(mac[3 * i]), low = hex(mac[3 * i + 1]);
    valid_mac = high >= 0 && low >= 0 && (i == 5 || mac[3 * i + 2] == ':');
    network.mac[i] = static_cast<uint8_t>(high * 16 + low);
  }
  if (!valid_mac) throw FieldError("network.mac", "must be like aa:bb:cc:dd:ee:ff");
  if ((network.mac[0] & 1) != 0 ||
      std::all_of(network.mac.begin(), network.mac.end(), [](uint8_t b) { return b == 0; })) {
    throw FieldError("network.mac", "must be a unicast address");
  }
  network.address = CheckIpv4(*object, "network.address", "address");
  network.prefix = static_cast<int>(RequireInteger(*object, "network.prefix", "prefix", 1, 32));
  if (Find(*object, "gateway") != nullptr) {
    network.gateway = CheckIpv4(*object, "network.gateway", "gateway");
    uint32_t mask = htonl(~uint32_t{0} << (32 - network.prefix));
    if (((network.gateway->s_addr ^ network.address.s_addr) & mask) != 0 ||
        network.gateway->s_addr == network.address.s_addr) {
      throw FieldError("network.gateway", "must be another address inside network.address/prefix");
    }
  }
  if (const json* dns = Find(*object, "dns")) {
    if (!dns->is_array()) throw FieldError("network.dns", "must be a list of strings");
    if (dns->size() > kMaxDns) throw FieldError("network.dns", "at most 3 servers");
    for (size_t i = 0; i < dns->size(); ++i) {
      std::string name = "network.dns[" + std::to_string(i) + "]";
      in_addr server;
      const json& entry = (*dns)[i];
      if (!entry.is_string() ||
          ::inet_pton(AF_INET, entry.get_ref<const std::string&>().c_str(), &server) != 1) {
        throw FieldError(name, "must be a dotted IPv4 address");
      }
      network.dns.push_back(entry.get<std::string>());
    }
  }
  return network;
}

// Same time whatever the input, so that answers do not tell how much of a
// guessed token was right.
bool SameToken(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  unsigned char difference = 0;
  for (size_t i = 0; i < a.size(); ++i) difference |= static_cast<unsigned char>(a[i] ^ b[i]);
  return difference == 0;
}

ordered_json Failure(const json& id, std::string_view error) {
  return ordered_json{{"id", id}, {"ok", false}, {"error", error}};
}

}  // namespace

std::optional<std::string> DecodeBase64(std::string_view text) {
  if (text.size() % 4 != 0) return std::nullopt;
  auto value = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
  };
  std::string out;
  out.reserve(text.size() / 4 * 3);
  for (size_t i = 0; i < text.size(); i += 4) {
    bool last = i + 4 == text.size();
    int padding = 0;
    if (last && text[i + 3] == '=') padding = text[i + 2] == '=' ? 2 : 1;
    uint32_t group = 0;
    for (int j = 0; j < 4; ++j) {
      int v = j >= 4 - padding ? 0 : value(text[i + j]);
      if (v < 0) return std::nullopt;
      group = (group << 6) | static_cast<uint32_t>(v);
    }
    out.push_back(static_cast<char>(group >> 16));
    if (padding < 2) out.push_back(static_cast<char>(group >> 8));
    if (padding < 1) out.push_back(static_cast<char>(group));
  }
  return out;
}

bool IsToken(std::string_view text) {
  return text.size() == kTokenLength && std::all_of(text.begin(), text.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

Identity ParseIdentity(const json& request) {
  RefuseUnknownFields(
      request,
      {"id", "op", "hostname", "time_ns", "entropy", "ssh_host_key", "ssh_host_key_public", "user",
       "password_hash", "authorized_keys", "ssh_port", "network", "agent_token"},
      "");
  Identity identity;
  identity.hostname = CheckHostname(request);
  identity.time_ns =
      RequireInteger(request, "time_ns", "time_ns", 1, std::numeric_limits<int64_t>::max());
  identity.entropy = CheckEntropy(request);
  CheckHostKeys(request, identity);
  identity.user = CheckUser(request);
  identity.password_hash = CheckPasswordHash(request);
  identity.authorized_keys = CheckAuthorizedKeys(request);
  identity.ssh_port =
      static_cast<uint16_t>(RequireInteger(request, "ssh_port", "ssh_port", 1, 65535));
  identity.network = CheckNetwork(request);
  if (Find(request, "agent_token") != nullptr) {
    const std::string& token = RequireString(request, "agent_token", "agent_token");
    if (!IsToken(token)) throw FieldError("agent_token", "must be 64 lowercase hex characters");
    identity.agent_token = token;
  }
  return identity;
}

Preparation ParsePreparation(const json& request) {
  RefuseUnknownFields(
      request, {"id", "op", "ssh_host_key", "ssh_host_key_public", "ssh_port", "allow_users"}, "");
  Identity keys;
  CheckHostKeys(request, keys);
  Preparation preparation;
  preparation.ssh_host_key = std::move(keys.ssh_host_key);
  preparation.ssh_host_key_public = std::move(keys.ssh_host_key_public);
  preparation.ssh_port =
      static_cast<uint16_t>(RequireInteger(request, "ssh_port", "ssh_port", 1, 65535));
  const std::string& pattern = RequireString(request, "allow_users", "allow_users");
  if (pattern.empty() || pattern.size() > 64 ||
      !std::all_of(pattern.begin(), pattern.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '*' ||
               c == '?' || c == '-';
      })) {
    throw FieldError("allow_users", "must be 1 to 64 of [a-z0-9_*?-]");
  }
  preparation.allow_users = pattern;
  return preparation;
}

Session::Session(std::string token, Machine& machine, Streams* streams)
    : token_(std::move(token)), machine_(machine), streams_(streams) {}

void Session::HostDisconnected() {
  authenticated_ = false;
  if (streams_ != nullptr) streams_->CloseAll();
}

std::string Session::OverlongAnswer() {
  return Failure(nullptr, "request: line longer than " + std::to_string(kMaxLine) + " bytes")
      .dump();
}

namespace {

// A request whose first field is a long base64 "data" (input, which the
// host sends with its keys sorted): the JSON parser would take that string
// a character at a time, slow in a guest without KVM. Base64 needs no
// escapes, so the string is cut out and the rest parsed as usual.
json ParseRequest(std::string_view line) {
  constexpr std::string_view kData = R"({"data":")";
  if (line.starts_with(kData)) {
    const size_t close = line.find('"', kData.size());
    if (close != std::string_view::npos && close + 1 < line.size() && line[close + 1] == ',') {
      std::string_view data = line.substr(kData.size(), close - kData.size());
      if (data.find('\\') == std::string_view::npos) {
        json rest = json::parse("{" + std::string(line.substr(close + 2)), nullptr, false);
        if (!rest.is_discarded() && rest.is_object() && !rest.contains("data")) {
          rest["data"] = std::string(data);
          return rest;
        }
      }
    }
  }
  return json::parse(line, nullptr, /*allow_exceptions=*/false);
}

}  // namespace

std::string Session::Answer(std::string_view line) {
  json request = ParseRequest(line);
  if (request.is_discarded()) return Failure(nullptr, "request: not valid JSON").dump();
  if (!request.is_object()) return Failure(nullptr, "request: must be a JSON object").dump();
  auto id = request.find("id");
  if (id == request.end() || !id->is_number_unsigned()) {
    return Failure(nullptr, "id: must be an unsigned integer").dump();
  }
  auto op = request.find("op");
  if (op == request.end() || !op->is_string()) return Failure(*id, "op: must be a string").dump();
  try {
    ordered_json answer{{"id", *id}, {"ok", true}};
    ordered_json fields = Dispatch(request, op->get<std::string>());
    for (auto& [key, value] : fields.items()) answer[key] = std::move(value);
    return answer.dump();
  } catch (const FieldError& e) {  // the request's fault ("code" from protocol 3 on)
    ordered_json failure = Failure(*id, e.what());
    failure["code"] = "invalid";
    return failure.dump();
  } catch (const NotFoundError& e) {
    ordered_json failure = Failure(*id, e.what());
    failure["code"] = "not_found";
    return failure.dump();
  } catch (const std::runtime_error& e) {  // AgentError and refusals: the message as is
    return Failure(*id, e.what()).dump();
  } catch (const std::exception& e) {
    return Failure(*id, std::string(op->get<std::string>()) + ": " + e.what()).dump();
  }
}

ordered_json Session::Dispatch(const json& request, const std::string& op) {
  if (op == "hello") {
    const json* token = Find(request, "token");
    // A missing, malformed or wrong token: all the same "not authenticated".
    authenticated_ = token != nullptr && token->is_string() &&
                     SameToken(token->get_ref<const std::string&>(), token_);
    if (!authenticated_) throw std::runtime_error("not authenticated");
    return ordered_json{{"protocol", kProtocolVersion}};
  }
  if (!authenticated_) throw std::runtime_error("not authenticated");
  if (op == "ping") return ordered_json::object();
  if (streams_ != nullptr && Streams::Handles(op)) {
    return streams_->Handle(request["id"].get<uint64_t>(), op, request);
  }
  if (op == "clock") {
    RefuseUnknownFields(request, {"id", "op", "time_ns"}, "");
    machine_.SetClock(
        RequireInteger(request, "time_ns", "time_ns", 1, std::numeric_limits<int64_t>::max()));
    return ordered_json::object();
  }
  if (op == "prepare") {
    if (identity_applied_) throw std::runtime_error("identity already applied");
    if (prepared_) throw std::runtime_error("already prepared");
    Preparation preparation = ParsePreparation(request);
    prepared_ = true;  // half done stays done, as for an identity
    return machine_.Prepare(preparation);
  }
  if (op == "identity") {
    if (identity_applied_) throw std::runtime_error("identity already applied");
    try {
      Identity identity = ParseIdentity(request);
      // Whatever happens from here on stays done: a second try would find
      // the machine half set up.
      identity_applied_ = true;
      try {
        ordered_json answer = machine_.ApplyIdentity(identity);
        // Only the daemon that knows the sandbox's own token talks to it from now on.
        if (identity.agent_token) token_ = *identity.agent_token;
        return answer;
      } catch (const FieldError&) {
        identity_applied_ = false;  // refused before any change
        throw;
      }
    } catch (const std::exception& e) {
      // Also on the console: the serial log is what outlives the sandbox.
      LogError(std::string("identity refused: ") + e.what());
      throw;
    }
  }
  throw FieldError("op", "unknown operation \"" + op.substr(0, 32) + "\"");
}

}  // namespace ephemera::agent
