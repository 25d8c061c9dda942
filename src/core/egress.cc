#include "core/egress.h"

#include <algorithm>

#include "core/error.h"

namespace ephemera {

namespace {

bool IsDomainName(std::string_view name) {
  if (name.empty() || name.size() > 253) return false;
  std::size_t labels = 0;
  for (std::size_t start = 0; start <= name.size();) {
    std::size_t end = name.find('.', start);
    if (end == std::string_view::npos) end = name.size();
    std::string_view label = name.substr(start, end - start);
    if (label.empty() || label.size() > 63 || label.front() == '-' || label.back() == '-') {
      return false;
    }
    if (!std::all_of(label.begin(), label.end(), [](char c) {
          return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-';
        })) {
      return false;
    }
    ++labels;
    start = end + 1;
  }
  return labels >= 2;
}

bool LooksNumeric(std::string_view entry) {
  return !entry.empty() && std::all_of(entry.begin(), entry.end(), [](char c) {
    return (c >= '0' && c <= '9') || c == '.' || c == '/';
  });
}

void AddEntry(EgressPolicy& policy, std::string_view entry) {
  if (LooksNumeric(entry)) {
    const std::string cidr =
        entry.find('/') == std::string_view::npos ? std::string(entry) + "/32" : std::string(entry);
    try {
      policy.networks.push_back(Ipv4Cidr::Parse(cidr));
    } catch (const Error& e) {
      Fail(ErrorCode::kInvalidArgument, "egress allow entry '{}': {}", entry, e.what());
    }
    return;
  }
  std::string name(entry);
  std::transform(name.begin(), name.end(), name.begin(), [](char c) {
    return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c;
  });
  if (!name.empty() && name.back() == '.') name.pop_back();  // fully qualified
  if (!IsDomainName(name)) {
    Fail(ErrorCode::kInvalidArgument,
         "egress allow entry '{}' is neither an IPv4 address or CIDR nor a domain name (labels of "
         "letters, digits and '-', at least two)",
         entry.substr(0, 80));
  }
  policy.domains.push_back(std::move(name));
}

}  // namespace

std::string_view EgressModeName(EgressMode mode) {
  switch (mode) {
    case EgressMode::kNone:
      return "none";
    case EgressMode::kAllow:
      return "allow";
    case EgressMode::kAll:
      break;
  }
  return "all";
}

EgressMode ParseEgressMode(std::string_view name) {
  if (name == "none") return EgressMode::kNone;
  if (name == "all") return EgressMode::kAll;
  if (name == "allow") return EgressMode::kAllow;
  Fail(ErrorCode::kInvalidArgument, "egress '{}' is not one of none, all, allow",
       name.substr(0, 32));
}

std::vector<std::string> EgressPolicy::Entries() const {
  std::vector<std::string> entries;
  for (const Ipv4Cidr& c : networks) entries.push_back(c.str());
  entries.insert(entries.end(), domains.begin(), domains.end());
  return entries;
}

std::string EgressPolicy::Text() const {
  std::string text(EgressModeName(mode));
  for (const std::string& entry : Entries()) text += " " + entry;
  return text;
}

EgressPolicy MakeEgressPolicy(std::string_view mode, const std::vector<std::string>& allow) {
  EgressPolicy policy;
  policy.mode = ParseEgressMode(mode);
  if (policy.mode != EgressMode::kAllow && !allow.empty()) {
    Fail(ErrorCode::kInvalidArgument, "egress '{}' takes no allow-list (only 'allow' does)", mode);
  }
  if (policy.mode == EgressMode::kAllow && allow.empty()) {
    Fail(ErrorCode::kInvalidArgument, "egress 'allow' needs at least one entry to allow");
  }
  if (allow.size() > kMaxEgressEntries) {
    Fail(ErrorCode::kInvalidArgument, "egress allow-list has {} entries (at most {})", allow.size(),
         kMaxEgressEntries);
  }
  for (const std::string& entry : allow) AddEntry(policy, entry);
  // Duplicates are harmless but make the stored form depend on them.
  auto by_text = [](const Ipv4Cidr& a, const Ipv4Cidr& b) { return a.str() < b.str(); };
  std::sort(policy.networks.begin(), policy.networks.end(), by_text);
  policy.networks.erase(
      std::unique(policy.networks.begin(), policy.networks.end(),
                  [](const Ipv4Cidr& a, const Ipv4Cidr& b) { return a.str() == b.str(); }),
      policy.networks.end());
  std::sort(policy.domains.begin(), policy.domains.end());
  policy.domains.erase(std::unique(policy.domains.begin(), policy.domains.end()),
                       policy.domains.end());
  return policy;
}

EgressPolicy ParseEgress(std::string_view text) {
  std::vector<std::string> words;
  for (std::size_t start = 0; start < text.size();) {
    std::size_t end = text.find(' ', start);
    if (end == std::string_view::npos) end = text.size();
    if (end > start) words.emplace_back(text.substr(start, end - start));
    start = end + 1;
  }
  if (words.empty()) Fail(ErrorCode::kInvalidArgument, "egress is empty");
  const std::string mode = words.front();
  words.erase(words.begin());
  return MakeEgressPolicy(mode, words);
}

}  // namespace ephemera
