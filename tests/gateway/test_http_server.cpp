// The HTTP layer end to end on a real socket (port 0): a real HttpServer with the OpenAI routes and
// a scripted CompletionService standing in for routing + engine. Clients are plain POSIX sockets
// with a receive timeout, so a server that fails to answer fails the test instead of hanging it;
// responses are decoded with Beast's parser from the raw bytes received.
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <optional>
#include <thread>

#include <boost/beast/http.hpp>
#include <boost/json/parse.hpp>

#include "gateway/http_server.h"
#include "gateway/openai_routes.h"

namespace qgate {
namespace {

namespace http = boost::beast::http;
constexpr auto kWait = std::chrono::seconds(10);  // safety bound; never reached when passing

// A one-shot event a test can wait on.
class Flag {
 public:
  void set() {
    std::lock_guard lock(mu_);
    set_ = true;
    cv_.notify_all();
  }
  bool wait() {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, kWait, [&] { return set_; });
  }
  bool is_set() {
    std::lock_guard lock(mu_);
    return set_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool set_ = false;
};

struct Call {
  ApiRequest request;
  RequestMeta meta;
  std::shared_ptr<CompletionResponder> out;
};

// Records each call; `script`, when set, answers it at once on the strand.
class ScriptedService : public CompletionService {
 public:
  std::function<void(Call&)> script;

  void handle(ApiRequest request, RequestMeta meta,
              std::shared_ptr<CompletionResponder> out) override {
    Call call{std::move(request), std::move(meta), std::move(out)};
    if (script) script(call);
    std::lock_guard lock(mu_);
    calls_.push_back(std::move(call));
    cv_.notify_all();
  }
  std::vector<ModelInfo> list_models() override { return {{"smollm2", "qgate", 1}}; }

  std::optional<Call> wait_call() {
    std::unique_lock lock(mu_);
    if (!cv_.wait_for(lock, kWait, [&] { return !calls_.empty(); })) return std::nullopt;
    Call c = std::move(calls_.front());
    calls_.pop_front();
    return c;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Call> calls_;
};

class Client {
 public:
  explicit Client(uint16_t port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    timeval tv{static_cast<time_t>(kWait.count()), 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connected_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  }
  ~Client() { close(); }
  bool connected() const { return connected_; }
  void close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  bool send(std::string_view data) {
    while (!data.empty()) {
      const ssize_t n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
      if (n <= 0) return false;
      data.remove_prefix(static_cast<size_t>(n));
    }
    return true;
  }
  // Receives more bytes; false on EOF, reset or timeout.
  bool receive() {
    char buf[16384];
    const ssize_t n = ::recv(fd_, buf, sizeof(buf), 0);
    if (n <= 0) return false;
    data_.append(buf, static_cast<size_t>(n));
    return true;
  }
  // True when the server closed the connection (reading gives EOF or a reset, not a timeout).
  bool closed_by_server() {
    while (true) {
      char buf[4096];
      const ssize_t n = ::recv(fd_, buf, sizeof(buf), 0);
      if (n == 0) return true;
      if (n < 0) return errno == ECONNRESET;
      data_.append(buf, static_cast<size_t>(n));
    }
  }
  // Waits until `marker` appears in what arrived since the last parsed response.
  bool read_until(std::string_view marker) {
    while (data_.find(marker, consumed_) == std::string::npos) {
      if (!receive()) return false;
    }
    return true;
  }
  std::optional<http::response<http::string_body>> read_response(bool head_request = false) {
    http::response_parser<http::string_body> p;
    p.eager(true);
    p.body_limit(boost::none);
    if (head_request) p.skip(true);
    while (true) {
      boost::system::error_code ec;
      consumed_ += p.put(boost::asio::buffer(data_.data() + consumed_, data_.size() - consumed_), ec);
      if (p.is_done()) return p.release();
      if (ec && ec != http::error::need_more) {
        ADD_FAILURE() << "bad response: " << ec.message();
        return std::nullopt;
      }
      if (!receive()) return std::nullopt;
    }
  }
  const std::string& raw() const { return data_; }

 private:
  int fd_ = -1;
  bool connected_ = false;
  std::string data_;
  size_t consumed_ = 0;
};

std::string post(std::string_view path, std::string_view body, std::string_view extra = "") {
  return "POST " + std::string(path) + " HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n" +
         std::string(extra) + "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" +
         std::string(body);
}
const std::string kGetModels = "GET /v1/models HTTP/1.1\r\nHost: t\r\n\r\n";
const std::string kChatBody = R"({"model":"smollm2","messages":[{"role":"user","content":"hi"}]})";
const std::string kStreamBody =
    R"({"model":"smollm2","messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"include_usage":true}})";

boost::json::object json_of(const std::string& s) {
  boost::system::error_code ec;
  auto v = boost::json::parse(s, ec);
  EXPECT_FALSE(ec) << s;
  return v.is_object() ? v.as_object() : boost::json::object{};
}

// The `data:` payloads of an SSE body, in order.
std::vector<std::string> sse_data(const std::string& body) {
  std::vector<std::string> out;
  size_t pos = 0;
  while ((pos = body.find("data: ", pos)) != std::string::npos) {
    const size_t end = body.find("\n\n", pos);
    out.push_back(body.substr(pos + 6, end - pos - 6));
    pos = end;
  }
  return out;
}

class HttpServerTest : public ::testing::Test {
 protected:
  void start(HttpServerLimits limits = {}) {
    HttpRouter router;
    add_openai_routes(router, service_);
    router.add_simple(http::verb::get, "/healthz", [](const HttpRequest&) {
      return HttpResponse{200, "text/plain", {}, "ok"};
    });
    HttpServerOptions opts;
    opts.name = "test";
    opts.limits = limits;
    auto s = HttpServer::start(opts, std::move(router));
    ASSERT_TRUE(s.ok()) << s.error().to_string();
    server_ = std::move(s).value();
    ASSERT_NE(server_->port(), 0);
  }
  void TearDown() override {
    if (server_) server_->shutdown(std::chrono::seconds(5));
  }

