// Internal to the HTTP server (http_server.cpp, http_session.cpp): what a server shares with its
// connections, and the operations the listener needs on a session. Not for use elsewhere.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>

#include "gateway/http_server.h"

namespace qgate {

class HttpSession;

// What the server and all its sessions share. Sessions hold it, so it outlives the server object.
struct HttpServerCore {
  std::string name;
  HttpServerLimits limits;
  HttpRouter router;
  std::weak_ptr<boost::asio::io_context> ioc;  // exchanges lock it: posting needs a live io_context
  std::atomic<bool> draining{false};
  std::atomic<uint64_t> accepted{0}, requests{0}, rejected{0}, cancelled{0};

  std::mutex mu;
  std::condition_variable closed_cv;
  std::unordered_map<uint64_t, std::weak_ptr<HttpSession>> open;  // guarded by mu
  uint64_t next_id = 0;                                       // guarded by mu

  void on_closed(uint64_t id) {
    std::lock_guard lock(mu);
    open.erase(id);
    closed_cv.notify_all();
  }
};

// Creates the session for an accepted connection, registers it in core->open and starts reading.
void start_http_session(const std::shared_ptr<HttpServerCore>& core,
                        boost::asio::ip::tcp::socket socket);
// Shutdown, step 1 (posted onto the session's strand): close if idle, else close after the
// response in progress.
void drain_http_session(const std::shared_ptr<HttpSession>& session);
// Shutdown, step 2: cut the connection; an exchange in progress sees a cancellation.
void force_close_http_session(const std::shared_ptr<HttpSession>& session);

}  // namespace qgate
