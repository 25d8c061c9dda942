// curl as the real HTTP(S) client of end-to-end tests.
#pragma once

#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace ephemera::test {

struct CurlResult {
  int status = 0;  // 0: no HTTP answer (connection refused, reset, TLS failure)
  std::map<std::string, std::string> headers;  // names lowercased
  std::string body;
  nlohmann::json Json() const { return nlohmann::json::parse(body); }
};

// Runs `curl -sS -i <args>` and splits the answer.
CurlResult Curl(const std::vector<std::string>& args);

}  // namespace ephemera::test
