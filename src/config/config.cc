#include "config/config.h"

#include <yaml-cpp/yaml.h>

#include <arpa/inet.h>

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <functional>
#include <map>
#include <set>
#include <vector>

#include "core/error.h"
#include "core/event_types.h"
#include "core/fs.h"

namespace ephemera {

std::string_view AccelName(Accel accel) {
  switch (accel) {
    case Accel::kAuto:
      return "auto";
    case Accel::kKvm:
      return "kvm";
    case Accel::kTcg:
      return "tcg";
  }
  return "?";
}

std::string_view MachineTypeName(MachineType machine) {
  return machine == MachineType::kMicrovm ? "microvm" : "q35";
}

namespace {

// Walks one YAML mapping, remembering which keys were read so that the
// rest can be reported as unknown.
//
// With `keys`, every key read is also recorded there as ConfigKeys() lists
// it: a list's items as KEY[], a map's entries as KEY.<name>.
class Section {
 public:
  Section(const YAML::Node& node, std::string path, std::vector<std::string>* keys = nullptr,
          std::string doc_path = "")
      : node_(node), path_(std::move(path)), keys_(keys), doc_path_(std::move(doc_path)) {
    if (node_ && !node_.IsNull() && !node_.IsMap()) {
      Fail(ErrorCode::kInvalidArgument, "config key '{}': expected a mapping", Display());
    }
  }

  // Records this mapping's keys as one placeholder (hooks.on.<event>).
  void RecordKeysAs(std::string placeholder) { doc_key_ = std::move(placeholder); }

  std::string KeyPath(std::string_view key) const {
    return path_.empty() ? std::string(key) : fmt::format("{}.{}", path_, key);
  }

  // Leaves `out` at its default and returns false when the key is absent.
  template <typename T>
  bool Read(std::string_view key, T& out) {
    YAML::Node value = Take(key);
    if (!value) return false;
    if (!value.IsScalar())
      Fail(ErrorCode::kInvalidArgument, "config key '{}': expected a scalar", KeyPath(key));
    try {
      out = value.as<T>();
    } catch (const YAML::Exception&) {
      Fail(ErrorCode::kInvalidArgument, "config key '{}': '{}' is not a valid {}", KeyPath(key),
           value.Scalar(), TypeName<T>());
    }
    return true;
  }

  void ReadUnsigned(std::string_view key, unsigned& out, unsigned min, unsigned max) {
    YAML::Node value = Take(key);
    if (!value) return;
    long long parsed = 0;
    try {
      if (!value.IsScalar()) throw YAML::Exception(YAML::Mark(), "");
      parsed = value.as<long long>();
    } catch (const YAML::Exception&) {
      Fail(ErrorCode::kInvalidArgument, "config key '{}': expected an integer", KeyPath(key));
    }
    if (parsed < min || parsed > max) {
      Fail(ErrorCode::kInvalidArgument, "config key '{}': {} is out of range [{}, {}]",
           KeyPath(key), parsed, min, max);
    }
    out = static_cast<unsigned>(parsed);
  }

  template <typename Enum>
  void ReadEnum(std::string_view key, Enum& out, const std::map<std::string, Enum>& choices) {
    std::string text;
    if (!Read(key, text)) return;
    auto it = choices.find(text);
    if (it == choices.end()) {
      std::string names;
      for (const auto& [name, _] : choices) names += (names.empty() ? "" : ", ") + name;
      Fail(ErrorCode::kInvalidArgument, "config key '{}': '{}' is not one of {}", KeyPath(key),
           text, names);
    }
    out = it->second;
  }

  // Reads a sequence of scalars; false if the key is absent.
  bool ReadList(std::string_view key, std::vector<std::string>& out) {
    YAML::Node value = Take(key);
    if (!value) return false;
    if (!value.IsSequence()) {
      Fail(ErrorCode::kInvalidArgument, "config key '{}': expected a list", KeyPath(key));
    }
    for (const auto& item : value) {
      if (!item.IsScalar())
        Fail(ErrorCode::kInvalidArgument, "config key '{}': expected a list of scalars",
             KeyPath(key));
      out.push_back(item.Scalar());
    }
    return true;
  }

