// Async style: completion-handler pairs (do_x / on_x), as in Beast's advanced server, not C++20
// coroutines. A session is driven by events from three independent sources -- its socket reads,
// its socket writes, and response events posted by producers on other threads (the engine's
// scheduler) -- and each maps onto one handler on the session strand. With coroutines the writer
// would need a channel or a timer used as a condition variable to wake it for each event.
#include "gateway/http_session.h"

#include <sys/socket.h>

#include <array>
#include <cerrno>
#include <deque>
#include <optional>

#include <boost/asio/dispatch.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <spdlog/spdlog.h>

#include "gateway/api_errors.h"

namespace qgate {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;
using error_code = boost::system::error_code;

// Per-exchange state shared by the producer-facing handle and the session.
struct HttpExchangeState {
  std::atomic<bool> gone{false};
  std::atomic<size_t> backlog{0};
  std::mutex mu;
  std::function<void()> on_cancel;  // guarded by mu
  bool settled = false;             // guarded by mu: completed or cancelled; callback consumed

  // The client went away before completion: run the callback once, outside the lock.
  void cancel() {
    std::function<void()> cb;
    {
      std::lock_guard lock(mu);
      if (settled) return;
      settled = true;
      gone = true;
      cb = std::move(on_cancel);
    }
    if (cb) cb();
  }
  void complete() {
    std::lock_guard lock(mu);
    settled = true;
    on_cancel = nullptr;  // releases whatever the producer captured
  }
};

namespace {

// A header problem that Beast's parser lets through but that could desynchronise this server from
// a proxy in front of it (request smuggling), or "" when the framing is sound.
std::string framing_problem(const http::request<http::string_body>& req) {
  const auto host_count = std::distance(req.equal_range(http::field::host).first,
                                        req.equal_range(http::field::host).second);
  if (req.version() >= 11 && host_count == 0) return "HTTP/1.1 requests must carry a Host header";
  if (host_count > 1) return "more than one Host header";

  int codings = 0;
  int chunked = 0;
  for (auto [it, end] = req.equal_range(http::field::transfer_encoding); it != end; ++it) {
    for (auto coding : http::token_list(it->value())) {
      ++codings;
      if (!beast::iequals(coding, "chunked")) {
        return "unsupported transfer coding '" + std::string(coding) + "'";
      }
      ++chunked;
    }
  }
  if (codings == 0) return "";
  if (req.version() < 11) return "Transfer-Encoding is not allowed in an HTTP/1.0 request";
  if (chunked != 1) return "chunked must be applied exactly once";
  if (req.count(http::field::content_length) > 0) {
    return "Transfer-Encoding and Content-Length must not both be present";
  }
  return "";
}

// Handlers' extra fields may carry request-derived text (an echoed id, a variant name): a CR or LF
// in them would let a client inject response headers, and Beast may throw on them.
bool safe_field(std::string_view name, std::string_view value) {
  if (name.empty()) return false;
  for (char c : name) {
    if (c <= ' ' || c == ':' || c == 0x7f) return false;
  }
  return value.find_first_of(std::string_view("\r\n\0", 3)) == std::string_view::npos;
}

template <typename Message>
void add_fields(Message& m, const HttpHeaders& headers, const std::string& server) {
  for (const auto& [k, v] : headers) {
    if (safe_field(k, v)) {
      m.insert(k, v);
    } else {
      spdlog::error("{}: dropping unsafe response field '{}'", server, k);
    }
  }
}

constexpr char kContinue[] = "HTTP/1.1 100 Continue\r\n\r\n";
constexpr size_t kFirstReadBytes = 4096;
// How long a rejected client may keep sending before the close: lets it read the error first.
constexpr auto kLingerTime = std::chrono::seconds(2);

}  // namespace

class HttpSession : public std::enable_shared_from_this<HttpSession> {
 public:
  HttpSession(std::shared_ptr<HttpServerCore> core, uint64_t id, tcp::socket socket)
      : core_(std::move(core)), id_(id), stream_(std::move(socket)),
        strand_(stream_.get_executor()) {
    error_code ec;
    // Streamed tokens are small writes: without TCP_NODELAY, Nagle holds each one back until the
    // client's (delayed) ACK of the previous one, adding up to 40 ms per chunk.
    stream_.socket().set_option(tcp::no_delay(true), ec);
    auto ep = stream_.socket().remote_endpoint(ec);
    if (!ec) peer_ = ep.address().to_string() + ":" + std::to_string(ep.port());
  }

