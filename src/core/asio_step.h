// Blocking network steps with a deadline each, on Asio's asynchronous calls
// (its synchronous ones cannot time out): a client's resolve, connect,
// handshake, write and every read of a body that may stall.
#pragma once

#include <boost/asio/error.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/system/error_code.hpp>
#include <chrono>
#include <optional>
#include <string>

namespace ephemera {

// Runs one asynchronous step until it completes or `limit` passes; on
// timeout `cancel` aborts it and the step reports timed_out. `start` gets a
// completion callable taking the step's error_code.
template <typename Start, typename Cancel>
boost::system::error_code RunStep(boost::asio::io_context& io, std::chrono::milliseconds limit,
                                  Start start, Cancel cancel) {
  std::optional<boost::system::error_code> result;
  io.restart();
  start([&result](boost::system::error_code ec) { result = ec; });
  io.run_for(limit);
  if (result) return *result;
  cancel();
  io.restart();
  io.run();
  return boost::asio::error::timed_out;
}

// "timed out after N s" for a step's timeout, the error's message otherwise.
inline std::string DescribeStepError(const boost::system::error_code& ec,
                                     std::chrono::milliseconds limit) {
  if (ec == boost::asio::error::timed_out) {
    return "timed out after " + std::to_string((limit.count() + 999) / 1000) + " s";
  }
  return ec.message();
}

}  // namespace ephemera