  std::shared_ptr<ScriptedService> service_ = std::make_shared<ScriptedService>();
  std::unique_ptr<HttpServer> server_;
};

TEST_F(HttpServerTest, KeepAliveServesSeveralRequestsOnOneConnection) {
  start();
  Client c(server_->port());
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(c.send(kGetModels));
    auto r = c.read_response();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->result_int(), 200);
    EXPECT_TRUE(r->keep_alive());
    EXPECT_EQ(json_of(r->body())["data"].as_array().at(0).as_object()["id"].as_string(), "smollm2");
  }
  EXPECT_EQ(server_->stats().connections_accepted, 1u);
  EXPECT_EQ(server_->stats().requests, 3u);
}

TEST_F(HttpServerTest, PipelinedRequestsAreAnsweredInOrder) {
  start();
  Client c(server_->port());
  ASSERT_TRUE(c.send(kGetModels + "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n" + kGetModels));
  auto a = c.read_response();
  auto b = c.read_response();
  auto d = c.read_response();
  ASSERT_TRUE(a && b && d);
  EXPECT_NE(a->body().find("smollm2"), std::string::npos);
  EXPECT_EQ(b->body(), "ok");
  EXPECT_NE(d->body().find("smollm2"), std::string::npos);
}

TEST_F(HttpServerTest, UnknownPathAndWrongMethodGetOpenAiErrors) {
  start();
  Client c(server_->port());
  ASSERT_TRUE(c.send("GET /v2/nothing HTTP/1.1\r\nHost: t\r\n\r\n"));
  auto r = c.read_response();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->result_int(), 404);
  EXPECT_EQ(json_of(r->body())["error"].as_object()["code"].as_string(), "not_found");
  ASSERT_TRUE(c.send("GET /v1/chat/completions HTTP/1.1\r\nHost: t\r\n\r\n"));
  r = c.read_response();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->result_int(), 405);
  EXPECT_EQ((*r)[http::field::allow], "POST");
  EXPECT_EQ(json_of(r->body())["error"].as_object()["type"].as_string(), "invalid_request_error");
  // Both are ordinary answers: the connection stays usable.
  ASSERT_TRUE(c.send(kGetModels));
  r = c.read_response();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->result_int(), 200);
}

