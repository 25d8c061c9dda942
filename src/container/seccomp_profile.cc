#include "container/seccomp_profile.h"

#include <seccomp.h>
#include <sys/mman.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <utility>

#include "core/base64.h"
#include "core/error.h"
#include "core/fs.h"
#include "core/unique_fd.h"
#include "default_seccomp_json.h"  // generated from share/ephemera/seccomp.json

namespace ephemera {

using nlohmann::json;

namespace {

// x86_64 as Docker names it: "amd64" (Go's name) in includes/excludes
// arches, SCMP_ARCH_X86_64 in archMap.
constexpr std::string_view kGoArch = "amd64";
constexpr std::string_view kScmpArch = "SCMP_ARCH_X86_64";
constexpr std::size_t kMaxBpfInstructions = 4096;  // the kernel's BPF_MAXINSNS

template <typename... Args>
[[noreturn]] void Invalid(std::string_view where, fmt::format_string<Args...> format,
                          Args&&... args) {
  Fail(ErrorCode::kInvalidArgument, "seccomp profile {}: {}", where,
       fmt::format(format, std::forward<Args>(args)...));
}

// object[key], or nullptr when it is absent or null (Docker writes both).
const json* Find(const json& object, const char* key) {
  auto it = object.find(key);
  return it == object.end() || it->is_null() ? nullptr : &*it;
}

std::vector<std::string> Strings(const json& object, const char* key, std::string_view where) {
  std::vector<std::string> out;
  const json* v = Find(object, key);
  if (v == nullptr) return out;
  if (!v->is_array()) Invalid(where, "'{}' must be an array of strings", key);
  for (const json& s : *v) {
    if (!s.is_string()) Invalid(where, "'{}' must be an array of strings", key);
    out.push_back(s.get<std::string>());
  }
  return out;
}

std::uint64_t Unsigned(const json& v, std::string_view key, std::uint64_t max,
                       std::string_view where) {
  if (!v.is_number_unsigned() || v.get<std::uint64_t>() > max) {
    Invalid(where, "'{}' must be an integer from 0 to {}", key, max);
  }
  return v.get<std::uint64_t>();
}

bool TakesErrno(std::string_view action) {
  return action == "SCMP_ACT_ERRNO" || action == "SCMP_ACT_TRACE";
}

// libseccomp's value of an action; errnoRet only for the two that carry one,
// EPERM when it is not given (as crun and runc).
std::uint32_t Action(const std::string& name, const json* errno_ret, std::string_view where) {
  std::uint32_t code = EPERM;
  if (errno_ret != nullptr) {
    if (!TakesErrno(name)) Invalid(where, "{} takes no errno value", name);
    code = static_cast<std::uint32_t>(Unsigned(*errno_ret, "errnoRet", 0xffff, where));
  }
  if (name == "SCMP_ACT_ALLOW") return SCMP_ACT_ALLOW;
  if (name == "SCMP_ACT_ERRNO") return SCMP_ACT_ERRNO(code);
  if (name == "SCMP_ACT_KILL" || name == "SCMP_ACT_KILL_THREAD") return SCMP_ACT_KILL_THREAD;
  if (name == "SCMP_ACT_KILL_PROCESS") return SCMP_ACT_KILL_PROCESS;
  if (name == "SCMP_ACT_TRAP") return SCMP_ACT_TRAP;
  if (name == "SCMP_ACT_LOG") return SCMP_ACT_LOG;
  if (name == "SCMP_ACT_TRACE") return SCMP_ACT_TRACE(code);
  Invalid(where, "unknown action '{}'", name);
}

scmp_compare Operator(const std::string& name, std::string_view where) {
  static const std::map<std::string, scmp_compare, std::less<>> kOperators = {
      {"SCMP_CMP_NE", SCMP_CMP_NE},
      {"SCMP_CMP_LT", SCMP_CMP_LT},
      {"SCMP_CMP_LE", SCMP_CMP_LE},
      {"SCMP_CMP_EQ", SCMP_CMP_EQ},
      {"SCMP_CMP_GE", SCMP_CMP_GE},
      {"SCMP_CMP_GT", SCMP_CMP_GT},
      {"SCMP_CMP_MASKED_EQ", SCMP_CMP_MASKED_EQ}};
  auto it = kOperators.find(name);
  if (it == kOperators.end()) Invalid(where, "unknown operator '{}'", name);
  return it->second;
}

struct KernelVersion {
  unsigned major = 0;
  unsigned minor = 0;
  auto operator<=>(const KernelVersion&) const = default;
};

// "4.8" (and "4.8.0", "6.1.0-13-amd64"): Docker compares major.minor only.
std::optional<KernelVersion> ParseKernelVersion(const std::string& text) {
  KernelVersion v;
  if (std::sscanf(text.c_str(), "%u.%u", &v.major, &v.minor) != 2) return std::nullopt;
  return v;
}

KernelVersion RunningKernel() {
  static const KernelVersion kernel = [] {
    utsname u{};
    ::uname(&u);
    return ParseKernelVersion(u.release).value_or(KernelVersion{});
  }();
  return kernel;
}

// One syscalls[] entry that applies here.
struct Rule {
  std::string where;  // "origin: syscalls[i]", for errors
  json oci;           // its runtime-spec form, less its names
  std::vector<std::string> names;
  std::uint32_t action = 0;
  std::vector<scmp_arg_cmp> args;
};

bool Holds(const std::vector<std::string>& capabilities, const std::string& cap) {
  return std::find(capabilities.begin(), capabilities.end(), cap) != capabilities.end();
}

// Docker's resolution: includes need every cap listed, the native arch among
// the arches listed and a kernel at least minKernel; excludes drop the entry
// on any cap held or on the native arch.
bool Applies(const json& entry, const std::vector<std::string>& capabilities,
             std::string_view where) {
  if (const json* in = Find(entry, "includes")) {
    if (!in->is_object()) Invalid(where, "'includes' must be an object");
    for (const std::string& cap : Strings(*in, "caps", where)) {
      if (!Holds(capabilities, cap)) return false;
    }
    std::vector<std::string> arches = Strings(*in, "arches", where);
    if (!arches.empty() && !Holds(arches, std::string(kGoArch))) return false;
    if (const json* min = Find(*in, "minKernel")) {
      std::optional<KernelVersion> v;
      if (min->is_string()) v = ParseKernelVersion(min->get<std::string>());
      if (!v) Invalid(where, "'minKernel' must be a kernel version such as \"4.8\"");
      if (RunningKernel() < *v) return false;
    }
  }
  if (const json* ex = Find(entry, "excludes")) {
    if (!ex->is_object()) Invalid(where, "'excludes' must be an object");
    for (const std::string& cap : Strings(*ex, "caps", where)) {
      if (Holds(capabilities, cap)) return false;
    }
    if (Holds(Strings(*ex, "arches", where), std::string(kGoArch))) return false;
  }
  return true;
}

Rule ParseRule(const json& entry, std::string_view where) {
  if (!entry.is_object()) Invalid(where, "must be an object");
  Rule rule;
  rule.names = Strings(entry, "names", where);
  if (const json* name = Find(entry, "name")) {  // Docker's older single-name form
    if (!name->is_string() || !rule.names.empty()) {
      Invalid(where, "'name' must be a string, and not given with 'names'");
    }
    rule.names.push_back(name->get<std::string>());
  }
  if (rule.names.empty()) Invalid(where, "names no syscall");
  const json* action = Find(entry, "action");
  if (action == nullptr || !action->is_string()) Invalid(where, "'action' must be a string");
  const std::string action_name = action->get<std::string>();
  rule.action = Action(action_name, Find(entry, "errnoRet"), where);
  rule.oci = {{"action", action_name}};
  if (TakesErrno(action_name)) rule.oci["errnoRet"] = rule.action & 0xffff;

  const json* args = Find(entry, "args");
  if (args == nullptr) return rule;
  if (!args->is_array()) Invalid(where, "'args' must be an array");
  json oci_args = json::array();
  for (std::size_t i = 0; i < args->size(); ++i) {
    const std::string arg_where = fmt::format("{}: args[{}]", where, i);
    const json& a = (*args)[i];
    if (!a.is_object()) Invalid(arg_where, "must be an object");
    const json* index = Find(a, "index");
    const json* value = Find(a, "value");
    const json* value_two = Find(a, "valueTwo");
    const json* op = Find(a, "op");
    if (index == nullptr || value == nullptr || op == nullptr || !op->is_string()) {
      Invalid(arg_where, "needs 'index', 'value' and 'op'");
    }
    scmp_arg_cmp cmp{};
    cmp.arg = static_cast<unsigned>(Unsigned(*index, "index", 5, arg_where));
    cmp.op = Operator(op->get<std::string>(), arg_where);
    cmp.datum_a = Unsigned(*value, "value", UINT64_MAX, arg_where);
    cmp.datum_b = value_two ? Unsigned(*value_two, "valueTwo", UINT64_MAX, arg_where) : 0;
    rule.args.push_back(cmp);
    oci_args.push_back({{"index", cmp.arg},
                        {"value", cmp.datum_a},
                        {"valueTwo", cmp.datum_b},
                        {"op", op->get<std::string>()}});
  }
  if (!rule.args.empty()) rule.oci["args"] = std::move(oci_args);
  return rule;
}

// The architectures to filter: archMap's x86_64 entry with its
// sub-architectures (Docker), or the OCI form's list; neither means the
// native one only, as in Docker and the runtime spec.
std::vector<std::string> Architectures(const json& profile, std::string_view where) {
  const json* map = Find(profile, "archMap");
  const json* list = Find(profile, "architectures");
  if (map != nullptr && list != nullptr) {
    Invalid(where, "gives both 'archMap' and 'architectures': use one");
  }
  if (list != nullptr) return Strings(profile, "architectures", where);
  std::vector<std::string> arches = {std::string(kScmpArch)};
  if (map == nullptr) return arches;
  if (!map->is_array()) Invalid(where, "'archMap' must be an array");
  for (const json& m : *map) {
    if (!m.is_object()) Invalid(where, "'archMap' entries must be objects");
    const json* arch = Find(m, "architecture");
    if (arch == nullptr || !arch->is_string() || arch->get<std::string>() != kScmpArch) continue;
    std::vector<std::string> subs = Strings(m, "subArchitectures", where);
    arches.insert(arches.end(), subs.begin(), subs.end());
  }
  return arches;
}

// crun takes "SCMP_ARCH_X86" as libseccomp's "x86".
std::uint32_t ArchToken(const std::string& name, std::string_view where) {
  std::string lower = name.starts_with("SCMP_ARCH_") ? name.substr(10) : name;
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  const std::uint32_t token = seccomp_arch_resolve_name(lower.c_str());
  if (token == 0) Invalid(where, "unknown architecture '{}'", name);
  return token;
}

// Adds the rules to the filter and their runtime-spec form to out.oci.
void AddRules(scmp_filter_ctx ctx, const std::vector<Rule>& rules, SeccompProfile& out) {
  // In libseccomp an unconditional rule beats every other rule for the same
  // syscall, silently: the first unconditional one beats later ones, and
  // beats conditional ones whatever their order. So leave the losers out,
  // and name those that would have acted otherwise.
  std::map<int, std::uint32_t> unconditional;  // syscall -> action of its first such rule
  for (const Rule& rule : rules) {
    if (!rule.args.empty()) continue;
    for (const std::string& name : rule.names) {
      const int nr = seccomp_syscall_resolve_name(name.c_str());
      if (nr != __NR_SCMP_ERROR) unconditional.emplace(nr, rule.action);
    }
  }

  json oci_syscalls = json::array();
  std::set<std::string> compiled;
  std::set<std::string> unknown;
  std::set<std::string> shadowed;
  for (const Rule& rule : rules) {
    // libseccomp takes one comparison per argument in a rule: more than one on
    // the same argument become one rule each (so any of them matches), as in
    // crun and runc.
    std::set<unsigned> indexes;
    for (const scmp_arg_cmp& a : rule.args) indexes.insert(a.arg);
    const bool split = indexes.size() < rule.args.size();

    json names = json::array();
    for (const std::string& name : rule.names) {
      const int nr = seccomp_syscall_resolve_name(name.c_str());
      if (nr == __NR_SCMP_ERROR) {
        unknown.insert(name);
        continue;
      }
      auto winner = unconditional.find(nr);
      if (winner != unconditional.end() && (winner->second != rule.action || !rule.args.empty())) {
        if (winner->second != rule.action) shadowed.insert(name);
        continue;
      }
      auto add = [&](unsigned count, const scmp_arg_cmp* args) {
        const int rc = seccomp_rule_add_array(ctx, rule.action, nr, count, args);
        if (rc < 0) {
          Invalid(rule.where, "libseccomp refuses the rule for {}: {}", name, strerror(-rc));
        }
      };
      if (!split) {
        add(static_cast<unsigned>(rule.args.size()), rule.args.data());
      } else {
        for (const scmp_arg_cmp& a : rule.args) add(1, &a);
      }
      names.push_back(name);
      compiled.insert(name);
    }
    if (names.empty()) continue;
    json oci_entry = {{"names", std::move(names)}};
    oci_entry.update(rule.oci);
    oci_syscalls.push_back(std::move(oci_entry));
  }
  out.oci["syscalls"] = std::move(oci_syscalls);
  out.rules = compiled.size();
  out.unknown_syscalls.assign(unknown.begin(), unknown.end());
  out.shadowed_syscalls.assign(shadowed.begin(), shadowed.end());
}

// The filter as struct sock_filter[]. libseccomp 2.5 exports only to a file
// descriptor.
std::string ExportBpf(scmp_filter_ctx ctx, std::string_view origin) {
  UniqueFd memfd(::memfd_create("ephemera-seccomp", MFD_CLOEXEC));
  if (!memfd) FailErrno("memfd_create", errno);
  if (int rc = seccomp_export_bpf(ctx, memfd.get()); rc < 0) FailErrno("seccomp_export_bpf", -rc);
  std::string bpf;
  char buffer[16384];
  for (off_t offset = 0;;) {
    const ssize_t n = ::pread(memfd.get(), buffer, sizeof buffer, offset);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) FailErrno("cannot read the exported seccomp filter", errno);
    if (n == 0) break;
    bpf.append(buffer, static_cast<std::size_t>(n));
    offset += n;
  }
  if (bpf.size() / 8 > kMaxBpfInstructions) {  // struct sock_filter is 8 bytes
    Invalid(origin, "compiles to {} BPF instructions, over the kernel's {}", bpf.size() / 8,
            kMaxBpfInstructions);
  }
  return bpf;
}

struct ReleaseFilter {
  void operator()(void* ctx) const { seccomp_release(ctx); }
};

}  // namespace

