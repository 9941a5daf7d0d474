// libFuzzer target for the HTTP front door: each input is sent as raw bytes on a fresh connection
// to a real HttpServer (Boost.Beast, the session code of gateway/http_session.cpp) serving the
// OpenAI routes over an echo CompletionService; then the client half-closes and reads to the end.
// Properties, beyond "no crash, leak or undefined behaviour" in the server's threads:
//  - the server answers or closes: the connection reaches end of file within 10 s of the
//    client's half-close (no hang on any prefix of a request);
//  - what it writes is a sequence of complete, well-formed HTTP/1.1 responses (chunked SSE
//    included), none of them a 5xx: bad input is always the client's error.
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "gateway/http_server.h"
#include "gateway/openai_routes.h"
#include "tests/fuzz/fuzz_support.h"

namespace {

namespace http = boost::beast::http;

// Answers every request at once: the last message (or the prompt) streamed back in two pieces.
class EchoService : public qgate::CompletionService {
 public:
  void handle(qgate::ApiRequest request, qgate::RequestMeta,
              std::shared_ptr<qgate::CompletionResponder> out) override {
    const std::string text = request.endpoint == qgate::ApiEndpoint::kChatCompletions
                                 ? request.messages.back().content
                                 : request.prompt;
    out->start({{"x-qgate-variant", "echo"}});
    out->text(std::string_view(text).substr(0, text.size() / 2));
    out->text(std::string_view(text).substr(text.size() / 2));
    out->finish({qgate::FinishReason::kStop, 1, 2});
  }
  std::vector<qgate::ModelInfo> list_models() override { return {{"echo", "qgate", 1}}; }
};

std::unique_ptr<qgate::HttpServer> g_server;

std::string exchange(std::string_view request) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  FUZZ_CHECK(fd >= 0, "socket: errno %d", errno);
  timeval tv{10, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(g_server->port());
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  FUZZ_CHECK(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0,
             "connect: errno %d", errno);
  while (!request.empty()) {
    const ssize_t n = ::send(fd, request.data(), request.size(), MSG_NOSIGNAL);
    if (n <= 0) break;  // the server may close early (a refused request); read what it said
    request.remove_prefix(static_cast<size_t>(n));
  }
  ::shutdown(fd, SHUT_WR);
  std::string out;
  char buf[16384];
  for (;;) {
    const ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
    if (n > 0) {
      out.append(buf, static_cast<size_t>(n));
      continue;
    }
    FUZZ_CHECK(n == 0 || errno == ECONNRESET,
               "no end of file within 10 s (errno %d) after %zu bytes", errno, out.size());
    break;
  }
  ::close(fd);
  return out;
}

void check_responses(std::string_view out) {
  while (!out.empty()) {
    http::response_parser<http::string_body> parser;
    parser.eager(true);
    parser.body_limit(64 * 1024 * 1024);
    boost::beast::error_code ec;
    const size_t used = parser.put(boost::asio::buffer(out.data(), out.size()), ec);
    if (!ec && !parser.is_done()) parser.put_eof(ec);
    FUZZ_CHECK(!ec && parser.is_done(), "a malformed or cut response (%s): %.*s",
               ec.message().c_str(), static_cast<int>(std::min<size_t>(out.size(), 300)),
               out.data());
    const unsigned status = parser.get().result_int();
    FUZZ_CHECK(status >= 200 && status < 500, "status %u: %s", status, parser.get().body().c_str());
    out.remove_prefix(used);
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  qgate::HttpRouter router;
  qgate::add_openai_routes(router, std::make_shared<EchoService>());
  router.add_simple(http::verb::get, "/healthz", [](const qgate::HttpRequest&) {
    return qgate::HttpResponse{200, "text/plain", {}, "ok\n"};
  });
  qgate::HttpServerOptions options;
  options.name = "fuzz";
  options.threads = 2;
  options.limits.max_header_bytes = 2048;
  options.limits.max_body_bytes = 8192;
  options.limits.read_timeout = std::chrono::seconds(5);
  auto server = qgate::HttpServer::start(options, std::move(router));
  FUZZ_CHECK(server.ok(), "%s", server.error().message().c_str());
  g_server = std::move(server).value();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view request(reinterpret_cast<const char*>(data), size);
  const std::string out = exchange(request);
  // A response to HEAD has a Content-Length but no body, which only the request can tell; the
  // other checks still ran.
  if (request.find("HEAD") == std::string_view::npos) check_responses(out);
  return 0;
}