TEST_F(HttpServerTest, NonStreamingChatGoesThroughTheResponder) {
  service_->script = [](Call& call) {
    call.out->start({{"x-qgate-variant", "gptq"}});
    call.out->text("Hel");
    call.out->text("lo");
    call.out->finish({FinishReason::kStop, 9, 2});
  };
  start();
  Client c(server_->port());
  ASSERT_TRUE(c.send(post("/v1/chat/completions", kChatBody, "x-qgate-sticky: abc\r\n")));
  auto r = c.read_response();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->result_int(), 200);
  EXPECT_EQ((*r)["x-qgate-variant"], "gptq");
  auto o = json_of(r->body());
  EXPECT_EQ(o["object"].as_string(), "chat.completion");
  EXPECT_EQ(o["model"].as_string(), "smollm2");
  EXPECT_EQ(o["choices"].as_array().at(0).as_object()["message"].as_object()["content"].as_string(),
            "Hello");
  EXPECT_EQ(o["usage"].as_object()["total_tokens"].as_int64(), 11);
  auto call = service_->wait_call();
  ASSERT_TRUE(call);
  EXPECT_EQ(call->request.messages.at(0).content, "hi");
  EXPECT_EQ(call->meta.header("x-qgate-sticky"), "abc");
  EXPECT_EQ(o["id"].as_string(), call->meta.id);
}

TEST_F(HttpServerTest, ValidationAndServiceErrorsAreOpenAiErrors) {
  service_->script = [](Call& call) { call.out->fail(ApiError::overloaded("all variants busy", 2)); };
  start();
  Client c(server_->port());
  ASSERT_TRUE(c.send(post("/v1/chat/completions", R"({"model":"smollm2","messages":[],"n":1})")));
  auto r = c.read_response();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->result_int(), 400);
  EXPECT_EQ(json_of(r->body())["error"].as_object()["param"].as_string(), "messages");
  ASSERT_TRUE(c.send(post("/v1/chat/completions", kChatBody)));
  r = c.read_response();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->result_int(), 429);
  EXPECT_EQ((*r)[http::field::retry_after], "2");
}

TEST_F(HttpServerTest, StreamingChatIsSseOverChunkedEncoding) {
  start();
  Client c(server_->port());
  ASSERT_TRUE(c.send(post("/v1/chat/completions", kStreamBody)));
  auto call = service_->wait_call();
  ASSERT_TRUE(call);
  call->out->start({{"x-qgate-variant", "awq"}});
  // The role chunk reaches the client before any text exists: headers and first chunk are flushed.
  ASSERT_TRUE(c.read_until("\"role\":\"assistant\""));
  call->out->text("Hi");
  ASSERT_TRUE(c.read_until("\"content\":\"Hi\""));
  call->out->text(" there");
  call->out->finish({FinishReason::kLength, 5, 2});
  auto r = c.read_response();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->result_int(), 200);
  EXPECT_TRUE(r->chunked());
  EXPECT_EQ((*r)[http::field::content_type], "text/event-stream");
  EXPECT_EQ((*r)["x-qgate-variant"], "awq");
  const auto events = sse_data(r->body());
  ASSERT_EQ(events.size(), 6u) << r->body();
  auto role = json_of(events[0]);
  EXPECT_EQ(role["object"].as_string(), "chat.completion.chunk");
  EXPECT_EQ(json_of(events[1])["choices"].as_array()[0].as_object()["delta"].as_object()["content"].as_string(), "Hi");
  EXPECT_EQ(json_of(events[2])["choices"].as_array()[0].as_object()["delta"].as_object()["content"].as_string(), " there");
  EXPECT_EQ(json_of(events[3])["choices"].as_array()[0].as_object()["finish_reason"].as_string(), "length");
  EXPECT_EQ(json_of(events[4])["usage"].as_object()["total_tokens"].as_int64(), 7);
  EXPECT_EQ(events[5], "[DONE]");
  // Same id on every chunk; the connection is reusable afterwards.
  EXPECT_EQ(json_of(events[4])["id"].as_string(), role["id"].as_string());
  ASSERT_TRUE(c.send(kGetModels));
  auto again = c.read_response();
  ASSERT_TRUE(again);
  EXPECT_EQ(again->result_int(), 200);
}