  Section Child(std::string_view key) {
    return Section(TakeSection(key), KeyPath(key), keys_, DocPath(key));
  }

  // A list of mappings, each a Section of its own (KEY[0], KEY[1], ...).
  std::vector<Section> ChildList(std::string_view key) {
    YAML::Node value = TakeSection(key);
    std::vector<Section> out;
    if (!value) return out;
    if (!value.IsSequence()) {
      Fail(ErrorCode::kInvalidArgument, "config key '{}': expected a list", KeyPath(key));
    }
    for (std::size_t i = 0; i < value.size(); ++i) {
      out.emplace_back(value[i], fmt::format("{}[{}]", KeyPath(key), i), keys_,
                       DocPath(key) + "[]");
      if (!value[i].IsMap()) {
        Fail(ErrorCode::kInvalidArgument, "config key '{}[{}]': expected a mapping", KeyPath(key),
             i);
      }
    }
    return out;
  }

  // The keys of a mapping whose keys are names (images: NAME: {...}).
  std::vector<std::pair<std::string, Section>> ChildMap(std::string_view key) {
    YAML::Node value = TakeSection(key);
    std::vector<std::pair<std::string, Section>> out;
    if (!value) return out;
    if (!value.IsMap()) {
      Fail(ErrorCode::kInvalidArgument, "config key '{}': expected a mapping", KeyPath(key));
    }
    for (const auto& entry : value) {
      const std::string name = entry.first.as<std::string>();
      if (!entry.second.IsMap()) {
        Fail(ErrorCode::kInvalidArgument, "config key '{}.{}': expected a mapping", KeyPath(key),
             name);
      }
      out.emplace_back(
          name, Section(entry.second, KeyPath(key) + "." + name, keys_, DocPath(key) + ".<name>"));
    }
    return out;
  }

  // Throws for any key that nobody read.
  void RejectUnknown() const {
    if (!node_ || !node_.IsMap()) return;
    for (const auto& entry : node_) {
      auto key = entry.first.as<std::string>();
      if (!read_.count(key))
        Fail(ErrorCode::kInvalidArgument, "config key '{}' is unknown", KeyPath(key));
    }
  }

 private:
  template <typename T>
  static constexpr std::string_view TypeName() {
    if constexpr (std::is_same_v<T, bool>) return "boolean";
    if constexpr (std::is_integral_v<T>) return "integer";
    return "string";
  }
  std::string Display() const { return path_.empty() ? "<top>" : path_; }
  std::string DocPath(std::string_view key) const {
    std::string_view shown = doc_key_.empty() ? key : std::string_view(doc_key_);
    return doc_path_.empty() ? std::string(shown) : fmt::format("{}.{}", doc_path_, shown);
  }
  // A key that holds a value (not a section of its own).
  YAML::Node Take(std::string_view key) {
    if (keys_) {
      std::string path = DocPath(key);
      if (std::find(keys_->begin(), keys_->end(), path) == keys_->end()) keys_->push_back(path);
    }
    return TakeSection(key);
  }
  YAML::Node TakeSection(std::string_view key) {
    read_.insert(std::string(key));
    if (!node_ || !node_.IsMap()) return YAML::Node(YAML::NodeType::Undefined);
    YAML::Node value = node_[std::string(key)];
    if (value && value.IsNull()) return YAML::Node(YAML::NodeType::Undefined);
    return value;
  }