  ~HttpSession() {
    // Only reached unclosed when the io_context is destroyed with this session's handlers queued.
    if (phase_ != Phase::kClosed) core_->on_closed(id_);
  }

  const net::any_io_executor& strand() const { return strand_; }
  void start() { net::dispatch(strand_, [self = shared_from_this()] { self->read_next(); }); }

  // --- events from the server (posted onto the strand) ----------------------------------------
  void begin_drain() {
    if (phase_ == Phase::kReading || phase_ == Phase::kLingering) close();
  }
  void force_close() {
    if (state_) return client_gone();
    close();
  }

  // --- events from the exchange handle (posted onto the strand) -------------------------------
  void on_respond(const std::shared_ptr<HttpExchangeState>& st, HttpResponse response) {
    if (st != state_ || phase_ != Phase::kHandling) return;
    write_full(std::move(response), keep_alive_ && !core_->draining);
  }
  void on_start_stream(const std::shared_ptr<HttpExchangeState>& st, unsigned status,
                       std::string content_type, HttpHeaders headers);
  void on_write(const std::shared_ptr<HttpExchangeState>& st, std::string data);
  void on_finish_stream(const std::shared_ptr<HttpExchangeState>& st, bool close_connection) {
    if (st != state_ || phase_ != Phase::kStreaming || end_requested_) return;
    end_requested_ = true;
    if (close_connection) keep_alive_ = false;
    pump();
  }
  void on_abort(const std::shared_ptr<HttpExchangeState>& st) {
    if (st != state_) return;
    finish_exchange();
    close();
  }
  // The producer let go of the exchange without completing it: a bug on its side.
  void on_dropped(const std::shared_ptr<HttpExchangeState>& st) {
    if (st != state_) return;
    if (phase_ == Phase::kHandling) {
      spdlog::error("{}: handler dropped {} without answering", core_->name, target_);
      write_full(api_error_response(ApiError::internal("the request was dropped unanswered")),
                 keep_alive_ && !core_->draining);
    } else {
      finish_exchange();
      close();
    }
  }

 private:
  enum class Phase { kReading, kHandling, kFullResponse, kStreaming, kLingering, kClosed };

