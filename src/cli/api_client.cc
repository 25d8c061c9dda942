#include "cli/api_client.h"

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

namespace ephemera::cli {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;

nlohmann::json ApiClient::Request(const std::string& method, const std::string& target,
                                  const std::string& body) {
  asio::io_context io;
  asio::local::stream_protocol::socket socket(io);
  beast::error_code ec;
  socket.connect(asio::local::stream_protocol::endpoint(socket_.string()), ec);
  if (ec) {
    throw ApiError(0, "cannot reach ephemerad at " + socket_.string() + ": " + ec.message());
  }
  http::request<http::string_body> request{http::string_to_verb(method), target, 11};
  request.set(http::field::host, "localhost");
  request.set(http::field::user_agent, "ephemera-cli");
  if (!body.empty()) {
    request.set(http::field::content_type, "application/json");
    request.body() = body;
  }
  request.prepare_payload();
  http::write(socket, request, ec);
  beast::flat_buffer buffer;
  http::response_parser<http::string_body> parser;
  parser.body_limit(64 * 1024 * 1024);
  if (!ec) http::read(socket, buffer, parser, ec);
  if (ec) throw ApiError(0, "talking to ephemerad failed: " + ec.message());
  auto response = parser.release();
  nlohmann::json json = nlohmann::json::parse(response.body(), nullptr, false);
  unsigned status = response.result_int();
  if (status / 100 != 2) {
    std::string message = "HTTP " + std::to_string(status);
    if (json.is_object() && json.contains("error") && json["error"].is_object()) {
      message = json["error"].value("message", message);
    }
    throw ApiError(status, message);
  }
  if (json.is_discarded()) throw ApiError(status, "ephemerad sent a body that is not JSON");
  return json;
}

}  // namespace ephemera::cli
