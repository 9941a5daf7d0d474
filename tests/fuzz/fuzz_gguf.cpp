// libFuzzer target for the GGUF reader: any input must either fail with an Error or yield tensors
// whose every byte range is readable (ASan checks the first and last byte of each) and metadata
// whose every value and typed getter is safe to use.
#include <bit>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <variant>

#include "engine/gguf.h"

namespace {

volatile uint64_t g_sink;

void touch(const qgate::GgufValue& v) {
  std::visit(
      [](const auto& x) {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, std::string>) {
          g_sink = g_sink + x.size() + (x.empty() ? 0 : static_cast<uint8_t>(x.back()));
        } else if constexpr (std::is_same_v<T, std::shared_ptr<qgate::GgufArray>>) {
          for (const auto& item : x->items) touch(item);
        } else if constexpr (std::is_same_v<T, double>) {
          // Values are arbitrary bits (NaN, huge): converting them to an integer would be UB.
          g_sink = g_sink + std::bit_cast<uint64_t>(x);
        } else {
          g_sink = g_sink + static_cast<uint64_t>(x);
        }
      },
      v.v);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto r = qgate::GgufFile::parse({reinterpret_cast<const std::byte*>(data), size});
  if (!r.ok()) {
    g_sink = g_sink + r.error().message().size();
    return 0;
  }
  for (const qgate::GgufTensorInfo& t : r->tensors()) {
    g_sink = g_sink + static_cast<uint64_t>(t.num_elements());
    if (t.nbytes > 0) {
      g_sink =
          g_sink + static_cast<uint8_t>(t.data[0]) + static_cast<uint8_t>(t.data[t.nbytes - 1]);
    }
    if (r->find_tensor(t.name) != &t) __builtin_trap();
  }
  for (const auto& [key, value] : r->metadata()) {
    touch(value);
    // Every getter must answer with a value or an Error for every key, whatever its type.
    g_sink = g_sink + r->get_string(key).ok() + r->get_int(key).ok() + r->get_float(key).ok() +
             r->get_bool(key).ok() + r->get_string_array(key).ok() + r->get_int_array(key).ok() +
             r->get_float_array(key).ok();
  }
  return 0;
}