TEST_F(HttpServerTest, ErrorAfterStartIsAnSseErrorEventThenClose) {
  start();
  Client c(server_->port());
  ASSERT_TRUE(c.send(post("/v1/completions", R"({"model":"m","prompt":"p","stream":true})")));
  auto call = service_->wait_call();
  ASSERT_TRUE(call);
  call->out->text("partial");
  call->out->error_after_start(ApiError::internal("variant failed"));
  auto r = c.read_response();
  ASSERT_TRUE(r);
  const auto events = sse_data(r->body());
  ASSERT_EQ(events.size(), 2u) << r->body();
  EXPECT_EQ(json_of(events[0])["object"].as_string(), "text_completion");
  EXPECT_EQ(json_of(events[1])["error"].as_object()["message"].as_string(), "variant failed");
  // The headers went out before the failure, so the close itself tells the client.
  EXPECT_TRUE(c.closed_by_server());
}

TEST_F(HttpServerTest, UnsafeResponseFieldsAreDropped) {
  service_->script = [](Call& call) {
    call.out->start({{"x-ok", "1"}, {"x-evil", "a\r\nSet-Cookie: s=1"}, {"bad name", "v"}});
    call.out->finish({FinishReason::kStop, 1, 0});
  };
  start();
  Client c(server_->port());
  ASSERT_TRUE(c.send(post("/v1/chat/completions", kChatBody)));
  auto r = c.read_response();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->result_int(), 200);
  EXPECT_EQ((*r)["x-ok"], "1");
  EXPECT_EQ(r->count("x-evil"), 0u);
  EXPECT_EQ(r->count(http::field::set_cookie), 0u);
}

TEST_F(HttpServerTest, DroppedResponderAnswers500) {
  service_->script = [](Call& call) { call.out.reset(); };
  start();
  Client c(server_->port());
  ASSERT_TRUE(c.send(post("/v1/chat/completions", kChatBody)));
  auto r = c.read_response();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->result_int(), 500);
}

TEST_F(HttpServerTest, ExpectContinueIsHonoured) {
  service_->script = [](Call& call) { call.out->finish({FinishReason::kStop, 1, 0}); };
  start();
  Client c(server_->port());
  const std::string req = post("/v1/chat/completions", kChatBody, "Expect: 100-continue\r\n");
  const size_t head_end = req.find("\r\n\r\n") + 4;
  ASSERT_TRUE(c.send(req.substr(0, head_end)));
  ASSERT_TRUE(c.read_until("HTTP/1.1 100 Continue\r\n\r\n"));
  ASSERT_TRUE(c.send(req.substr(head_end)));
  ASSERT_TRUE(c.read_until("chat.completion"));
}

// Under load, epoll can report readiness for bytes an earlier read already consumed; the idle-socket
// watch must not take that for a hang-up (wrk once saw ~0.07% of requests cut off this way).
TEST_F(HttpServerTest, ManyKeepAliveClientsSeeNoSpuriousCancellation) {
  start();
  constexpr int kClients = 8, kRequests = 500;
  std::atomic<int> ok{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kClients; ++t) {
    threads.emplace_back([&] {
      Client c(server_->port());
      for (int i = 0; i < kRequests; ++i) {
        if (!c.send(kGetModels)) return;
        auto r = c.read_response();
        if (!r || r->result_int() != 200) return;
        ++ok;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok, kClients * kRequests);
  EXPECT_EQ(server_->stats().cancelled, 0u);
  EXPECT_EQ(server_->stats().connections_accepted, static_cast<uint64_t>(kClients));
}

// --- limits -------------------------------------------------------------------------------------

TEST_F(HttpServerTest, BodyOverTheLimitIs413AndClose) {
  HttpServerLimits limits;
  limits.max_body_bytes = 1024;
  start(limits);
  {
    Client c(server_->port());
    ASSERT_TRUE(c.send(post("/v1/chat/completions", std::string(2000, ' '))));
    auto r = c.read_response();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->result_int(), 413);
    EXPECT_EQ(json_of(r->body())["error"].as_object()["code"].as_string(), "request_too_large");
    EXPECT_TRUE(c.closed_by_server());
  }
  {  // Chunked: the limit applies to the decoded body as it arrives.
    Client c(server_->port());
    std::string req = "POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n";
    for (int i = 0; i < 5; ++i) req += "200\r\n" + std::string(512, ' ') + "\r\n";
    ASSERT_TRUE(c.send(req));
    auto r = c.read_response();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->result_int(), 413);
    EXPECT_TRUE(c.closed_by_server());
  }
  {  // Just under the limit still works (chunked, no Content-Length).
    service_->script = [](Call& call) { call.out->finish({FinishReason::kStop, 1, 0}); };
    Client c(server_->port());
    std::string body = kChatBody;
    std::string req = "POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n";
    char size[16];
    std::snprintf(size, sizeof(size), "%zx", body.size());
    req += std::string(size) + "\r\n" + body + "\r\n0\r\n\r\n";
    ASSERT_TRUE(c.send(req));
    auto r = c.read_response();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->result_int(), 200);
  }
}