  // --- reading ----------------------------------------------------------------------------------
  void read_next() {
    if (core_->draining) return close();
    phase_ = Phase::kReading;
    parser_.emplace();
    parser_->header_limit(static_cast<uint32_t>(core_->limits.max_header_bytes));
    parser_->body_limit(core_->limits.max_body_bytes);
    if (buffer_.size() > 0) return read_header();  // a pipelined request is already here
    // Idle keep-alive wait: a separate, usually longer, timeout than reading a request.
    stream_.expires_after(core_->limits.idle_timeout);
    stream_.async_read_some(buffer_.prepare(kFirstReadBytes),
                            beast::bind_front_handler(&HttpSession::on_first_bytes, shared_from_this()));
  }
  void on_first_bytes(error_code ec, size_t n) {
    if (phase_ == Phase::kClosed) return;
    if (ec) return close();  // idle timeout, or the client closed between requests
    buffer_.commit(n);
    read_header();
  }
  void read_header() {
    // One deadline covers header and body: a client trickling bytes cannot hold the session.
    stream_.expires_after(core_->limits.read_timeout);
    http::async_read_header(stream_, buffer_, *parser_,
                            beast::bind_front_handler(&HttpSession::on_header, shared_from_this()));
  }
  void on_header(error_code ec, size_t) {
    if (phase_ == Phase::kClosed) return;
    if (ec) return on_read_error(ec);
    const auto& req = parser_->get();
    if (auto problem = framing_problem(req); !problem.empty()) {
      return reject(ApiError::invalid_request("", "malformed request: " + problem));
    }
    if (req.version() >= 11 && beast::iequals(req[http::field::expect], "100-continue") &&
        !parser_->is_done()) {
      return net::async_write(stream_, net::buffer(kContinue, sizeof(kContinue) - 1),
                              [self = shared_from_this()](error_code e, size_t) {
                                if (e) return self->close();
                                self->read_body();
                              });
    }
    read_body();
  }
  void read_body() {
    http::async_read(stream_, buffer_, *parser_,
                     beast::bind_front_handler(&HttpSession::on_body, shared_from_this()));
  }
  void on_body(error_code ec, size_t) {
    if (phase_ == Phase::kClosed) return;
    if (ec) return on_read_error(ec);
    dispatch();
  }
  void on_read_error(error_code ec) {
    if (ec == http::error::header_limit) {
      return reject(ApiError::headers_too_large(core_->limits.max_header_bytes));
    }
    if (ec == http::error::body_limit) {
      return reject(ApiError::body_too_large(core_->limits.max_body_bytes));
    }
    if (ec == http::error::end_of_stream || ec == http::error::partial_message ||
        ec == beast::error::timeout || ec == net::error::eof ||
        ec == net::error::connection_reset || ec == net::error::operation_aborted) {
      return close();
    }
    reject(ApiError::invalid_request("", "malformed request: " + ec.message()));
  }

  // --- dispatching ------------------------------------------------------------------------------
  void dispatch() {
    HttpRequest request;
    request.message = parser_->release();
    parser_.reset();
    const std::string_view target(request.message.target().data(),
                                  request.message.target().size());
    const auto q = target.find('?');
    request.path = std::string(target.substr(0, q));
    if (q != std::string_view::npos) request.query = std::string(target.substr(q + 1));
    request.peer = peer_;
    target_ = request.path;
    version_ = request.message.version();
    keep_alive_ = request.message.keep_alive();

    const auto match = core_->router.find(request.message.method(), request.path);
    if (match.handler == nullptr) {
      ++core_->rejected;
      const auto method = request.message.method_string();
      HttpResponse r = api_error_response(
          match.allowed.empty()
              ? ApiError::not_found(request.path)
              : ApiError::method_not_allowed(std::string_view(method.data(), method.size()),
                                             request.path));
      if (!match.allowed.empty()) r.headers.emplace_back("Allow", match.allowed);
      return write_full(std::move(r), keep_alive_ && !core_->draining);
    }
    ++core_->requests;
    phase_ = Phase::kHandling;
    state_ = std::make_shared<HttpExchangeState>();
    start_watch();
    auto exchange = make_exchange();
    auto keep = exchange;  // answers if the handler throws after giving its copy away
    try {
      (*match.handler)(std::move(request), std::move(exchange));
    } catch (const std::exception& e) {
      spdlog::error("{}: handler for {} threw: {}", core_->name, target_, e.what());
      keep->respond(api_error_response(ApiError::internal("internal error")));
    }
  }
  std::shared_ptr<HttpExchange> make_exchange();

  // While a handler works, watch the idle socket so a client that hangs up is noticed (and the
  // engine request cancelled) without waiting for the next write to fail. A peek tells EOF (0
  // bytes) from a pipelined request (bytes, left for the parser) and from a spurious wake-up:
  // with edge-triggered epoll, readiness for bytes an earlier read already consumed can still be
  // delivered to the wait (no bytes, EAGAIN), which must not count as a hang-up.
  void start_watch() {
    if (buffer_.size() > 0 || watching_) return;
    watching_ = true;
    stream_.socket().async_wait(tcp::socket::wait_read,
                                beast::bind_front_handler(&HttpSession::on_watch, shared_from_this()));
  }
  void on_watch(error_code ec) {
    watching_ = false;
    if (phase_ == Phase::kClosed) return;
    bool hung_up = false;
    bool spurious = false;
    if (ec && ec != net::error::operation_aborted) {
      hung_up = true;
    } else if (!ec) {
      char c;
      const ssize_t n = ::recv(stream_.socket().native_handle(), &c, 1, MSG_PEEK | MSG_DONTWAIT);
      hung_up = n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
      spurious = n < 0 && !hung_up;
    }
    if (resume_read_) {
      resume_read_ = false;
      return hung_up ? close() : read_next();
    }
    if (hung_up) {
      // A write in flight decides: the client may have read the whole answer and then closed
      // before that write's completion ran here. Only a failed write counts as a cancellation.
      if (phase_ == Phase::kFullResponse || writing_) {
        peer_closed_ = true;
        return;
      }
      return client_gone();
    }
    if (spurious) start_watch();
  }

