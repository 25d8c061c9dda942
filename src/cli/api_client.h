// The CLI's HTTP client for the daemon's /v1 API on a unix socket.
#pragma once

#include <filesystem>
#include <stdexcept>
#include <string>

#include <nlohmann/json.hpp>

namespace ephemera::cli {

// A failed request: the server's message (or why it could not be reached).
class ApiError : public std::runtime_error {
 public:
  ApiError(unsigned status, const std::string& message)
      : std::runtime_error(message), status_(status) {}
  unsigned status() const { return status_; }  // 0 when the daemon could not be reached

 private:
  unsigned status_;
};

class ApiClient {
 public:
  explicit ApiClient(std::filesystem::path socket) : socket_(std::move(socket)) {}

  // Sends one request and returns the parsed JSON body of a 2xx answer;
  // throws ApiError otherwise.
  nlohmann::json Request(const std::string& method, const std::string& target,
                         const std::string& body = "");

 private:
  std::filesystem::path socket_;
};

}  // namespace ephemera::cli