TEST_F(HttpServerTest, HeadersOverTheLimitAre431) {
  HttpServerLimits limits;
  limits.max_header_bytes = 2048;
  start(limits);
  Client c(server_->port());
  ASSERT_TRUE(c.send("GET /v1/models HTTP/1.1\r\nHost: t\r\nX-Big: " + std::string(4000, 'a') + "\r\n\r\n"));
  auto r = c.read_response();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->result_int(), 431);
  EXPECT_TRUE(c.closed_by_server());
}

struct SmugglingCase {
  const char* name;
  std::string request;
};

class SmugglingTest : public HttpServerTest, public ::testing::WithParamInterface<SmugglingCase> {};

TEST_P(SmugglingTest, RejectedWith400AndClose) {
  start();
  Client c(server_->port());
  ASSERT_TRUE(c.send(GetParam().request));
  auto r = c.read_response();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->result_int(), 400) << r->body();
  EXPECT_FALSE(r->keep_alive());
  EXPECT_TRUE(c.closed_by_server());
  EXPECT_EQ(server_->stats().requests, 0u);  // never reached a handler
}

const std::string kSmuggledGet = "GET /v1/models HTTP/1.1\r\nHost: t\r\n\r\n";

INSTANTIATE_TEST_SUITE_P(
    Framing, SmugglingTest,
    ::testing::Values(
        SmugglingCase{"te_and_cl", "POST /v1/completions HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n"
                                   "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + kSmuggledGet},
        SmugglingCase{"cl_after_te", "POST /v1/completions HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
                                     "Content-Length: 4\r\n\r\n0\r\n\r\n"},
        SmugglingCase{"chunked_not_last", "POST /v1/completions HTTP/1.1\r\nHost: t\r\n"
                                          "Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n"},
        SmugglingCase{"unknown_coding_before_chunked", "POST /v1/completions HTTP/1.1\r\nHost: t\r\n"
                                                       "Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"},
        SmugglingCase{"identity_with_cl", "POST /v1/completions HTTP/1.1\r\nHost: t\r\n"
                                          "Transfer-Encoding: identity\r\nContent-Length: 3\r\n\r\nabc"},
        SmugglingCase{"te_split_across_fields", "POST /v1/completions HTTP/1.1\r\nHost: t\r\n"
                                                "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"},
        SmugglingCase{"chunked_twice", "POST /v1/completions HTTP/1.1\r\nHost: t\r\n"
                                       "Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n"},
        SmugglingCase{"te_in_http10", "POST /v1/completions HTTP/1.0\r\nHost: t\r\n"
                                      "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"},
        SmugglingCase{"conflicting_content_lengths", "POST /v1/completions HTTP/1.1\r\nHost: t\r\n"
                                                     "Content-Length: 3\r\nContent-Length: 5\r\n\r\nabcde"},
        SmugglingCase{"missing_host", "GET /v1/models HTTP/1.1\r\n\r\n"},
        SmugglingCase{"two_hosts", "GET /v1/models HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"},
        SmugglingCase{"bad_chunk_size", "POST /v1/completions HTTP/1.1\r\nHost: t\r\n"
                                        "Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n"}),
    [](const auto& info) { return std::string(info.param.name); });

TEST_F(HttpServerTest, Http10WithoutHostIsFine) {
  start();
  Client c(server_->port());
  ASSERT_TRUE(c.send("GET /healthz HTTP/1.0\r\n\r\n"));
  auto r = c.read_response();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->result_int(), 200);
  EXPECT_TRUE(c.closed_by_server());  // HTTP/1.0 without keep-alive
}

