#include "wirt/status.h"

#include <fmt/format.h>

#include <chrono>
#include <ctime>

#include "core/text.h"

namespace ephemera::wirt {

namespace {

// What a user reads: a control character in a message becomes '?'.
std::string XmlText(std::string_view text) { return XmlEscape(text, '?'); }

struct tm Utc(std::time_t t) {
  struct tm out {};
  ::gmtime_r(&t, &out);
  return out;
}

}  // namespace

std::int64_t NowUnixMicros() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string Timestamp(std::int64_t unix_micros) {
  struct tm t = Utc(static_cast<std::time_t>(unix_micros / 1000000));
  return fmt::format("{:04}{:02}{:02}T{:02}{:02}{:02}.{:06}Z", t.tm_year + 1900, t.tm_mon + 1,
                     t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec, unix_micros % 1000000);
}

std::string IsoTime(UnixSeconds at) {
  struct tm t = Utc(static_cast<std::time_t>(at));
  return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z", t.tm_year + 1900, t.tm_mon + 1,
                     t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec);
}

std::string StatusXml(const VmStatus& s, UnixSeconds now) {
  std::string x = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";
  x += fmt::format("<vm name=\"{}\" owner=\"{}\" uid=\"{}\">\n", XmlText(s.name), XmlText(s.user),
                   s.uid);
  x += fmt::format("  <state>{}</state>\n", XmlText(s.state));
  x += fmt::format("  <autostart>{}</autostart>\n", s.autostart ? "yes" : "no");
  if (s.instance) {
    const Sandbox& i = *s.instance;
    x += fmt::format("  <sandbox>{}</sandbox>\n", i.id.str());
    x += fmt::format("  <image>{}</image>\n", XmlText(i.spec.image));
    x += fmt::format("  <memory_mib>{}</memory_mib>\n  <vcpus>{}</vcpus>\n", i.spec.memory_mib,
                     i.spec.vcpus);
    x += fmt::format("  <driver>{}</driver>\n", XmlText(i.driver));
    if (!i.guest_ip.empty()) x += fmt::format("  <address>{}</address>\n", XmlText(i.guest_ip));
    x += fmt::format("  <ssh host=\"{}\" port=\"{}\" username=\"{}\"/>\n", XmlText(s.host),
                     i.host_port, XmlText(i.username));
    if (!i.host_key_fingerprint.empty()) {
      x += fmt::format("  <host_key_fingerprint>{}</host_key_fingerprint>\n",
                       XmlText(i.host_key_fingerprint));
    }
    x += fmt::format("  <created>{}</created>\n", IsoTime(i.created_at));
    if (i.expires_at) x += fmt::format("  <expires>{}</expires>\n", IsoTime(*i.expires_at));
  }
  x += fmt::format("  <updated>{}</updated>\n", IsoTime(now));
  if (!s.last_action.empty()) {
    x += fmt::format("  <last_request action=\"{}\" outcome=\"{}\" at=\"{}\">{}</last_request>\n",
                     XmlText(s.last_action), XmlText(s.last_outcome), IsoTime(s.last_at),
                     XmlText(s.last_message));
  }
  if (!s.domain_xml.empty()) x += fmt::format("  <domain>{}</domain>\n", XmlText(s.domain_xml));
  x += "</vm>\n";
  return x;
}

}  // namespace ephemera::wirt
