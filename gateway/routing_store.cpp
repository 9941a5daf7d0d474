// Durable routing store. See routing_store.h for the contract and the file's life cycle.
#include "gateway/routing_store.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <boost/json.hpp>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <sstream>
#include <system_error>

#include "engine/unicode.h"
#include "gateway/json_parse.h"
#include "gateway/routing_json.h"

namespace qgate {
namespace {

namespace json = boost::json;
namespace fs = std::filesystem;

constexpr const char* kStateFile = "routing_state.json";
constexpr const char* kTempFile = "routing_state.json.tmp";
constexpr const char* kFormat = "qgate-routing-state";
constexpr int64_t kFormatVersion = 1;

// The history's "who": whatever the caller passed, as valid UTF-8 (U+FFFD for ill-formed bytes).
// The state file is JSON, which a reader must refuse when it is not UTF-8, so one raw byte from
// an admin header would otherwise stop the next restart (found by fuzz_admin_api).
std::string history_actor(std::string_view who) {
  return who.empty() ? "unknown" : unicode::to_valid_utf8(who);
}

Error io_error(const std::string& what, const fs::path& path, int err) {
  return make_error(ErrorCode::kIo, what + " " + path.string() + ": " + std::strerror(err));
}

Error corrupt(const fs::path& file, std::string_view what) {
  return make_error(ErrorCode::kInvalidFormat,
                    "routing state " + file.string() + ": " + std::string(what) +
                        " (the store refuses to start rather than lose the routing history; fix "
                        "or move the file away to start again from the config's routes)");
}

Status write_all(int fd, std::string_view data, const fs::path& path) {
  while (!data.empty()) {
    const ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return io_error("cannot write", path, errno);
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return Status::Ok();
}

// Temp file, fsync, rename, fsync the directory: after a crash at any point the state file is
// either the complete old one or the complete new one, and after return the rename itself is on
// disk (without the directory fsync a power loss could bring the old name back).
Status write_atomically(const fs::path& dir, std::string_view data) {
  const fs::path tmp = dir / kTempFile;
  const fs::path final_path = dir / kStateFile;
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return io_error("cannot create", tmp, errno);
  Status st = write_all(fd, data, tmp);
  if (st.ok() && ::fsync(fd) != 0) st = io_error("cannot fsync", tmp, errno);
  if (::close(fd) != 0 && st.ok()) st = io_error("cannot close", tmp, errno);
  if (st.ok() && ::rename(tmp.c_str(), final_path.c_str()) != 0) {
    st = io_error("cannot rename onto", final_path, errno);
  }
  if (!st.ok()) {
    ::unlink(tmp.c_str());
    return st;
  }
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) return io_error("cannot open directory", dir, errno);
  const bool synced = ::fsync(dfd) == 0;
  const int err = errno;
  ::close(dfd);
  if (!synced) return io_error("cannot fsync directory", dir, err);
  return Status::Ok();
}

}  // namespace

json::object routing_change_to_json(const RoutingChange& c) {
  json::object o;
  o["version"] = c.version;
  o["who"] = c.who;
  o["when_unix_ms"] = c.when_unix_ms;
  o["action"] = c.action;
  o["what"] = c.what;
  return o;
}

namespace {

Result<RoutingChange> change_from_json(const json::value& v, const std::string& path) {
  const json::object* o = v.if_object();
  if (o == nullptr) return make_error(ErrorCode::kInvalidFormat, path + ": must be an object");
  RoutingChange c;
  auto str = [&](const char* key, std::string& out) -> Status {
    const json::value* f = o->if_contains(key);
    if (f == nullptr || !f->is_string()) {
      return make_error(ErrorCode::kInvalidFormat, path + "." + key + ": must be a string");
    }
    out = std::string(f->get_string());
    return Status::Ok();
  };
  QGATE_TRY_STATUS(str("who", c.who));
  QGATE_TRY_STATUS(str("action", c.action));
  QGATE_TRY_STATUS(str("what", c.what));
  const json::value* ver = o->if_contains("version");
  if (ver == nullptr || !(ver->is_uint64() || (ver->is_int64() && ver->get_int64() >= 0))) {
    return make_error(ErrorCode::kInvalidFormat, path + ".version: must be an integer >= 0");
  }
  c.version = ver->is_uint64() ? ver->get_uint64() : static_cast<uint64_t>(ver->get_int64());
  const json::value* when = o->if_contains("when_unix_ms");
  if (when == nullptr || !when->is_int64()) {
    return make_error(ErrorCode::kInvalidFormat, path + ".when_unix_ms: must be an integer");
  }
  c.when_unix_ms = when->get_int64();
  return c;
}

bool contains(const std::vector<std::string>& list, std::string_view name) {
  return std::find(list.begin(), list.end(), name) != list.end();
}

}  // namespace

RoutingStore::RoutingStore(RoutingStoreOptions options)
    : dir_(std::move(options.dir)),
      variants_(std::move(options.variants)),
      clock_(std::move(options.now_unix_ms)) {}

int64_t RoutingStore::now_ms() const {
  if (clock_) return clock_();
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

fs::path RoutingStore::state_file() const { return dir_ / kStateFile; }

Status RoutingStore::persist_locked(const State& state) const {
  json::array versions;
  for (const auto& t : state.versions) versions.emplace_back(routing_table_to_json(*t));
  json::array history;
  for (const auto& c : state.history) history.emplace_back(routing_change_to_json(c));
  json::array drained;
  for (const auto& d : state.drained) drained.emplace_back(d);
  json::object root;
  root["format"] = kFormat;
  root["format_version"] = kFormatVersion;
  root["current"] = state.versions.back()->version;
  root["versions"] = std::move(versions);
  root["history"] = std::move(history);
  root["drained"] = std::move(drained);
  return write_atomically(dir_, json::serialize(root) + "\n");
}

namespace {

// Parses the state file's text into versions, history and drained set; structural checks only.
Result<std::tuple<std::vector<std::shared_ptr<const RoutingTable>>, std::vector<RoutingChange>,
                  std::vector<std::string>>>
parse_state(std::string_view text, const fs::path& file) {
  auto parsed = parse_json(text);
  if (!parsed.ok()) return corrupt(file, "not valid JSON (" + parsed.error().message() + ")");
  const json::value root = std::move(parsed).value();
  const json::object* o = root.if_object();
  if (o == nullptr) return corrupt(file, "the top level must be an object");
  const json::value* format = o->if_contains("format");
  if (format == nullptr || !format->is_string() || format->get_string() != kFormat) {
    return corrupt(file, std::string("format: must be \"") + kFormat + "\"");
  }
  const json::value* fv = o->if_contains("format_version");
  if (fv == nullptr || !fv->is_int64() || fv->get_int64() != kFormatVersion) {
    return corrupt(file, "format_version: must be " + std::to_string(kFormatVersion));
  }
  const json::value* versions = o->if_contains("versions");
  if (versions == nullptr || !versions->is_array() || versions->get_array().empty()) {
    return corrupt(file, "versions: must be a non-empty array");
  }
  std::vector<std::shared_ptr<const RoutingTable>> tables;
  for (size_t i = 0; i < versions->get_array().size(); ++i) {
    auto t =
        routing_table_from_json(versions->get_array()[i], "versions[" + std::to_string(i) + "]");
    if (!t.ok()) return corrupt(file, t.error().message());
    if (!tables.empty() && t->version <= tables.back()->version) {
      return corrupt(file, "versions[" + std::to_string(i) + "].version: versions must increase");
    }
    tables.push_back(std::make_shared<const RoutingTable>(std::move(t).value()));
  }
  const json::value* current = o->if_contains("current");
  if (current == nullptr || !current->is_int64() ||
      current->get_int64() != static_cast<int64_t>(tables.back()->version)) {
    return corrupt(file, "current: must equal the last version (" +
                             std::to_string(tables.back()->version) + ")");
  }
  std::vector<RoutingChange> history;
  const json::value* h = o->if_contains("history");
  if (h == nullptr || !h->is_array()) return corrupt(file, "history: must be an array");
  for (size_t i = 0; i < h->get_array().size(); ++i) {
    auto c = change_from_json(h->get_array()[i], "history[" + std::to_string(i) + "]");
    if (!c.ok()) return corrupt(file, c.error().message());
    history.push_back(std::move(c).value());
  }
  std::vector<std::string> drained;
  const json::value* d = o->if_contains("drained");
  if (d == nullptr || !d->is_array()) return corrupt(file, "drained: must be an array");
  for (size_t i = 0; i < d->get_array().size(); ++i) {
    const json::value& name = d->get_array()[i];
    if (!name.is_string()) {
      return corrupt(file, "drained[" + std::to_string(i) + "]: must be a string");
    }
    drained.emplace_back(name.get_string());
  }
  std::sort(drained.begin(), drained.end());
  drained.erase(std::unique(drained.begin(), drained.end()), drained.end());
  return std::make_tuple(std::move(tables), std::move(history), std::move(drained));
}

}  // namespace

Result<std::unique_ptr<RoutingStore>> RoutingStore::open(RoutingStoreOptions options) {
  std::error_code ec;
  fs::create_directories(options.dir, ec);
  if (ec) {
    return make_error(ErrorCode::kIo, "cannot create state directory " + options.dir.string() +
                                          ": " + ec.message());
  }
  // A temp file is only ever a write that did not reach its rename: the state file is the truth.
  fs::remove(options.dir / kTempFile, ec);

  std::vector<Route> initial = std::move(options.initial_routes);
  std::unique_ptr<RoutingStore> store(new RoutingStore(std::move(options)));
  const fs::path file = store->state_file();
  State state;
  if (fs::exists(file, ec)) {
    std::ifstream in(file, std::ios::binary);
    if (!in.is_open()) return io_error("cannot open", file, errno);
    std::ostringstream text;
    text << in.rdbuf();
    if (in.bad()) return io_error("cannot read", file, errno);
    auto parsed = parse_state(text.str(), file);
    if (!parsed.ok()) return parsed.error();
    std::tie(state.versions, state.history, state.drained) = std::move(parsed).value();
    // Only the live version must fit today's variants: old versions are checked when rolled
    // back to, so removing a variant from the config does not brick the history.
    const auto& live = *state.versions.back();
    Status st =
        validate_routes(live.routes, store->variants_,
                        "versions[" + std::to_string(state.versions.size() - 1) + "].routes");
    if (!st.ok())
      return corrupt(
          file, st.error().message() + " (current version " + std::to_string(live.version) + ")");
  } else {
    QGATE_TRY_STATUS(validate_routes(initial, store->variants_, "routes"));
    RoutingTable v1;
    v1.version = 1;
    v1.routes = std::move(initial);
    std::string what;
    for (const auto& r : v1.routes) {
      what += (what.empty() ? "" : "; ") + r.model + ": " + describe_split(r.weights);
    }
    state.versions.push_back(std::make_shared<const RoutingTable>(std::move(v1)));
    state.history.push_back({1, "config", store->now_ms(), "initial", std::move(what)});
    QGATE_TRY_STATUS(store->persist_locked(state));
  }
  store->current_.store(state.versions.back());
  store->state_ = std::move(state);
  return store;
}

Result<std::shared_ptr<const RoutingTable>> RoutingStore::version(uint64_t number) const {
  std::lock_guard lock(mu_);
  for (const auto& t : state_.versions) {
    if (t->version == number) return t;
  }
  return make_error(ErrorCode::kNotFound, "no routing version " + std::to_string(number));
}

std::vector<RoutingChange> RoutingStore::history() const {
  std::lock_guard lock(mu_);
  return state_.history;
}

std::vector<std::string> RoutingStore::drained() const {
  std::lock_guard lock(mu_);
  return state_.drained;
}

Result<std::shared_ptr<const RoutingTable>> RoutingStore::commit_table_locked(
    RoutingTable table, std::string action, std::string what, std::string_view who) {
  if (state_.versions.back()->version >= kMaxRoutingVersion) {
    // 2^53 changes; only reachable from a hand-edited state file, which must stay readable.
    return make_error(ErrorCode::kOutOfRange, "the routing version reached its limit (" +
                                                  std::to_string(kMaxRoutingVersion) + ")");
  }
  table.version = state_.versions.back()->version + 1;
  State next = state_;
  auto published = std::make_shared<const RoutingTable>(std::move(table));
  next.versions.push_back(published);
  next.history.push_back(
      {published->version, history_actor(who), now_ms(), std::move(action), std::move(what)});
  QGATE_TRY_STATUS(persist_locked(next));
  state_ = std::move(next);
  current_.store(published);
  return published;
}

Result<std::shared_ptr<const RoutingTable>> RoutingStore::set_split(
    std::string_view model, std::vector<VariantWeight> weights, std::string_view who) {
  std::lock_guard lock(mu_);
  const std::string what = std::string(model) + ": " + describe_split(weights);
  QGATE_ASSIGN_OR_RETURN(RoutingTable next,
                         with_split(*state_.versions.back(), model, std::move(weights), variants_));
  return commit_table_locked(std::move(next), "set_split", what, who);
}

Result<std::shared_ptr<const RoutingTable>> RoutingStore::rollback_to_previous(
    std::string_view who) {
  uint64_t target = 0;
  {
    std::lock_guard lock(mu_);
    if (state_.versions.size() < 2) {
      return make_error(ErrorCode::kInvalidArgument,
                        "rollback: version " + std::to_string(state_.versions.back()->version) +
                            " has no previous version");
    }
    target = state_.versions[state_.versions.size() - 2]->version;
  }
  // A change between the two locks only makes "previous" mean the newer previous; acceptable for
  // an operator action, and each step is itself atomic.
  return rollback_to_version(target, who);
}

Result<std::shared_ptr<const RoutingTable>> RoutingStore::rollback_to_version(
    uint64_t number, std::string_view who) {
  std::lock_guard lock(mu_);
  const RoutingTable* target = nullptr;
  for (const auto& t : state_.versions) {
    if (t->version == number) target = t.get();
  }
  if (target == nullptr) {
    return make_error(ErrorCode::kNotFound,
                      "rollback: no routing version " + std::to_string(number));
  }
  Status st = validate_routes(target->routes, variants_, "routes");
  if (!st.ok()) {
    return make_error(ErrorCode::kInvalidArgument,
                      "rollback: version " + std::to_string(number) +
                          " no longer fits the configured variants: " + st.error().message());
  }
  RoutingTable next = *target;
  return commit_table_locked(std::move(next), "rollback", "to version " + std::to_string(number),
                             who);
}

Result<std::shared_ptr<const RoutingTable>> RoutingStore::rollback_to_baseline(
    std::string_view model, std::string_view who) {
  std::lock_guard lock(mu_);
  QGATE_ASSIGN_OR_RETURN(RoutingTable next, with_baseline_only(*state_.versions.back(), model));
  const std::string what = "all traffic to baseline (" +
                           (model.empty() ? std::string("every route") : std::string(model)) + ")";
  return commit_table_locked(std::move(next), "rollback", what, who);
}

Status RoutingStore::set_drained(std::string_view variant, bool drained, std::string_view who) {
  std::lock_guard lock(mu_);
  if (!contains(variants_, variant)) {
    return make_error(ErrorCode::kNotFound, "no variant '" + std::string(variant) + "'");
  }
  if (contains(state_.drained, variant) == drained) return Status::Ok();
  State next = state_;
  if (drained) {
    next.drained.emplace_back(variant);
    std::sort(next.drained.begin(), next.drained.end());
  } else {
    next.drained.erase(std::find(next.drained.begin(), next.drained.end(), variant));
  }
  next.history.push_back({next.versions.back()->version, history_actor(who), now_ms(),
                          drained ? "drain" : "enable", std::string(variant)});
  QGATE_TRY_STATUS(persist_locked(next));
  state_ = std::move(next);
  return Status::Ok();
}

}  // namespace qgate
