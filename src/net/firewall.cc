#include "net/firewall.h"

#include <fmt/format.h>
#include <nftables/libnftables.h>

#include "core/error.h"

namespace ephemera {

std::string BuildFirewallScript(const FirewallPolicy& policy,
                                const std::vector<FirewallEntry>& entries) {
  std::string taps, endpoints, gateways;
  for (const auto& e : entries) {
    const char* sep = taps.empty() ? "" : ", ";
    taps += fmt::format("{}\"{}\"", sep, e.tap);
    endpoints += fmt::format("{}\"{}\" . {}", sep, e.tap, e.subnet.guest().str());
    gateways += fmt::format("{}\"{}\" . {}", sep, e.tap, e.subnet.gateway().str());
  }
  auto elements = [](const std::string& list) {
    return list.empty() ? std::string() : fmt::format("\t\telements = {{ {} }}\n", list);
  };
  // "table ... {}" first makes the delete valid when the table is absent;
  // the whole buffer is one transaction, so no packet sees a half table.
  std::string script = fmt::format(
      "table inet {0} {{}}\n"
      "delete table inet {0}\n"
      "table inet {0} {{\n"
      "\tset taps {{\n\t\ttype ifname\n{1}\t}}\n"
      "\tset endpoints {{\n\t\ttype ifname . ipv4_addr\n{2}\t}}\n"
      "\tset gateways {{\n\t\ttype ifname . ipv4_addr\n{3}\t}}\n"
      "\tchain input {{\n"
      "\t\ttype filter hook input priority filter - 10; policy accept;\n"
      "\t\tiifname != @taps accept\n"
      "\t\tct state established,related accept\n"
      "\t\tudp sport 68 udp dport 67 accept\n"
      "\t\tiifname . ip daddr @gateways icmp type echo-request accept\n"
      "\t\tdrop\n"
      "\t}}\n"
      "\tchain forward {{\n"
      "\t\ttype filter hook forward priority filter - 10; policy accept;\n"
      "\t\tiifname @taps oifname @taps drop\n"
      "\t\toifname @taps ct state established,related accept\n"
      "\t\toifname @taps drop\n"
      "\t\tiifname != @taps accept\n"
      "\t\tiifname . ip saddr != @endpoints drop\n"
      "\t\t{4}\n"
      "\t}}\n",
      Firewall::kTable, elements(taps), elements(endpoints), elements(gateways),
      policy.outbound_nat ? "accept" : "drop");
  if (policy.outbound_nat) {
    script += fmt::format(
        "\tchain postrouting {{\n"
        "\t\ttype nat hook postrouting priority srcnat; policy accept;\n"
        "\t\tip saddr {} oifname != @taps masquerade\n"
        "\t}}\n",
        policy.pool.str());
  }
  script += "}\n";
  return script;
}

Firewall::Firewall() : ctx_(nft_ctx_new(NFT_CTX_DEFAULT)) {
  if (!ctx_) Fail(ErrorCode::kInternal, "cannot create an nftables context");
  nft_ctx_buffer_output(ctx_);
  nft_ctx_buffer_error(ctx_);
}

Firewall::~Firewall() { nft_ctx_free(ctx_); }

std::string Firewall::Run(const std::string& script) {
  int rc = nft_run_cmd_from_buffer(ctx_, script.c_str());
  std::string output = nft_ctx_get_output_buffer(ctx_);
  std::string errors = nft_ctx_get_error_buffer(ctx_);
  if (rc != 0) {
    while (!errors.empty() && errors.back() == '\n') errors.pop_back();
    ErrorCode code = ErrorCode::kInternal;
    if (errors.find("Operation not permitted") != std::string::npos) {
      code = ErrorCode::kPermissionDenied;
    } else if (errors.find("Operation not supported") != std::string::npos ||
               errors.find("Protocol not supported") != std::string::npos) {
      code = ErrorCode::kUnavailable;
    }
    Fail(code, "nftables refused the ephemera table: {}", errors);
  }
  return output;
}

void Firewall::Apply(const FirewallPolicy& policy, const std::vector<FirewallEntry>& entries) {
  std::lock_guard lock(mutex_);
  Run(BuildFirewallScript(policy, entries));
}

void Firewall::Remove() {
  std::lock_guard lock(mutex_);
  Run(fmt::format("table inet {0} {{}}\ndelete table inet {0}\n", kTable));
}

std::string Firewall::List() {
  std::lock_guard lock(mutex_);
  try {
    return Run(fmt::format("list table inet {}", kTable));
  } catch (const Error&) {
    return "";
  }
}

}  // namespace ephemera
