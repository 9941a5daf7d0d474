// libFuzzer target for `qgate serve --config`: any text through parse_serve_config. Properties,
// beyond "no crash, no undefined behaviour, no exception escaping yaml-cpp's boundary":
//  - a refusal is InvalidArgument with a message that starts at the config (`config: ...`, or
//    the YAML path of the field);
//  - an accepted config is one `qgate serve` can start from: at least one variant, names of
//    [A-Za-z0-9._-] and unique, routes that validate against the variants (the routing store's
//    version 1), and HTTP limits that are not zero.
#include <cstddef>
#include <cstdint>
#include <set>
#include <string>
#include <string_view>

#include "gateway/serve_config.h"
#include "tests/fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view yaml(reinterpret_cast<const char*>(data), size);
  qgate::ConfigDefaults defaults;
  defaults.models_dir = "/models";
  auto config = qgate::parse_serve_config(yaml, defaults);
  if (!config.ok()) {
    FUZZ_CHECK(config.error().code() == qgate::ErrorCode::kInvalidArgument, "code %d: %s",
               static_cast<int>(config.error().code()), config.error().message().c_str());
    FUZZ_CHECK(!config.error().message().empty(), "an empty message");
    return 0;
  }
  const qgate::ServeConfig& c = config.value();
  FUZZ_CHECK(!c.variants.empty(), "a config without variants");
  std::set<std::string> names;
  for (const qgate::VariantConfig& v : c.variants) {
    FUZZ_CHECK(!v.name.empty(), "a variant without a name");
    for (char ch : v.name) {
      const bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                      (ch >= '0' && ch <= '9') || ch == '.' || ch == '_' || ch == '-';
      FUZZ_CHECK(ok, "variant name '%s'", v.name.c_str());
    }
    FUZZ_CHECK(names.insert(v.name).second, "variant '%s' twice", v.name.c_str());
  }
  const auto status = qgate::validate_routes(c.routes, c.variant_names());
  FUZZ_CHECK(status.ok(), "accepted routes that do not validate: %s",
             status.error().message().c_str());
  FUZZ_CHECK(c.http.max_header_bytes > 0 && c.http.max_body_bytes > 0, "a zero HTTP limit");
  return 0;
}
