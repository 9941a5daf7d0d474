// libFuzzer target for the safetensors reader: any input must either fail with an Error or yield
// tensors whose byte ranges are readable (ASan checks the first and last byte of each) and whose
// size agrees with shape × element size.
#include <cstddef>
#include <cstdint>
#include <span>

#include "engine/safetensors.h"

namespace {

volatile uint64_t g_sink;

uint64_t elem_size(qgate::SafetensorsDType t) {
  switch (t) {
    case qgate::SafetensorsDType::kF32:
    case qgate::SafetensorsDType::kI32:
      return 4;
    case qgate::SafetensorsDType::kF16:
    case qgate::SafetensorsDType::kBF16:
      return 2;
    case qgate::SafetensorsDType::kI8:
    case qgate::SafetensorsDType::kU8:
      return 1;
    case qgate::SafetensorsDType::kI64:
      return 8;
  }
  __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto r = qgate::SafetensorsFile::parse({reinterpret_cast<const std::byte*>(data), size});
  if (!r.ok()) {
    g_sink = g_sink + r.error().message().size();
    return 0;
  }
  for (const qgate::SafetensorsTensor& t : r->tensors()) {
    uint64_t n = elem_size(t.dtype);
    for (int64_t d : t.shape)
      n *= static_cast<uint64_t>(d);  // the reader proved this cannot overflow
    if (n != t.nbytes || r->find(t.name) != &t) __builtin_trap();
    if (t.nbytes > 0) {
      g_sink =
          g_sink + static_cast<uint8_t>(t.data[0]) + static_cast<uint8_t>(t.data[t.nbytes - 1]);
    }
    g_sink = g_sink + qgate::safetensors_dtype_name(t.dtype)[0];
  }
  for (const auto& [k, v] : r->metadata()) g_sink = g_sink + k.size() + v.size();
  return 0;
}
