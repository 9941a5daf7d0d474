#include "engine/log_softmax.h"

#include <algorithm>
#include <cmath>

#include "kernels/status.h"

namespace qgate {

RowStats row_stats(std::span<const float> x) {
  QGATE_CHECK(!x.empty(), "row_stats: empty row");
  RowStats s;
  const auto it = std::max_element(x.begin(), x.end());
  s.max = *it;
  s.argmax = static_cast<int32_t>(it - x.begin());
  double z = 0;
  for (float v : x) z += std::exp(static_cast<double>(v - s.max));
  s.log_z = std::log(z);
  return s;
}

}  // namespace qgate
