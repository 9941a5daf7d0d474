// A small HTTP/1.1 server framework on Boost.Beast: listener, keep-alive sessions, a (method,
// path) router, full and streamed (chunked) responses, and graceful shutdown.
//
// One HttpServer is one listening port with its own route table and io_context (run by
// options.threads threads), so the API and admin listeners are two instances. Each connection is
// a session on its own strand: everything that touches its socket runs there, one request at a
// time (pipelined requests wait their turn), at most one write in flight.
//
// Handlers run on the session's strand and must not block. A handler answers through the
// HttpExchange it is given, now or later, from any thread. The server enforces the limits in
// HttpServerLimits, rejects request-smuggling shapes (Transfer-Encoding other than a single
// `chunked`, Transfer-Encoding together with Content-Length, HTTP/1.1 without exactly one Host)
// with 400 and a close, and answers unknown paths/methods with OpenAI-style 404/405 bodies.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/verb.hpp>

#include "gateway/http_types.h"
#include "kernels/status.h"

namespace qgate {

struct HttpRequest {
  boost::beast::http::request<boost::beast::http::string_body> message;  // fields + body
  std::string path;   // target before '?'
  std::string query;  // after '?', undecoded
  std::string peer;   // "address:port" of the client

  // The value of the first field `name` (case-insensitive), or empty.
  std::string_view header(std::string_view name) const;
};

// The response side of one request. Calls are thread-safe and are applied on the session's strand
// in the order they were made (from one thread; across threads the caller orders them). The
// exchange completes with respond(), or start_stream() ... finish_stream(), or abort(); calls after
// completion, or out of that order, are ignored. If the last reference is dropped before it
// completed, the client gets a 500 (nothing sent yet) or the connection is cut (mid-stream).
// Keeping an exchange alive keeps its session and the server's io_context alive (not the threads).
class HttpExchange {
 public:
  virtual ~HttpExchange() = default;
  virtual void respond(HttpResponse response) = 0;
  // Sends the status line and fields with chunked transfer encoding; body pieces follow.
  virtual void start_stream(unsigned status, std::string content_type, HttpHeaders headers) = 0;
  // One body piece; written as one chunk, or merged with others queued behind a slow client.
  virtual void write(std::string data) = 0;
  // The terminating chunk. With close_connection the connection closes after it (no keep-alive).
  virtual void finish_stream(bool close_connection = false) = 0;
  // Closes the connection at once without completing the response.
  virtual void abort() = 0;

  // True once the client disconnected, a write to it failed or timed out, its backlog exceeded
  // max_stream_backlog_bytes, or shutdown cut it off -- before the exchange completed.
  virtual bool client_gone() const = 0;
  // `callback` runs once when the client goes (as above): on the session's strand, or at once on
  // the calling thread if that already happened. Replaces an earlier callback. Never runs after
  // the exchange completed normally.
  virtual void on_cancel(std::function<void()> callback) = 0;
  // Streamed bytes accepted but not yet written to the socket, for producers that can pause.
  virtual size_t backlog_bytes() const = 0;
};

using HttpHandler = std::function<void(HttpRequest request, std::shared_ptr<HttpExchange> exchange)>;
// For quick synchronous endpoints (/healthz, /metrics, admin reads): the return value is the answer.
using SimpleHttpHandler = std::function<HttpResponse(const HttpRequest& request)>;

// Exact-path routing; paths are matched without the query string.
class HttpRouter {
 public:
  void add(boost::beast::http::verb method, std::string path, HttpHandler handler);
  void add_simple(boost::beast::http::verb method, std::string path, SimpleHttpHandler handler);

  struct Match {
    const HttpHandler* handler = nullptr;  // null: no route for this method
    std::string allowed;                   // methods registered for the path ("GET, POST")
  };
  Match find(boost::beast::http::verb method, std::string_view path) const;

 private:
  struct Route {
    boost::beast::http::verb method;
    std::string path;
    HttpHandler handler;
  };
  std::vector<Route> routes_;
};

struct HttpServerStats {
  uint64_t connections_accepted = 0;
  uint64_t connections_open = 0;
  uint64_t requests = 0;          // requests that reached a handler
  uint64_t rejected = 0;          // answered by the server itself (limits, smuggling, 404/405)
  uint64_t cancelled = 0;         // exchanges whose client went away before they completed
};

class HttpServer {
 public:
  // Binds, listens and starts the threads. IoError when the address cannot be bound.
  static Result<std::unique_ptr<HttpServer>> start(HttpServerOptions options, HttpRouter router);
  virtual ~HttpServer() = default;  // shuts down with no grace if shutdown() was not called

  virtual uint16_t port() const = 0;
  // Stops accepting, closes idle connections, lets requests in flight finish until `grace` has
  // passed (then cuts them off: their exchanges see a cancellation), and joins the threads.
  // Blocking; idempotent. Responses finished while draining carry `Connection: close`. Afterwards
  // the route handlers (and whatever they captured) are released.
  virtual void shutdown(std::chrono::steady_clock::duration grace) = 0;
  virtual HttpServerStats stats() const = 0;
};

}  // namespace qgate