  // --- writing ----------------------------------------------------------------------------------
  void write_full(HttpResponse r, bool keep_alive) {
    phase_ = Phase::kFullResponse;
    keep_alive_ = keep_alive;
    auto res = std::make_shared<http::response<http::string_body>>(
        static_cast<http::status>(r.status), version_);
    if (safe_field("Content-Type", r.content_type)) {
      res->set(http::field::content_type, r.content_type);
    }
    add_fields(*res, r.headers, core_->name);
    res->keep_alive(keep_alive);
    res->body() = std::move(r.body);
    res->prepare_payload();
    stream_.expires_after(core_->limits.write_timeout);
    http::async_write(stream_, *res, [self = shared_from_this(), res](error_code ec, size_t) {
      self->on_response_done(ec);
    });
  }
  void on_response_done(error_code ec) {
    if (ec) return client_gone();
    finish_exchange();
    if (!keep_alive_ || core_->draining || peer_closed_) return close();
    if (watching_) {
      // Only one read at a time: stop the watch first; its handler continues with read_next().
      resume_read_ = true;
      error_code ignored;
      stream_.socket().cancel(ignored);
      return;
    }
    read_next();
  }

  void pump();
  void on_stream_written(error_code ec, size_t payload);

  // --- endings ----------------------------------------------------------------------------------
  // Answers a request the server refuses itself, then closes: the rest of the request may still be
  // in flight and cannot be trusted to be framed the way the client thinks.
  void reject(const ApiError& error) {
    ++core_->rejected;
    phase_ = Phase::kFullResponse;
    keep_alive_ = false;
    auto res = std::make_shared<http::response<http::string_body>>(
        static_cast<http::status>(error.status), 11);
    res->set(http::field::content_type, "application/json");
    res->keep_alive(false);
    res->body() = api_error_body(error);
    res->prepare_payload();
    stream_.expires_after(core_->limits.write_timeout);
    http::async_write(stream_, *res, [self = shared_from_this(), res](error_code ec, size_t) {
      if (ec) return self->close();
      self->linger();
    });
  }
  // Half-close and drain what the client still sends, so our answer is not lost to a TCP reset
  // (closing a socket with unread input sends RST, which can discard the client's receive queue).
  void linger() {
    phase_ = Phase::kLingering;
    error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
    stream_.expires_after(std::min<std::chrono::steady_clock::duration>(
        kLingerTime, core_->limits.read_timeout));
    drain_some();
  }
  void drain_some() {
    stream_.async_read_some(net::buffer(discard_),
                            [self = shared_from_this()](error_code ec, size_t) {
                              if (ec) return self->close();
                              self->drain_some();
                            });
  }
  void finish_exchange() {
    if (state_) state_->complete();
    state_.reset();
  }
  void client_gone() {
    if (phase_ == Phase::kClosed) return;
    if (state_) {
      ++core_->cancelled;
      auto st = std::move(state_);
      st->cancel();
    }
    close();
  }
  void close() {
    if (phase_ == Phase::kClosed) return;
    phase_ = Phase::kClosed;
    error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
    stream_.close();
    if (state_) finish_exchange();
    core_->on_closed(id_);
  }

