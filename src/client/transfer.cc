#include "client/transfer.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>

namespace ephemera::client {

void WriteAll(int fd, std::string_view bytes, std::string_view what) {
  while (!bytes.empty()) {
    ssize_t n = ::write(fd, bytes.data(), bytes.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      throw ApiError(0, "cannot write " + std::string(what) + ": " + std::strerror(errno));
    }
    bytes.remove_prefix(static_cast<std::size_t>(n));
  }
}

std::string PathSegment(const std::string& text) {
  static constexpr char kDigits[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : text) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      out += {'%', kDigits[c >> 4], kDigits[c & 15]};
    }
  }
  return out;
}

void CopyFromGuest(ApiClient& client, const Headers& token, const std::string& id,
                   const std::string& guest_path, const std::string& local) {
  const bool to_stdout = local == "-";
  const std::string partial = local + ".ephemera-part";
  int fd = to_stdout ? STDOUT_FILENO
                     : ::open(partial.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw ApiError(0, "cannot write " + partial + ": " + std::strerror(errno));
  try {
    client.Download(
        "/v1/sandboxes/" + PathSegment(id) + "/files?path=" + PathSegment(guest_path),
        [&](std::string_view bytes) { WriteAll(fd, bytes, local); }, token);
  } catch (...) {
    if (!to_stdout) {
      ::close(fd);
      ::unlink(partial.c_str());
    }
    throw;
  }
  if (!to_stdout) {
    // Complete only: a copy that failed half-way leaves nothing under the name.
    if (::close(fd) != 0 || ::rename(partial.c_str(), local.c_str()) != 0) {
      ::unlink(partial.c_str());
      throw ApiError(0, "cannot write " + local + ": " + std::strerror(errno));
    }
  }
}

void CopyToGuest(ApiClient& client, const Headers& token, const std::string& local,
                 const std::string& id, const std::string& guest_path, bool tar) {
  std::string target =
      "/v1/sandboxes/" + PathSegment(id) + "/files?path=" + PathSegment(guest_path);
  struct stat st {};
  if (::stat(local.c_str(), &st) != 0) {
    throw ApiError(0, "cannot read " + local + ": " + std::strerror(errno));
  }
  if (S_ISDIR(st.st_mode)) {
    throw ApiError(0, local + " is a folder: send it as a tar (tar -c -f x.tar -C " + local +
                          " . && ephemera cp --tar x.tar ID:PATH)");
  }
  if (!S_ISREG(st.st_mode)) throw ApiError(0, local + " is not a regular file");
  if (!tar) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 0777));
    target += "&mode=" + std::string(mode);  // the file's own, as cp keeps it
  }
  client.Upload("PUT", target, local, tar ? "application/x-tar" : "application/octet-stream",
                token);
}

}  // namespace ephemera::client
