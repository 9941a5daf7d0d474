// libFuzzer target for the admin API's changes: POST /admin/split and /admin/rollback with any
// body and any `x-qgate-actor` header, through the real handlers (add_admin_routes) over a real
// RoutingStore. Each input starts from a fresh store.
// Properties, beyond "no crash, leak or undefined behaviour":
//  - the answer is 200, 400 or 404 with a JSON body (a bad request is the client's error);
//  - an accepted change is durable: reopening the state directory, as a restart does, gives the
//    same table, history and drained set (no admin request can leave a state the gateway
//    cannot restart from);
//  - a refused change leaves the state file as it was.
//
// Input: byte 0 picks the endpoint (even: split, odd: rollback); the actor runs to the first
// '\n' (absent: no header); the rest is the body.
#include <boost/beast/http/verb.hpp>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>

#include "gateway/admin_api.h"
#include "gateway/json_parse.h"
#include "policies/clock.h"
#include "tests/fuzz/store_checks.h"

namespace {

namespace fs = std::filesystem;
namespace http = boost::beast::http;

constexpr std::string_view kToken = "fuzz-token";

const fs::path& state_dir() { return qgate::fuzz::state_dir("admin"); }

qgate::RoutingStoreOptions options() {
  qgate::Route r;
  r.model = "m";
  r.weights = {{"m-fp16", 80}, {"m-gptq", 10}, {"m-awq", 10}};
  r.baseline = "m-fp16";
  r.fallback = {"m-fp16"};
  qgate::Route direct;
  direct.model = "m-gptq";
  direct.weights = {{"m-gptq", 1}};
  direct.baseline = "m-gptq";
  return qgate::fuzz::store_options("admin", {r, direct});
}

// Keeps what a simple handler answers.
class CapturingExchange : public qgate::HttpExchange {
 public:
  void respond(qgate::HttpResponse response) override { response_ = std::move(response); }
  void start_stream(unsigned, std::string, qgate::HttpHeaders) override {}
  void write(std::string) override {}
  void finish_stream(bool) override {}
  void abort() override {}
  bool client_gone() const override { return false; }
  void on_cancel(std::function<void()>) override {}
  size_t backlog_bytes() const override { return 0; }
  const std::optional<qgate::HttpResponse>& response() const { return response_; }

 private:
  std::optional<qgate::HttpResponse> response_;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  std::string_view rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  const char* path = data[0] % 2 == 0 ? "/admin/split" : "/admin/rollback";
  std::string_view actor;
  if (const size_t nl = rest.find('\n'); nl != std::string_view::npos) {
    actor = rest.substr(0, nl);
    rest.remove_prefix(nl + 1);
  }

  std::error_code ec;
  fs::remove_all(state_dir(), ec);
  auto opened = qgate::RoutingStore::open(options());
  FUZZ_CHECK(opened.ok(), "%s", opened.error().message().c_str());
  qgate::RoutingStore& store = *opened.value();
  qgate::OutlierDetector detector({}, qgate::SteadyClock::instance());
  qgate::AdminApiContext context;
  context.token = std::string(kToken);
  context.store = &store;
  context.detector = &detector;
  qgate::HttpRouter router;
  qgate::add_admin_routes(router, std::move(context));

  qgate::HttpRequest request;
  request.message.method(http::verb::post);
  request.message.target(path);
  request.message.set(http::field::authorization, "Bearer " + std::string(kToken));
  if (!actor.empty()) request.message.set("x-qgate-actor", actor);
  request.message.body() = std::string(rest);
  request.path = path;
  const qgate::HttpRouter::Match match = router.find(http::verb::post, path);
  FUZZ_CHECK(match.handler != nullptr, "no route for %s", path);

  const fs::path file = store.state_file();
  const std::string before = qgate::fuzz::read_file(file);
  auto exchange = std::make_shared<CapturingExchange>();
  (*match.handler)(std::move(request), exchange);
  FUZZ_CHECK(exchange->response().has_value(), "%s did not answer", path);
  const qgate::HttpResponse& response = *exchange->response();
  FUZZ_CHECK(response.status == 200 || response.status == 400 || response.status == 404,
             "%s answered %u: %s", path, response.status, response.body.c_str());
  FUZZ_CHECK(qgate::parse_json(response.body).ok(), "%s answered with a body that is not JSON",
             path);
  if (response.status != 200) {
    FUZZ_CHECK(qgate::fuzz::read_file(file) == before, "a refused change rewrote the state file");
    return 0;
  }
  auto reopened = qgate::RoutingStore::open(options());
  FUZZ_CHECK(reopened.ok(), "an accepted change left a state that does not open: %s",
             reopened.error().message().c_str());
  qgate::fuzz::check_same_state(store, *reopened.value());
  return 0;
}