  std::shared_ptr<HttpServerCore> core_;
  const uint64_t id_;
  beast::tcp_stream stream_;
  const net::any_io_executor strand_;
  std::string peer_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  Phase phase_ = Phase::kReading;
  std::string target_;
  unsigned version_ = 11;
  bool keep_alive_ = true;
  bool watching_ = false;
  bool resume_read_ = false;
  bool peer_closed_ = false;  // the watch saw EOF while a write was in flight
  std::shared_ptr<HttpExchangeState> state_;  // the exchange in progress, if any
  // Streaming.
  std::unique_ptr<http::response<http::empty_body>> head_;
  std::unique_ptr<http::response_serializer<http::empty_body>> head_sr_;
  bool chunked_ = true;
  bool head_pending_ = false;
  bool writing_ = false;
  bool end_requested_ = false;
  bool last_write_ = false;
  std::deque<std::string> pending_;
  std::string out_;  // the payload of the write in flight
  std::array<char, 4096> discard_{};
};

void HttpSession::on_start_stream(const std::shared_ptr<HttpExchangeState>& st, unsigned status,
                              std::string content_type, HttpHeaders headers) {
  if (st != state_ || phase_ != Phase::kHandling) return;
  phase_ = Phase::kStreaming;
  head_ = std::make_unique<http::response<http::empty_body>>(static_cast<http::status>(status),
                                                             version_);
  if (safe_field("Content-Type", content_type)) {
    head_->set(http::field::content_type, content_type);
  }
  head_->set(http::field::cache_control, "no-cache");
  add_fields(*head_, headers, core_->name);
  // HTTP/1.0 has no chunked coding: the body then ends with the connection.
  chunked_ = version_ >= 11;
  if (!chunked_) keep_alive_ = false;
  keep_alive_ = keep_alive_ && !core_->draining;
  head_->keep_alive(keep_alive_);
  head_->chunked(chunked_);
  head_sr_ = std::make_unique<http::response_serializer<http::empty_body>>(*head_);
  head_pending_ = true;
  end_requested_ = false;
  last_write_ = false;
  pending_.clear();
  pump();
}

void HttpSession::on_write(const std::shared_ptr<HttpExchangeState>& st, std::string data) {
  if (st != state_ || phase_ != Phase::kStreaming || end_requested_) return;
  if (st->backlog.load() > core_->limits.max_stream_backlog_bytes) {
    spdlog::warn("{}: {} reads too slowly ({} bytes queued); dropping it", core_->name, peer_,
                 st->backlog.load());
    return client_gone();
  }
  if (data.empty()) return;  // an empty chunk would end the body
  pending_.push_back(std::move(data));
  pump();
}

// At most one write in flight; pieces that queued up behind it go out together as one chunk, so
// a slow client costs fewer, larger writes instead of an ever longer queue of small ones.
void HttpSession::pump() {
  if (writing_ || phase_ != Phase::kStreaming) return;
  stream_.expires_after(core_->limits.write_timeout);
  auto done = [self = shared_from_this()](size_t payload) {
    return [self, payload](error_code ec, size_t) { self->on_stream_written(ec, payload); };
  };
  if (head_pending_) {
    head_pending_ = false;
    writing_ = true;
    return http::async_write_header(stream_, *head_sr_, done(0));
  }
  if (!pending_.empty()) {
    if (pending_.size() == 1) {
      out_ = std::move(pending_.front());
    } else {
      out_.clear();
      for (const auto& p : pending_) out_ += p;
    }
    pending_.clear();
    writing_ = true;
    if (chunked_) return net::async_write(stream_, http::make_chunk(net::buffer(out_)), done(out_.size()));
    return net::async_write(stream_, net::buffer(out_), done(out_.size()));
  }
  if (end_requested_) {
    writing_ = true;
    last_write_ = true;
    if (chunked_) return net::async_write(stream_, http::make_chunk_last(), done(0));
    net::post(strand_, [cb = done(0)] { cb({}, 0); });
  }
}

void HttpSession::on_stream_written(error_code ec, size_t payload) {
  writing_ = false;
  if (ec) return client_gone();
  if (state_) state_->backlog -= payload;
  if (!last_write_) return peer_closed_ ? client_gone() : pump();
  head_sr_.reset();
  head_.reset();
  on_response_done({});
}

namespace {

// The producer-facing handle. Member order matters: io_context first, so it is destroyed last,
// after the session whose socket and timers belong to it.
class ExchangeImpl final : public HttpExchange {
 public:
  ExchangeImpl(std::shared_ptr<net::io_context> ioc, std::shared_ptr<HttpSession> session,
               std::shared_ptr<HttpExchangeState> state)
      : ioc_(std::move(ioc)), session_(std::move(session)), state_(std::move(state)) {}
  ~ExchangeImpl() override {
    if (stage_.exchange(kDone) != kDone) post([](HttpSession& s, const auto& st) { s.on_dropped(st); });
  }

