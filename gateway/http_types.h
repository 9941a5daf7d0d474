// Plain HTTP types shared by the server framework (http_server.h) and the API layers above it:
// limits, server options and a response value. No Beast here, so error helpers and handlers can
// build responses without pulling in the networking headers.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace qgate {

using HttpHeaders = std::vector<std::pair<std::string, std::string>>;

// Limits applied to every connection of one server. The names mirror serve_config.h's HttpLimits
// so `qgate serve` copies them field by field.
struct HttpServerLimits {
  size_t max_header_bytes = 16 * 1024;  // start line + fields; beyond it: 431 and close
  size_t max_body_bytes = 1024 * 1024;  // decoded body; beyond it: 413 and close
  // Reading one request, from its first byte to the end of its body (slow-loris bound).
  std::chrono::steady_clock::duration read_timeout = std::chrono::seconds(30);
  // Waiting for the first byte of the next request on a kept-alive connection.
  std::chrono::steady_clock::duration idle_timeout = std::chrono::seconds(60);
  // One write to the client (a full response, or one streamed chunk).
  std::chrono::steady_clock::duration write_timeout = std::chrono::seconds(30);
  // Streamed bytes queued for a client that reads slower than the producer writes. The engine
  // cannot pause one sequence, so beyond this the client counts as gone (the request is cancelled).
  size_t max_stream_backlog_bytes = 1024 * 1024;
};

struct HttpServerOptions {
  std::string name = "http";       // for logs: "api", "admin"
  std::string host = "127.0.0.1";  // address to bind
  uint16_t port = 0;               // 0 = the OS picks one; HttpServer::port() tells which
  int threads = 2;                 // threads running the io_context
  HttpServerLimits limits;
};

struct HttpResponse {
  unsigned status = 200;
  std::string content_type = "application/json";
  HttpHeaders headers;  // extra fields (e.g. Retry-After, x-qgate-variant)
  std::string body;
};

}  // namespace qgate
