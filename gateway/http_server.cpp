// The listener: binds, accepts onto a fresh strand per connection, and runs the shutdown sequence.
// Sessions (http_session.cpp) do the HTTP work.
#include "gateway/http_server.h"

#include <thread>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core/string.hpp>
#include <spdlog/spdlog.h>

#include "gateway/http_session.h"

namespace qgate {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;
using error_code = boost::system::error_code;

std::string_view HttpRequest::header(std::string_view name) const {
  auto it = message.find(beast::string_view(name.data(), name.size()));
  if (it == message.end()) return {};
  return {it->value().data(), it->value().size()};
}

void HttpRouter::add(http::verb method, std::string path, HttpHandler handler) {
  routes_.push_back({method, std::move(path), std::move(handler)});
}

void HttpRouter::add_simple(http::verb method, std::string path, SimpleHttpHandler handler) {
  add(method, std::move(path),
      [h = std::move(handler)](HttpRequest request, std::shared_ptr<HttpExchange> exchange) {
        exchange->respond(h(request));
      });
}

HttpRouter::Match HttpRouter::find(http::verb method, std::string_view path) const {
  Match m;
  for (const auto& r : routes_) {
    if (r.path != path) continue;
    if (r.method == method) m.handler = &r.handler;
    if (!m.allowed.empty()) m.allowed += ", ";
    m.allowed += std::string(http::to_string(r.method));
  }
  return m;
}

namespace {

class HttpServerImpl final : public HttpServer {
 public:
  HttpServerImpl(std::shared_ptr<net::io_context> ioc, std::shared_ptr<HttpServerCore> core,
                 tcp::acceptor acceptor, int threads)
      : ioc_(std::move(ioc)), core_(std::move(core)), acceptor_(std::move(acceptor)),
        work_(net::make_work_guard(*ioc_)) {
    port_ = acceptor_.local_endpoint().port();
    do_accept();
    for (int i = 0; i < threads; ++i) threads_.emplace_back([this] { ioc_->run(); });
  }
  ~HttpServerImpl() override { shutdown(std::chrono::steady_clock::duration::zero()); }

  uint16_t port() const override { return port_; }

  void shutdown(std::chrono::steady_clock::duration grace) override {
    std::lock_guard once(shutdown_mu_);
    if (threads_.empty()) return;
    core_->draining = true;
    net::post(acceptor_.get_executor(), [this] {
      error_code ignored;
      acceptor_.close(ignored);
    });
    for_each_session(drain_http_session);
    const auto deadline = std::chrono::steady_clock::now() + grace;
    if (!wait_closed(deadline)) {
      spdlog::warn("{}: shutdown grace over; cutting off {} connection(s)", core_->name,
                   stats().connections_open);
      for_each_session(force_close_http_session);
      // Closing is local and immediate; this bound only guards against a wedged handler.
      wait_closed(std::chrono::steady_clock::now() + std::chrono::seconds(5));
    }
    work_.reset();
    ioc_->stop();
    for (auto& t : threads_) t.join();
    threads_.clear();
    // Nothing dispatches any more. Releasing the handlers breaks the cycle a service would
    // otherwise close by holding on to responders: service -> exchange -> session -> core ->
    // router -> handler -> service.
    core_->router = HttpRouter{};
  }

  HttpServerStats stats() const override {
    HttpServerStats s;
    s.connections_accepted = core_->accepted;
    s.requests = core_->requests;
    s.rejected = core_->rejected;
    s.cancelled = core_->cancelled;
    std::lock_guard lock(core_->mu);
    s.connections_open = core_->open.size();
    return s;
  }

 private:
  void do_accept() {
    acceptor_.async_accept(net::make_strand(*ioc_), [this](error_code ec, tcp::socket socket) {
      if (ec == net::error::operation_aborted || !acceptor_.is_open()) return;
      if (!ec && !core_->draining) {
        ++core_->accepted;
        start_http_session(core_, std::move(socket));
      }
      do_accept();
    });
  }
  template <typename F>
  void for_each_session(F f) {
    std::lock_guard lock(core_->mu);
    for (auto& [id, weak] : core_->open) {
      if (auto s = weak.lock()) f(s);
    }
  }
  bool wait_closed(std::chrono::steady_clock::time_point deadline) {
    std::unique_lock lock(core_->mu);
    return core_->closed_cv.wait_until(lock, deadline, [&] { return core_->open.empty(); });
  }

  std::shared_ptr<net::io_context> ioc_;  // first: outlives the acceptor and the work guard
  std::shared_ptr<HttpServerCore> core_;
  tcp::acceptor acceptor_;
  net::executor_work_guard<net::io_context::executor_type> work_;
  uint16_t port_ = 0;
  std::mutex shutdown_mu_;
  std::vector<std::thread> threads_;
};

}  // namespace

Result<std::unique_ptr<HttpServer>> HttpServer::start(HttpServerOptions options,
                                                      HttpRouter router) {
  if (options.threads < 1) {
    return make_error(ErrorCode::kInvalidArgument, "http server threads must be >= 1");
  }
  error_code ec;
  const auto address = net::ip::make_address(options.host, ec);
  if (ec) {
    return make_error(ErrorCode::kInvalidArgument,
                      options.name + ": bad listen address '" + options.host + "'");
  }
  auto ioc = std::make_shared<net::io_context>(options.threads);
  auto core = std::make_shared<HttpServerCore>();
  core->name = options.name;
  core->limits = options.limits;
  core->router = std::move(router);
  core->ioc = ioc;

  tcp::acceptor acceptor(net::make_strand(*ioc));
  const tcp::endpoint endpoint(address, options.port);
  auto fail = [&](const char* what) {
    return make_error(ErrorCode::kIo, options.name + ": cannot " + what + " " + options.host +
                                          ":" + std::to_string(options.port) + ": " +
                                          ec.message());
  };
  if (acceptor.open(endpoint.protocol(), ec)) return fail("open");
  if (acceptor.set_option(net::socket_base::reuse_address(true), ec)) return fail("configure");
  if (acceptor.bind(endpoint, ec)) return fail("bind");
  if (acceptor.listen(net::socket_base::max_listen_connections, ec)) return fail("listen on");
  return std::unique_ptr<HttpServer>(
      new HttpServerImpl(std::move(ioc), std::move(core), std::move(acceptor), options.threads));
}

}  // namespace qgate