TEST_F(HttpServerTest, SlowAndIdleClientsAreDisconnected) {
  HttpServerLimits limits;
  limits.read_timeout = std::chrono::milliseconds(200);
  limits.idle_timeout = std::chrono::milliseconds(200);
  start(limits);
  Client slow(server_->port());
  ASSERT_TRUE(slow.send("GET /v1/models HTTP/1.1\r\nHo"));  // and never the rest
  EXPECT_TRUE(slow.closed_by_server());
  Client idle(server_->port());  // connects, sends nothing
  EXPECT_TRUE(idle.closed_by_server());
}

// --- cancellation -------------------------------------------------------------------------------

TEST_F(HttpServerTest, ClientGoneMidStreamCancelsTheRequest) {
  start();
  Client c(server_->port());
  ASSERT_TRUE(c.send(post("/v1/chat/completions", kStreamBody)));
  auto call = service_->wait_call();
  ASSERT_TRUE(call);
  Flag cancelled;
  call->out->on_cancel([&] { cancelled.set(); });
  call->out->text("first");
  ASSERT_TRUE(c.read_until("first"));
  EXPECT_FALSE(call->out->client_gone());
  c.close();
  EXPECT_TRUE(cancelled.wait());
  EXPECT_TRUE(call->out->client_gone());
  // The producer may still be mid-flight; its late events are harmless.
  call->out->text("late");
  call->out->finish({FinishReason::kCancelled, 1, 2});
  // A callback registered after the fact runs at once.
  Flag late;
  call->out->on_cancel([&] { late.set(); });
  EXPECT_TRUE(late.is_set());
  EXPECT_EQ(server_->stats().cancelled, 1u);
}

TEST_F(HttpServerTest, ClientGoneBeforeAnyByteCancelsTheRequest) {
  start();
  Client c(server_->port());
  ASSERT_TRUE(c.send(post("/v1/chat/completions", kChatBody)));
  auto call = service_->wait_call();
  ASSERT_TRUE(call);
  Flag cancelled;
  call->out->on_cancel([&] { cancelled.set(); });
  c.close();  // no write is pending: only the idle-socket watch can notice
  EXPECT_TRUE(cancelled.wait());
}

TEST_F(HttpServerTest, NoCancellationAfterNormalCompletion) {
  start();
  Client c(server_->port());
  ASSERT_TRUE(c.send(post("/v1/chat/completions", kChatBody)));
  auto call = service_->wait_call();
  ASSERT_TRUE(call);
  std::atomic<bool> cancelled{false};
  call->out->on_cancel([&] { cancelled = true; });
  call->out->finish({FinishReason::kStop, 1, 0});
  ASSERT_TRUE(c.read_response());
  c.close();
  // A later request on another connection proves the server went on; the first was not cancelled.
  Client d(server_->port());
  ASSERT_TRUE(d.send(kGetModels));
  ASSERT_TRUE(d.read_response());
  EXPECT_FALSE(cancelled);
  EXPECT_EQ(server_->stats().cancelled, 0u);
}

TEST_F(HttpServerTest, ClientThatStopsReadingIsCutOffAtTheBacklogLimit) {
  HttpServerLimits limits;
  limits.max_stream_backlog_bytes = 256 * 1024;
  start(limits);
  Client c(server_->port());
  ASSERT_TRUE(c.send(post("/v1/chat/completions", kStreamBody)));
  auto call = service_->wait_call();
  ASSERT_TRUE(call);
  Flag cancelled;
  call->out->on_cancel([&] { cancelled.set(); });
  // The client reads nothing. Once the kernel buffers are full the backlog grows past the limit.
  const std::string piece(64 * 1024, 'x');
  for (int i = 0; i < 4096 && !call->out->client_gone(); ++i) call->out->text(piece);
  EXPECT_TRUE(cancelled.wait());
}

// --- shutdown -----------------------------------------------------------------------------------

