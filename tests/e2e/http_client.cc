#include "e2e/http_client.h"

#include <algorithm>
#include <sstream>

#include "core/subprocess.h"

namespace ephemera::test {

using namespace std::chrono_literals;

CurlResult Curl(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {"curl", "-sS", "-i", "--max-time", "180"};
  argv.insert(argv.end(), args.begin(), args.end());
  ProcessResult r = RunProcess(argv, 200s);
  CurlResult result;
  std::string out = r.out;
  std::size_t end_of_headers = out.find("\r\n\r\n");
  if (out.rfind("HTTP/", 0) != 0 || end_of_headers == std::string::npos) return result;
  std::istringstream head(out.substr(0, end_of_headers));
  std::string line;
  std::getline(head, line);
  result.status = std::stoi(line.substr(line.find(' ') + 1, 3));
  while (std::getline(head, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string name = line.substr(0, colon);
    std::transform(name.begin(), name.end(), name.begin(), ::tolower);
    result.headers[name] = line.substr(line.find_first_not_of(' ', colon + 1));
  }
  result.body = out.substr(end_of_headers + 4);
  return result;
}

}  // namespace ephemera::test
