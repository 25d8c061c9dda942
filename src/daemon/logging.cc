#include "daemon/logging.h"

#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/base_sink.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <systemd/sd-journal.h>

#include <cctype>
#include <cstdlib>
#include <mutex>
#include <nlohmann/json.hpp>

#include "api/wire.h"

namespace ephemera {

namespace {

std::string Quoted(std::string_view text) { return JsonText(nlohmann::json(std::string(text))); }

// %* : the message as a JSON string literal (quoted and escaped), so JSON
// lines stay valid whatever a message contains.
class JsonMessageFlag : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm&,
              spdlog::memory_buf_t& dest) override {
    std::string quoted = Quoted(std::string_view(msg.payload.data(), msg.payload.size()));
    dest.append(quoted.data(), quoted.data() + quoted.size());
  }
  std::unique_ptr<custom_flag_formatter> clone() const override {
    return std::make_unique<JsonMessageFlag>();
  }
};

// %& : the thread's sandbox, owner and phase as more JSON members, if set.
class JsonFieldsFlag : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm&,
              spdlog::memory_buf_t& dest) override {
    const LogFields& scope = LogScope::Current();
    std::string sandbox = scope.sandbox;
    if (sandbox.empty()) sandbox = SandboxNamedIn({msg.payload.data(), msg.payload.size()});
    std::string out;
    if (!sandbox.empty()) out += ",\"sandbox\":" + Quoted(sandbox);
    if (!scope.owner.empty()) out += ",\"owner\":" + Quoted(scope.owner);
    if (!scope.phase.empty()) out += ",\"phase\":" + Quoted(scope.phase);
    dest.append(out.data(), out.data() + out.size());
  }
  std::unique_ptr<custom_flag_formatter> clone() const override {
    return std::make_unique<JsonFieldsFlag>();
  }
};

class JournalSink : public spdlog::sinks::base_sink<std::mutex> {
 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    std::vector<std::string> fields =
        JournalFields({msg.payload.data(), msg.payload.size()}, msg.level, LogScope::Current());
    std::vector<iovec> iov;
    for (std::string& f : fields) iov.push_back({f.data(), f.size()});
    sd_journal_sendv(iov.data(), static_cast<int>(iov.size()));
  }
  void flush_() override {}
};

// Whether stderr is the journal's stream: systemd names it (device:inode)
// in JOURNAL_STREAM.
bool StderrIsJournal() {
  const char* stream = std::getenv("JOURNAL_STREAM");
  struct stat st {};
  if (!stream || ::fstat(2, &st) != 0) return false;
  return fmt::format("{}:{}", st.st_dev, st.st_ino) == stream;
}

int Priority(spdlog::level::level_enum level) {
  switch (level) {
    case spdlog::level::critical:
      return 2;
    case spdlog::level::err:
      return 3;
    case spdlog::level::warn:
      return 4;
    case spdlog::level::info:
      return 6;
    default:
      return 7;
  }
}

bool IsUuid(std::string_view text) {
  if (text.size() != 36) return false;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const bool dash = i == 8 || i == 13 || i == 18 || i == 23;
    if (dash ? text[i] != '-' : !std::isxdigit(static_cast<unsigned char>(text[i]))) return false;
  }
  return true;
}

}  // namespace

std::string SandboxNamedIn(std::string_view message) {
  constexpr std::string_view kWord = "sandbox ";
  for (std::size_t at = message.find(kWord); at != std::string_view::npos;
       at = message.find(kWord, at + 1)) {
    std::string_view rest = message.substr(at + kWord.size());
    if (rest.size() >= 36 && IsUuid(rest.substr(0, 36))) return std::string(rest.substr(0, 36));
  }
  return "";
}

std::vector<std::string> JournalFields(std::string_view message, spdlog::level::level_enum level,
                                       const LogFields& scope) {
  std::vector<std::string> fields = {"MESSAGE=" + std::string(message),
                                     "PRIORITY=" + std::to_string(Priority(level)),
                                     "SYSLOG_IDENTIFIER=ephemerad"};
  std::string sandbox = scope.sandbox.empty() ? SandboxNamedIn(message) : scope.sandbox;
  if (!sandbox.empty()) fields.push_back("SANDBOX_ID=" + sandbox);
  if (!scope.owner.empty()) fields.push_back("OWNER=" + scope.owner);
  if (!scope.phase.empty()) fields.push_back("PHASE=" + scope.phase);
  return fields;
}

void SetupLogging(const std::string& level, const std::string& format) {
  std::shared_ptr<spdlog::logger> logger;
  if (format == "journal" || (format == "text" && StderrIsJournal())) {
    logger = std::make_shared<spdlog::logger>("ephemerad", std::make_shared<JournalSink>());
  } else if (format == "json") {
    logger = spdlog::stderr_logger_mt("ephemerad");
    auto formatter = std::make_unique<spdlog::pattern_formatter>();
    formatter->add_flag<JsonMessageFlag>('*').add_flag<JsonFieldsFlag>('&').set_pattern(
        R"({"time":"%Y-%m-%dT%H:%M:%S.%e%z","level":"%l","msg":%*%&})");
    logger->set_formatter(std::move(formatter));
  } else {
    logger = spdlog::stderr_logger_mt("ephemerad");
    logger->set_pattern("%Y-%m-%d %H:%M:%S.%e %^%l%$ %v");
  }
  logger->set_level(spdlog::level::from_str(level));
  spdlog::set_default_logger(logger);
}

}  // namespace ephemera
