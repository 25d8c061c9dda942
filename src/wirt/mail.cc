#include "wirt/mail.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>

#include "core/error.h"
#include "core/subprocess.h"
#include "core/text.h"

namespace ephemera::wirt {

namespace {

// Header values stay on one line.
std::string OneLine(const std::string& text) {
  std::string out = text;
  for (char& c : out) {
    if (c == '\r' || c == '\n') c = ' ';
  }
  return out;
}

}  // namespace

std::string MailMessage(const std::vector<std::string>& recipients, const std::string& subject,
                        const std::string& body) {
  std::string to;
  for (const auto& r : recipients) to += (to.empty() ? "" : ", ") + OneLine(r);
  return fmt::format("To: {}\nSubject: {}\nAuto-Submitted: auto-generated\n\n{}\n", to,
                     OneLine(subject), body);
}

void SendMail(const std::string& sendmail, const std::vector<std::string>& recipients,
              const std::string& subject, const std::string& body) {
  // A socket rather than a pipe: a sendmail that quits without reading
  // must not kill the daemon (or a test) with SIGPIPE (MSG_NOSIGNAL).
  int ends[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, ends) != 0) {
    FailErrno("socketpair", errno);
  }
  UniqueFd read_end(ends[0]), write_end(ends[1]);
  SpawnSpec spec;
  spec.argv = {sendmail, "-oi", "--"};
  for (const auto& r : recipients) spec.argv.push_back(r);
  spec.fds = {{read_end.get(), 0}, {STDERR_FILENO, 2}};
  SpawnedProcess child = Spawn(spec);
  read_end.reset();
  std::string message = MailMessage(recipients, subject, body);
  std::string_view rest = message;
  while (!rest.empty()) {
    ssize_t n = ::send(write_end.get(), rest.data(), rest.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) break;  // sendmail quit early: its status says why
    rest.remove_prefix(static_cast<std::size_t>(n));
  }
  write_end.reset();
  struct pollfd done = {child.pidfd.get(), POLLIN, 0};
  if (::poll(&done, 1, 30000) == 0) {
    ::kill(child.pid, SIGKILL);
    ::waitpid(child.pid, nullptr, 0);
    Fail(ErrorCode::kUnavailable, "{} did not finish within 30 s", sendmail);
  }
  int status = 0;
  ::waitpid(child.pid, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    Fail(ErrorCode::kUnavailable, "{} failed (status {})", sendmail, status);
  }
}

}  // namespace ephemera::wirt