  YAML::Node node_;
  std::string path_;
  std::set<std::string> read_;
  std::vector<std::string>* keys_;
  std::string doc_path_;
  std::string doc_key_;
};

void ReadPath(Section& section, std::string_view key, std::filesystem::path& out) {
  std::string text = out.string();
  section.Read(key, text);
  if (text.empty() || text[0] != '/') {
    Fail(ErrorCode::kInvalidArgument, "config key '{}': '{}' must be an absolute path",
         section.KeyPath(key), text);
  }
  out = text;
}

void CheckGroupName(std::string_view key, const std::string& group) {
  if (group.empty() || group.size() > 64 || group.find_first_of(": \t\n/") != std::string::npos) {
    Fail(ErrorCode::kInvalidArgument, "config key '{}': '{}' is not a group name", key,
         group.substr(0, 64));
  }
}

void ReadChoice(Section& section, std::string_view key, std::string& out,
                const std::vector<std::string>& choices) {
  std::map<std::string, std::string> map;
  for (const auto& c : choices) map.emplace(c, c);
  section.ReadEnum(key, out, map);
}

// Parses through `parse` (which throws Error), re-raising with the key named.
template <typename T, typename Parser>
T ParseValue(const Section& section, std::string_view key, const std::string& text, Parser parse) {
  try {
    return parse(text);
  } catch (const Error& e) {
    Fail(ErrorCode::kInvalidArgument, "config key '{}': {}", section.KeyPath(key), e.what());
  }
}

void ReadNetwork(Section& section, NetworkConfig& out) {
  std::string pool = out.pool.str();
  section.Read("pool", pool);
  out.pool = ParseValue<Ipv4Cidr>(section, "pool", pool, Ipv4Cidr::Parse);
  if (out.pool.prefix > 30) {
    Fail(ErrorCode::kInvalidArgument, "config key '{}': {} is too small to hold a /30",
         section.KeyPath("pool"), pool);
  }
  std::vector<std::string> dns;
  if (section.ReadList("dns_servers", dns)) {
    out.dns_servers.clear();
    for (const auto& d : dns)
      out.dns_servers.push_back(ParseValue<Ipv4>(section, "dns_servers", d, Ipv4::Parse));
  }
  section.Read("outbound_nat", out.outbound_nat);
  std::vector<std::string> nat_allow;
  if (section.ReadList("nat_allow", nat_allow)) {
    out.nat_allow.clear();
    for (const auto& c : nat_allow)
      out.nat_allow.push_back(ParseValue<Ipv4Cidr>(section, "nat_allow", c, Ipv4Cidr::Parse));
  }
  section.Read("dnsmasq_binary", out.dnsmasq_binary);
  section.Read("bridge", out.bridge);
  section.Read("forward_address", out.forward_address);
  ParseValue<Ipv4>(section, "forward_address", out.forward_address, Ipv4::Parse);
  std::string ports = fmt::format("{}-{}", out.forward_port_first, out.forward_port_last);
  section.Read("forward_ports", ports);
  unsigned first = 0, last = 0;
  char dash = 0, extra = 0;
  if (std::sscanf(ports.c_str(), "%u%c%u%c", &first, &dash, &last, &extra) != 3 || dash != '-' ||
      first == 0 || last > 65535) {
    Fail(ErrorCode::kInvalidArgument,
         "config key '{}': '{}' is not a port range FIRST-LAST (1-65535)",
         section.KeyPath("forward_ports"), ports);
  }
  if (first > last) {
    Fail(ErrorCode::kInvalidArgument, "config key '{}': range '{}' is reversed",
         section.KeyPath("forward_ports"), ports);
  }
  out.forward_port_first = static_cast<std::uint16_t>(first);
  out.forward_port_last = static_cast<std::uint16_t>(last);
  section.ReadUnsigned("forward_connections_per_source", out.forward_connections_per_source, 1,
                       100000);
}

void ReadListen(Section& section, std::string_view key, std::optional<ListenAddress>& out) {
  std::string text;
  if (!section.Read(key, text) || text.empty()) return;
  out = ParseValue<ListenAddress>(section, key, text, ListenAddress::Parse);
}

void ReadRemote(Section& section, RemoteConfig& out) {
  ReadListen(section, "listen", out.listen);
  std::string certificate, key;
  section.Read("tls_certificate", certificate);
  section.Read("tls_key", key);
  for (auto [name, text] : {std::pair{"tls_certificate", &certificate}, {"tls_key", &key}}) {
    if (!text->empty() && (*text)[0] != '/') {
      Fail(ErrorCode::kInvalidArgument, "config key '{}': '{}' must be an absolute path",
           section.KeyPath(name), *text);
    }
  }
  if (certificate.empty() != key.empty()) {
    Fail(ErrorCode::kInvalidArgument,
         "config key '{}': tls_certificate and tls_key go together (or neither, for a "
         "self-signed pair)",
         section.KeyPath(certificate.empty() ? "tls_key" : "tls_certificate"));
  }
  out.tls_certificate = certificate;
  out.tls_key = key;
  section.Read("insecure_http", out.insecure_http);
  section.Read("access_tokens", out.access_tokens);
  section.ReadList("allow", out.allow);
  section.ReadList("deny", out.deny);
  section.ReadUnsigned("rate_limit_per_minute", out.rate_limit_per_minute, 1, 10000000);
  section.ReadUnsigned("rate_limit_burst", out.rate_limit_burst, 1, 1000000);
  section.ReadUnsigned("max_connections", out.max_connections, 1, 100000);
  section.ReadUnsigned("max_connections_per_address", out.max_connections_per_address, 1, 100000);
}

void ReadAnweddol(Section& section, AnweddolConfig& out) {
  ReadListen(section, "listen", out.listen);
  ReadListen(section, "web_listen", out.web_listen);
  section.Read("web_tls", out.web_tls);
  section.Read("one_time_keys", out.one_time_keys);
  section.ReadUnsigned("rsa_bits", out.rsa_bits, 2048, 16384);
  std::string kind(KindName(out.kind));
  if (section.Read("kind", kind)) {
    try {
      out.kind = ParseKind(kind);
    } catch (const Error& e) {
      throw e.WithContext("config key '" + section.KeyPath("kind") + "'");
    }
  }
}

void ReadOptionalPath(Section& section, std::string_view key, std::filesystem::path& out) {
  std::string text;
  if (!section.Read(key, text)) return;
  if (text.empty() || text[0] != '/') {
    Fail(ErrorCode::kInvalidArgument, "config key '{}': '{}' must be an absolute path",
         section.KeyPath(key), text);
  }
  out = text;
}

void ReadRegistries(Section& top, std::vector<RegistryEntry>& out) {
  std::set<std::string> seen;
  for (Section& entry : top.ChildList("registries")) {
    RegistryEntry r;
    entry.Read("host", r.host);
    // HOST[:PORT] as a docker:// reference names it: no scheme, no path.
    const bool ok = !r.host.empty() && r.host.find_first_of("/@ \t") == std::string::npos &&
                    r.host.find("://") == std::string::npos;
    if (!ok) {
      Fail(ErrorCode::kInvalidArgument, "config key '{}': '{}' is not HOST[:PORT]",
           entry.KeyPath("host"), r.host);
    }
    if (!seen.insert(r.host).second) {
      Fail(ErrorCode::kInvalidArgument, "config key '{}': registry {} is listed twice",
           entry.KeyPath("host"), r.host);
    }
    entry.Read("insecure", r.insecure);
    ReadOptionalPath(entry, "ca_file", r.ca_file);
    ReadOptionalPath(entry, "credentials_file", r.credentials_file);
    if (r.insecure && !r.ca_file.empty()) {
      Fail(ErrorCode::kInvalidArgument,
           "config key '{}': an insecure (plain HTTP) registry has no use for a ca_file",
           entry.KeyPath("ca_file"));
    }
    entry.RejectUnknown();
    out.push_back(std::move(r));
  }
}

void ReadPools(Section& top, const Config& config, std::vector<PoolEntry>& out) {
  std::set<std::tuple<std::string, unsigned, unsigned>> seen;
  for (Section& entry : top.ChildList("pool")) {
    PoolEntry p;
    // The image itself is checked when the daemon starts the pool.
    entry.Read("image", p.image);
    entry.ReadUnsigned("memory_mib", p.memory_mib, 128, config.limits.max_memory_mib);
    entry.ReadUnsigned("vcpus", p.vcpus, 1, config.limits.max_vcpus);
    entry.ReadUnsigned("size", p.size, 0, 64);
    entry.RejectUnknown();
    if (!seen.insert({p.image, p.memory_mib, p.vcpus}).second) {
      Fail(ErrorCode::kInvalidArgument,
           "config key '{}': a pool of image '{}', {} MiB, {} vCPUs is listed twice",
           entry.KeyPath("image"), p.image, p.memory_mib, p.vcpus);
    }
    out.push_back(p);
  }
}

void ReadImages(Section& top, std::map<std::string, ImageSource>& out) {
  for (auto& [name, entry] : top.ChildMap("images")) {
    ImageSource source;
    if (!entry.Read("rootfs", source.rootfs) || source.rootfs.empty()) {
      Fail(ErrorCode::kInvalidArgument, "config key '{}': an image needs a rootfs reference",
           entry.KeyPath("rootfs"));
    }
    // Without one, the rootfs boots the kernel it carries.
    if (entry.Read("kernel", source.kernel) && source.kernel.empty()) {
      Fail(ErrorCode::kInvalidArgument,
           "config key '{}': an empty kernel reference (leave it out for the rootfs's own)",
           entry.KeyPath("kernel"));
    }
    entry.ReadUnsigned("headroom_mib", source.headroom_mib, 0, 1u << 20);
    entry.RejectUnknown();
    out.emplace(name, std::move(source));
  }
}

void ReadHooks(Section& hooks, HooksConfig& out) {
  Section on = hooks.Child("on");
  on.RecordKeysAs("<event>");
  std::vector<std::string_view> types(event_type::kAll.begin(), event_type::kAll.end());
  types.push_back("*");
  for (std::string_view type : types) {
    std::vector<std::string> paths;
    if (!on.ReadList(type, paths)) continue;
    for (const std::string& path : paths) {
      if (path.empty() || path[0] != '/') {
        Fail(ErrorCode::kInvalidArgument, "config key '{}': '{}' must be an absolute path",
             on.KeyPath(type), path.substr(0, 200));
      }
      out.on[std::string(type)].push_back(path);
    }
  }
  on.RejectUnknown();
  hooks.ReadUnsigned("timeout_seconds", out.timeout_seconds, 1, 3600);
  hooks.ReadUnsigned("max_running", out.max_running, 1, 256);
  hooks.ReadUnsigned("max_queued", out.max_queued, 1, 1u << 20);
  ReadOptionalPath(hooks, "before_create", out.before_create);
  hooks.ReadUnsigned("before_create_timeout_seconds", out.before_create_timeout_seconds, 1, 600);
  hooks.RejectUnknown();
}

}  // namespace

std::string ListenAddress::str() const {
  if (address.find(':') != std::string::npos) return fmt::format("[{}]:{}", address, port);
  return fmt::format("{}:{}", address, port);
}

ListenAddress ListenAddress::Parse(std::string_view text) {
  auto bad = [&](std::string_view why) {
    Fail(ErrorCode::kInvalidArgument, "'{}' is not ADDR:PORT ({})", text.substr(0, 80), why);
  };
  ListenAddress out;
  std::string_view port_text;
  if (!text.empty() && text[0] == '[') {
    auto close = text.find("]:");
    if (close == std::string_view::npos) bad("an IPv6 address goes in brackets: [::1]:8443");
    out.address = std::string(text.substr(1, close - 1));
    port_text = text.substr(close + 2);
    struct in6_addr v6;
    if (inet_pton(AF_INET6, out.address.c_str(), &v6) != 1) bad("not an IPv6 address");
  } else {
    auto colon = text.rfind(':');
    if (colon == std::string_view::npos) bad("no port");
    out.address = std::string(text.substr(0, colon));
    port_text = text.substr(colon + 1);
    struct in_addr v4;
    if (inet_pton(AF_INET, out.address.c_str(), &v4) != 1) bad("not a numeric IPv4 address");
  }
  unsigned port = 0;
  auto [end, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (ec != std::errc() || end != port_text.data() + port_text.size() || port_text.empty() ||
      port > 65535) {
    bad("the port must be 0 to 65535");
  }
  out.port = static_cast<std::uint16_t>(port);
  return out;
}

namespace {

// ParseConfig; with `keys`, also records every key it reads (ConfigKeys).
Config ParseWithKeys(std::string_view yaml_text, std::vector<std::string>* keys) {
  YAML::Node root;
  try {
    root = YAML::Load(std::string(yaml_text));
  } catch (const YAML::Exception& e) {
    Fail(ErrorCode::kInvalidArgument, "config is not valid YAML: {}", e.what());
  }
  Config config;
  Section top(root, "", keys);
  ReadPath(top, "state_dir", config.state_dir);
  ReadPath(top, "image_dir", config.image_dir);
  ReadPath(top, "socket", config.socket);
  std::string mode = fmt::format("{:04o}", config.socket_mode);
  top.Read("socket_mode", mode);
  unsigned parsed_mode = 0;
  if (std::sscanf(mode.c_str(), "%o", &parsed_mode) != 1 || parsed_mode > 0777 ||
      mode.find_first_not_of("01234567") != std::string::npos) {
    Fail(ErrorCode::kInvalidArgument,
         "config key 'socket_mode': '{}' is not an octal mode such as 0660", mode);
  }
  config.socket_mode = parsed_mode;
  top.Read("socket_group", config.socket_group);
  if (!config.socket_group.empty()) CheckGroupName("socket_group", config.socket_group);
  top.Read("client_host", config.client_host);
  top.Read("destroy_on_exit", config.destroy_on_exit);
  top.Read("endpoint_password", config.endpoint_password);

  Section limits = top.Child("limits");
  limits.ReadUnsigned("max_sandboxes", config.limits.max_sandboxes, 1, 16384);
  limits.ReadUnsigned("max_parallel_creates", config.limits.max_parallel_creates, 1, 256);
  limits.ReadUnsigned("default_ttl_seconds", config.limits.default_ttl_seconds, 1, 365 * 86400);
  limits.ReadUnsigned("max_ttl_seconds", config.limits.max_ttl_seconds, 1, 365 * 86400);
  limits.ReadUnsigned("default_idle_timeout_seconds", config.limits.default_idle_timeout_seconds, 0,
                      365 * 86400);
  limits.ReadUnsigned("max_memory_mib", config.limits.max_memory_mib, 128, 1 << 22);
  limits.ReadUnsigned("max_vcpus", config.limits.max_vcpus, 1, 256);
  limits.ReadUnsigned("sshd_timeout_seconds", config.limits.sshd_timeout_seconds, 1, 3600);
  limits.ReadUnsigned("host_memory_mib", config.limits.host_memory_mib, 0, 1u << 31);
  limits.ReadUnsigned("min_free_disk_mib", config.limits.min_free_disk_mib, 0, 1u << 31);
  limits.ReadUnsigned("max_paused_seconds", config.limits.max_paused_seconds, 1, 365 * 86400);
  limits.ReadUnsigned("max_paused_per_owner", config.limits.max_paused_per_owner, 0, 16384);
  limits.ReadUnsigned("max_exposed_ports", config.limits.max_exposed_ports, 0, 1024);
  limits.RejectUnknown();
  if (config.limits.default_ttl_seconds > config.limits.max_ttl_seconds) {
    Fail(ErrorCode::kInvalidArgument,
         "config key 'limits.default_ttl_seconds': {} exceeds limits.max_ttl_seconds ({})",
         config.limits.default_ttl_seconds, config.limits.max_ttl_seconds);
  }
  if (config.limits.default_idle_timeout_seconds > config.limits.max_ttl_seconds) {
    Fail(ErrorCode::kInvalidArgument,
         "config key 'limits.default_idle_timeout_seconds': {} exceeds limits.max_ttl_seconds ({})",
         config.limits.default_idle_timeout_seconds, config.limits.max_ttl_seconds);
  }

  Section log = top.Child("log");
  ReadChoice(log, "level", config.log.level, {"trace", "debug", "info", "warn", "error"});
  ReadChoice(log, "format", config.log.format, {"text", "json", "journal"});
  log.RejectUnknown();

  Section vm = top.Child("vm");
  ReadChoice(vm, "driver", config.vm.driver, {"qemu", "libvirt"});
  vm.Read("libvirt_uri", config.vm.libvirt_uri);
  if (config.vm.libvirt_uri.empty() || config.vm.libvirt_uri.find("://") == std::string::npos) {
    Fail(ErrorCode::kInvalidArgument, "config key 'vm.libvirt_uri': '{}' is not a libvirt URI",
         config.vm.libvirt_uri);
  }
  vm.ReadEnum(
      "libvirt_network_mode", config.vm.libvirt_network_mode,
      {{"isolated", LibvirtNetworkMode::kIsolated}, {"shared", LibvirtNetworkMode::kShared}});
  vm.Read("qemu_binary", config.vm.qemu_binary);
  vm.Read("qemu_img_binary", config.vm.qemu_img_binary);
  vm.ReadEnum("machine", config.vm.machine,
              {{"microvm", MachineType::kMicrovm}, {"q35", MachineType::kQ35}});
  vm.ReadEnum("accel", config.vm.accel,
              {{"auto", Accel::kAuto}, {"kvm", Accel::kKvm}, {"tcg", Accel::kTcg}});
  vm.ReadUnsigned("tcg_tb_size_mib", config.vm.tcg_tb_size_mib, 8, 4096);
  vm.ReadUnsigned("powerdown_timeout_ms", config.vm.powerdown_timeout_ms, 0, 600000);
  vm.Read("unprivileged", config.vm.unprivileged);
  vm.ReadUnsigned("uid_base", config.vm.uid_base, 1000, 4000000000u - 65536);
  vm.Read("seccomp_sandbox", config.vm.seccomp_sandbox);
  vm.ReadUnsigned("memory_overhead_mib", config.vm.memory_overhead_mib, 32, 65536);
  vm.ReadUnsigned("max_pids", config.vm.max_pids, 64, 1000000);
  vm.ReadUnsigned("console_log_kib", config.vm.console_log_kib, 16, 1 << 20);
  vm.Read("snapshots", config.vm.snapshots);
  vm.Read("ksm", config.vm.ksm);
  vm.RejectUnknown();

  Section network = top.Child("network");
  ReadNetwork(network, config.network);
  network.RejectUnknown();

  Section defaults = top.Child("defaults");
  defaults.Read("image", config.defaults.image);
  defaults.ReadUnsigned("memory_mib", config.defaults.memory_mib, 128, 1 << 20);
  defaults.ReadUnsigned("vcpus", config.defaults.vcpus, 1, 256);
  defaults.RejectUnknown();

  Section remote = top.Child("remote");
  ReadRemote(remote, config.remote);
  remote.RejectUnknown();

  Section anweddol = top.Child("anweddol");
  ReadAnweddol(anweddol, config.anweddol);
  anweddol.RejectUnknown();

  ReadRegistries(top, config.registries);
  ReadPools(top, config, config.pools);
  ReadImages(top, config.images);
  Section pull = top.Child("pull");
  pull.ReadUnsigned("connect_timeout_seconds", config.pull.connect_timeout_seconds, 1, 3600);
  pull.ReadUnsigned("stall_timeout_seconds", config.pull.stall_timeout_seconds, 1, 3600);
  pull.ReadUnsigned("cache_max_mib", config.pull.cache_max_mib, 0, 1u << 30);
  pull.RejectUnknown();

  Section wirt = top.Child("wirt");
  wirt.Read("enabled", config.wirt.enabled);
  wirt.Read("group", config.wirt.group);
  CheckGroupName("wirt.group", config.wirt.group);
  wirt.ReadUnsigned("max_sandboxes_per_user", config.wirt.max_sandboxes_per_user, 0, 1024);
  wirt.ReadUnsigned("max_memory_mib_per_user", config.wirt.max_memory_mib_per_user, 0, 1u << 24);
  unsigned log_max_kib = static_cast<unsigned>(config.wirt.log_max_bytes / 1024);
  wirt.ReadUnsigned("log_max_kib", log_max_kib, 4, 1u << 20);
  config.wirt.log_max_bytes = std::uint64_t{log_max_kib} * 1024;
  wirt.ReadUnsigned("log_keep", config.wirt.log_keep, 0, 100);
  wirt.ReadUnsigned("history_keep", config.wirt.history_keep, 10, 1000000);
  wirt.Read("mail", config.wirt.mail);
  wirt.Read("sendmail", config.wirt.sendmail);
  wirt.ReadUnsigned("workers", config.wirt.workers, 1, 64);
  wirt.RejectUnknown();

  Section container = top.Child("container");
  container.Read("enabled", config.container.enabled);
  container.Read("runtime", config.container.runtime);
  if (config.container.runtime.empty() ||
      (config.container.runtime != "crun" && config.container.runtime != "runc" &&
       config.container.runtime.front() != '/')) {
    Fail(ErrorCode::kInvalidArgument,
         "config key 'container.runtime': '{}' is neither crun, runc nor an absolute path",
         config.container.runtime.substr(0, 64));
  }
  container.ReadUnsigned("uid_base", config.container.uid_base, 65536, 4000000000u);
  // ping_group_range (unprivileged ping inside) reaches only ids below 2^31.
  if (std::uint64_t{config.container.uid_base} +
          std::uint64_t{config.limits.max_sandboxes} * 65536 >
      0x7FFFFFFFull) {
    Fail(ErrorCode::kInvalidArgument,
         "config key 'container.uid_base': {} + limits.max_sandboxes ({}) ranges of 65536 uids "
         "pass 2^31 - 1",
         config.container.uid_base, config.limits.max_sandboxes);
  }
  ReadOptionalPath(container, "seccomp_profile", config.container.seccomp_profile);
  container.ReadUnsigned("max_pids", config.container.max_pids, 16, 1000000);
  container.ReadUnsigned("disk_mib", config.container.disk_mib, 16, 1u << 24);
  container.ReadUnsigned("io_weight", config.container.io_weight, 1, 10000);
  container.ReadUnsigned("image_idle_seconds", config.container.image_idle_seconds, 0, 86400);
  container.RejectUnknown();

  Section metrics = top.Child("metrics");
  ReadListen(metrics, "listen", config.metrics.listen);
  metrics.Read("per_sandbox", config.metrics.per_sandbox);
  metrics.RejectUnknown();
  Section events = top.Child("events");
  events.ReadUnsigned("max_subscribers", config.events.max_subscribers, 1, 256);
  events.RejectUnknown();
  Section hooks = top.Child("hooks");
  ReadHooks(hooks, config.hooks);

  top.RejectUnknown();
  return config;
}

}  // namespace

Config ParseConfig(std::string_view yaml_text) { return ParseWithKeys(yaml_text, nullptr); }

std::vector<std::string> ConfigKeys() {
  // One entry in each list and map, so that their entries' keys are read.
  std::vector<std::string> keys;
  ParseWithKeys(R"(
registries: [{host: registry.example}]
pool: [{}]
images: {name: {rootfs: "docker://registry.example/rootfs"}}
hooks: {on: {created: [/bin/true]}}
)",
                &keys);
  return keys;
}

Config LoadConfigFile(const std::filesystem::path& path) {
  std::string text = ReadFile(path);
  try {
    return ParseConfig(text);
  } catch (const Error& e) {
    throw e.WithContext(path.string());
  }
}

}  // namespace ephemera