const std::vector<std::string>& DefaultContainerCapabilities() {
  static const std::vector<std::string> kCapabilities = {
      "CAP_CHOWN",   "CAP_DAC_OVERRIDE",     "CAP_FOWNER",    "CAP_FSETID",
      "CAP_KILL",    "CAP_NET_BIND_SERVICE", "CAP_SETFCAP",   "CAP_SETGID",
      "CAP_SETPCAP", "CAP_SETUID",           "CAP_SYS_CHROOT"};
  return kCapabilities;
}

SeccompProfile LoadSeccompProfile(std::string_view json_text, const std::string& origin,
                                  const std::vector<std::string>& capabilities) {
  json profile;
  try {
    profile = json::parse(json_text);
  } catch (const json::exception& e) {
    Invalid(origin, "not valid JSON: {}", e.what());
  }
  if (!profile.is_object()) Invalid(origin, "must be a JSON object");

  const json* default_name = Find(profile, "defaultAction");
  if (default_name == nullptr || !default_name->is_string()) {
    Invalid(origin, "'defaultAction' must be a string");
  }
  const std::string default_action_name = default_name->get<std::string>();
  const std::uint32_t default_action =
      Action(default_action_name, Find(profile, "defaultErrnoRet"), origin);
  SeccompProfile out;
  out.oci = {{"defaultAction", default_action_name}};
  if (TakesErrno(default_action_name)) out.oci["defaultErrnoRet"] = default_action & 0xffff;

  std::unique_ptr<void, ReleaseFilter> ctx(seccomp_init(default_action));
  if (!ctx) Invalid(origin, "libseccomp refuses the default action {}", default_action_name);
  // A binary tree of syscall numbers instead of a list: every syscall the
  // container makes runs the filter, in a few dozen instructions, not hundreds.
  if (const int rc = seccomp_attr_set(ctx.get(), SCMP_FLTATR_CTL_OPTIMIZE, 2); rc < 0) {
    FailErrno("seccomp_attr_set(SCMP_FLTATR_CTL_OPTIMIZE)", -rc);
  }
  const std::vector<std::string> arches = Architectures(profile, origin);
  for (const std::string& arch : arches) {
    const int rc = seccomp_arch_add(ctx.get(), ArchToken(arch, origin));
    if (rc < 0 && rc != -EEXIST) FailErrno(fmt::format("seccomp_arch_add {}", arch), -rc);
  }
  out.oci["architectures"] = arches;

  const json* syscalls = Find(profile, "syscalls");
  if (syscalls != nullptr && !syscalls->is_array()) Invalid(origin, "'syscalls' must be an array");
  std::vector<Rule> rules;
  for (std::size_t i = 0; syscalls != nullptr && i < syscalls->size(); ++i) {
    const std::string where = fmt::format("{}: syscalls[{}]", origin, i);
    const json& entry = (*syscalls)[i];
    Rule rule = ParseRule(entry, where);
    // libseccomp refuses a rule with the default action (EACCES); crun skips it.
    if (Applies(entry, capabilities, where) && rule.action != default_action) {
      rule.where = where;
      rules.push_back(std::move(rule));
    }
  }
  AddRules(ctx.get(), rules, out);
  out.bpf_base64 = Base64Encode(ExportBpf(ctx.get(), origin));
  return out;
}

SeccompProfile LoadSeccompProfileFile(const std::filesystem::path& file,
                                      const std::vector<std::string>& capabilities) {
  return LoadSeccompProfile(ReadFile(file), file.string(), capabilities);
}

std::string_view DefaultSeccompProfileJson() { return kDefaultSeccompJson; }

SeccompProfile DefaultSeccompProfile(const std::vector<std::string>& capabilities) {
  return LoadSeccompProfile(kDefaultSeccompJson, "built-in (share/ephemera/seccomp.json)",
                            capabilities);
}

}  // namespace ephemera