TEST_F(HttpServerTest, GracefulShutdownLetsAnInFlightStreamFinish) {
  start();
  const uint16_t port = server_->port();
  Client idle(port);
  ASSERT_TRUE(idle.send(kGetModels));
  ASSERT_TRUE(idle.read_response());  // now idle between requests

  Client c(port);
  ASSERT_TRUE(c.send(post("/v1/chat/completions", kStreamBody)));
  auto call = service_->wait_call();
  ASSERT_TRUE(call);
  std::atomic<bool> cancelled{false};
  call->out->on_cancel([&] { cancelled = true; });
  call->out->text("one");
  ASSERT_TRUE(c.read_until("one"));

  std::atomic<bool> shutdown_returned{false};
  std::thread stopper([&] {
    server_->shutdown(std::chrono::seconds(30));
    shutdown_returned = true;
  });
  EXPECT_TRUE(idle.closed_by_server());  // idle connections go at once
  Client late(port);  // no new connections are served
  if (late.connected()) {
    late.send(kGetModels);
    EXPECT_TRUE(late.closed_by_server());
    EXPECT_EQ(late.raw(), "");
  }
  EXPECT_FALSE(shutdown_returned);  // the stream is still open
  call->out->text(" two");
  call->out->finish({FinishReason::kStop, 1, 2});
  auto r = c.read_response();
  ASSERT_TRUE(r);
  EXPECT_NE(r->body().find(" two"), std::string::npos);
  EXPECT_NE(r->body().find("data: [DONE]"), std::string::npos);
  EXPECT_TRUE(c.closed_by_server());
  stopper.join();
  EXPECT_TRUE(shutdown_returned);
  EXPECT_FALSE(cancelled);
}

TEST_F(HttpServerTest, ShutdownGraceOverCancelsStuckStreams) {
  start();
  Client c(server_->port());
  ASSERT_TRUE(c.send(post("/v1/chat/completions", kStreamBody)));
  auto call = service_->wait_call();
  ASSERT_TRUE(call);
  Flag cancelled;
  call->out->on_cancel([&] { cancelled.set(); });
  call->out->start({});
  ASSERT_TRUE(c.read_until("assistant"));
  server_->shutdown(std::chrono::milliseconds(100));
  EXPECT_TRUE(cancelled.is_set());
  EXPECT_TRUE(c.closed_by_server());
  EXPECT_EQ(c.raw().find("0\r\n\r\n"), std::string::npos);  // cut off, not a finished body
  // The service may still hold the responder after the server object is gone: its calls are
  // no-ops and dropping it last releases the connection and the io_context (checked under ASan).
  server_.reset();
  call->out->text("after shutdown");
  call->out->finish({FinishReason::kStop, 1, 1});
  call.reset();
}

TEST(HttpServerInstances, TwoServersWithTheirOwnRoutes) {
  HttpRouter a, b;
  a.add_simple(http::verb::get, "/which", [](const HttpRequest&) {
    return HttpResponse{200, "text/plain", {}, "api"};
  });
  b.add_simple(http::verb::get, "/which", [](const HttpRequest& req) {
    return HttpResponse{200, "text/plain", {}, "admin " + std::string(req.query)};
  });
  auto sa = HttpServer::start({"api", "127.0.0.1", 0, 1, {}}, std::move(a));
  auto sb = HttpServer::start({"admin", "127.0.0.1", 0, 2, {}}, std::move(b));
  ASSERT_TRUE(sa.ok() && sb.ok());
  ASSERT_NE(sa.value()->port(), sb.value()->port());
  Client ca(sa.value()->port()), cb(sb.value()->port());
  ASSERT_TRUE(ca.send("GET /which HTTP/1.1\r\nHost: t\r\n\r\n"));
  ASSERT_TRUE(cb.send("GET /which?x=1 HTTP/1.1\r\nHost: t\r\n\r\n"));
  EXPECT_EQ(ca.read_response()->body(), "api");
  EXPECT_EQ(cb.read_response()->body(), "admin x=1");
  // Binding a port that is taken is an error, not an exception.
  auto clash = HttpServer::start({"clash", "127.0.0.1", sa.value()->port(), 1, {}}, HttpRouter{});
  EXPECT_FALSE(clash.ok());
  auto bad = HttpServer::start({"bad", "not-an-ip", 0, 1, {}}, HttpRouter{});
  EXPECT_FALSE(bad.ok());
}

}  // namespace
}  // namespace qgate
