// IEEE fp16 and bfloat16 <-> fp32 conversions (scalar; exact, including subnormals, inf, NaN).
#pragma once

#include <cstdint>

namespace qgate {

float fp16_to_fp32(uint16_t h);
uint16_t fp32_to_fp16(float f);  // round to nearest even
float bf16_to_fp32(uint16_t h);
uint16_t fp32_to_bf16(float f);  // round to nearest even, NaN kept NaN

}  // namespace qgate