  void respond(HttpResponse response) override {
    int expected = kNew;
    if (!stage_.compare_exchange_strong(expected, kDone)) return;
    post([r = std::move(response)](HttpSession& s, const auto& st) mutable {
      s.on_respond(st, std::move(r));
    });
  }
  void start_stream(unsigned status, std::string content_type, HttpHeaders headers) override {
    int expected = kNew;
    if (!stage_.compare_exchange_strong(expected, kStreaming)) return;
    post([status, ct = std::move(content_type), h = std::move(headers)](
             HttpSession& s, const auto& st) mutable {
      s.on_start_stream(st, status, std::move(ct), std::move(h));
    });
  }
  void write(std::string data) override {
    if (stage_.load() != kStreaming) return;
    state_->backlog += data.size();
    post([d = std::move(data)](HttpSession& s, const auto& st) mutable { s.on_write(st, std::move(d)); });
  }
  void finish_stream(bool close_connection) override {
    int expected = kStreaming;
    if (!stage_.compare_exchange_strong(expected, kDone)) return;
    post([close_connection](HttpSession& s, const auto& st) { s.on_finish_stream(st, close_connection); });
  }
  void abort() override {
    if (stage_.exchange(kDone) == kDone) return;
    post([](HttpSession& s, const auto& st) { s.on_abort(st); });
  }
  bool client_gone() const override { return state_->gone.load(); }
  void on_cancel(std::function<void()> callback) override {
    {
      std::lock_guard lock(state_->mu);
      if (!state_->gone && !state_->settled) {
        state_->on_cancel = std::move(callback);
        return;
      }
      if (!state_->gone) return;  // completed normally: the callback would never run
    }
    callback();
  }
  size_t backlog_bytes() const override { return state_->backlog.load(); }

 private:
  static constexpr int kNew = 0, kStreaming = 1, kDone = 2;
  template <typename F>
  void post(F f) {
    net::post(session_->strand(), [s = session_, st = state_, f = std::move(f)]() mutable {
      f(*s, st);
    });
  }
  std::shared_ptr<net::io_context> ioc_;
  std::shared_ptr<HttpSession> session_;
  std::shared_ptr<HttpExchangeState> state_;
  std::atomic<int> stage_{kNew};
};

}  // namespace

std::shared_ptr<HttpExchange> HttpSession::make_exchange() {
  auto ioc = core_->ioc.lock();
  QGATE_CHECK(ioc != nullptr, "sessions run only while the server's io_context exists");
  return std::make_shared<ExchangeImpl>(std::move(ioc), shared_from_this(), state_);
}

void start_http_session(const std::shared_ptr<HttpServerCore>& core, tcp::socket socket) {
  std::shared_ptr<HttpSession> session;
  {
    std::lock_guard lock(core->mu);
    const uint64_t id = core->next_id++;
    session = std::make_shared<HttpSession>(core, id, std::move(socket));
    core->open.emplace(id, session);
  }
  session->start();
}

void drain_http_session(const std::shared_ptr<HttpSession>& session) {
  net::post(session->strand(), [session] { session->begin_drain(); });
}

void force_close_http_session(const std::shared_ptr<HttpSession>& session) {
  net::post(session->strand(), [session] { session->force_close(); });
}

}  // namespace qgate
