// The W4A16 packed layout, built once at load time, and its host reference.
//
// One set of bytes serves both CUDA kernels (kernels/cuda/w4a16_gemv.cu on CUDA cores and
// kernels/cuda/w4a16_mma.cu on tensor cores), so the layout is cut to the mma.sync m16n8k16
// fragment shapes and the GEMV simply follows the same lane mapping.
//
// Tiles. Rows are padded to a multiple of 32 (padded rows hold q = 0, scale = min = 0) and the
// matrix is cut into tiles of 32 rows x 32 columns (cols % 32 == 0, so no column tail). Tile
// (rb, kc) -- rows [32 rb, 32 rb + 32), columns [32 kc, 32 kc + 32) -- is 128 consecutive words
// (512 bytes) at word (rb * chunks + kc) * 128, chunks = cols / 32: a warp streams a row block
// along K through consecutive 512-byte tiles, one fully coalesced 16-byte load per lane.
//
// Inside a tile, lane L = 4 g + t (g = L / 4 in 0..7, t = L % 4 in 0..3: the mma "groupID" and
// "threadID_in_group") owns the 16 bytes at words 4 L .. 4 L + 3; word 4 L + i holds row
// 32 rb + g + 8 i, columns 32 kc + 8 t .. 32 kc + 8 t + 7. Rows g, g + 8 (i = 0, 1) are exactly
// the rows an m16n8k16 A fragment gives that lane in the first 16-row half of the tile, rows
// g + 16, g + 24 those of the second half. The eight columns of a lane are consecutive, which
// the mma allows because a k permutation applied to A and B alike leaves A·B unchanged: mma
// k-slot 2t + 8h + e of k-step s stands for column 8t + 4s + 2h + e. So the B fragment (the
// activations) is one plain 16-byte load of x[m][32 kc + 8 t ..], needing no shuffle either.
//
// Inside a word, nibble j (bits 4j .. 4j+3) holds column offset 2j for j < 4 and 2(j-4) + 1 for
// j >= 4, i.e. offsets 0 2 4 6 1 3 5 7. Masking the word with 0x000F000F and OR-ing 0x64006400
// makes an fp16x2 (1024 + q[0], 1024 + q[1]) in one LOP3; mask 0x00F000F0 gives
// (1024 + 16 q[2], 1024 + 16 q[3]); the word shifted right by 8 gives pairs (4, 5) and (6, 7).
// Each pair is then an exact small integer after one fp16 add (or fma by 1/16), and one HFMA2
// with the group's (scale, min) makes the weights -- already in the (2p, 2p + 1) column order of
// an fp16x2 register that both the GEMV and the mma fragments want. This is the interleaved
// order FasterTransformer, Marlin and others use for the same "magic number" conversion.
//
// Scales. One (scale, min) fp16 pair per row and group (group g covers columns
// [g G, min((g + 1) G, cols)), G % 32 == 0, so a 32-column chunk lies in a single group). Pairs
// are stored per row block and group as 32 pairs (128 bytes) at pair (rb * groups + grp) * 32,
// ordered so lane group g finds its four rows g, g + 8, g + 16, g + 24 in one 16-byte load at
// pair offset 4 g + i. scale_min[2 p] is the scale and scale_min[2 p + 1] the min (an fp16x2
// whose low half is the scale).
#include "kernels/w4a16_layout.h"

#include <cmath>
#include <string>

#include "kernels/cpu/half.h"

namespace qgate {
namespace {

constexpr int64_t kTileRows = 32;
constexpr int64_t kChunkCols = 32;
constexpr int64_t kTileWords = kTileRows * kChunkCols / 8;

Error invalid(const std::string& what) {
  return make_error(ErrorCode::kInvalidArgument, "pack_w4a16: " + what);
}

int64_t padded_rows(int64_t rows) { return (rows + kTileRows - 1) / kTileRows * kTileRows; }

// Position of element (n, k) in the packed words: word index and nibble shift.
struct NibbleAt {
  int64_t word;
  int shift;
};

NibbleAt nibble_at(int64_t cols, int64_t n, int64_t k) {
  const int64_t rb = n / kTileRows, r = n % kTileRows;
  const int64_t g = r % 8, i = r / 8;
  const int64_t kc = k / kChunkCols, t = (k % kChunkCols) / 8, e = k % 8;
  const int64_t lane = 4 * g + t;
  const int64_t word = (rb * (cols / kChunkCols) + kc) * kTileWords + lane * 4 + i;
  const int nibble = static_cast<int>(e % 2 == 0 ? e / 2 : 4 + e / 2);
  return {word, 4 * nibble};
}

// Index of the (scale, min) pair of row n, group grp.
int64_t pair_at(int64_t groups, int64_t n, int64_t grp) {
  const int64_t rb = n / kTileRows, r = n % kTileRows;
  return (rb * groups + grp) * kTileRows + 4 * (r % 8) + r / 8;
}

// fp16 bits of v, or an error naming the value when v is not finite or leaves the fp16 range.
Result<uint16_t> to_fp16(float v, const char* name, int64_t row, int64_t grp) {
  const uint16_t h = fp32_to_fp16(v);
  if (!std::isfinite(v) || !std::isfinite(fp16_to_fp32(h))) {
    return invalid(std::string(name) + "[" + std::to_string(row) + "][" + std::to_string(grp) +
                   "] = " + std::to_string(v) + " is not a finite fp16 value");
  }
  return h;
}

}  // namespace

uint64_t w4a16_packed_bytes(int64_t rows, int64_t cols, int64_t group_size) {
  const int64_t groups = (cols + group_size - 1) / group_size;
  // 4 bits per weight plus one fp16 (scale, min) pair per row and group, rows padded.
  return static_cast<uint64_t>(padded_rows(rows) * (cols / 2 + groups * 4));
}

Result<W4A16Weights> pack_w4a16(const Int4Matrix& m) {
  if (m.rows < 1) return invalid("rows " + std::to_string(m.rows) + " < 1");
  if (m.cols < kChunkCols || m.cols % kChunkCols != 0) {
    return invalid("cols " + std::to_string(m.cols) + " is not a positive multiple of 32");
  }
  if (m.group_size < kChunkCols || m.group_size % kChunkCols != 0) {
    return invalid("group_size " + std::to_string(m.group_size) +
                   " is not a positive multiple of 32");
  }
  // Keeps every word and pair index far inside int64 and the kernels' 32-bit chunk counters.
  if (m.rows > (int64_t{1} << 30) || m.cols > (int64_t{1} << 30) ||
      m.group_size > (int64_t{1} << 30)) {
    return invalid("shape " + std::to_string(m.rows) + " x " + std::to_string(m.cols) +
                   " (group_size " + std::to_string(m.group_size) + ") is too large");
  }
  if (m.q == nullptr || m.scale == nullptr || m.min == nullptr) {
    return invalid("q, scale and min must not be null");
  }

  W4A16Weights w;
  w.rows = m.rows;
  w.cols = m.cols;
  w.group_size = m.group_size;
  const int64_t groups = m.groups();
  const int64_t rows_pad = padded_rows(m.rows);
  w.qweight.assign(static_cast<size_t>(rows_pad * m.cols / 8), 0u);
  w.scale_min.assign(static_cast<size_t>(rows_pad * groups * 2), 0u);

  for (int64_t n = 0; n < m.rows; ++n) {
    for (int64_t grp = 0; grp < groups; ++grp) {
      const size_t src = static_cast<size_t>(n * groups + grp);
      QGATE_ASSIGN_OR_RETURN(const uint16_t s, to_fp16(m.scale[src], "scale", n, grp));
      QGATE_ASSIGN_OR_RETURN(const uint16_t mn, to_fp16(m.min[src], "min", n, grp));
      // The kernels dequantize with one fp16 FMA, q·scale + min for q in 0..15: each end of that
      // range must be an fp16 value too, or the GPU computes inf where the reference does not.
      const float top = 15.0f * fp16_to_fp32(s) + fp16_to_fp32(mn);
      if (!std::isfinite(fp16_to_fp32(fp32_to_fp16(top)))) {
        return invalid("15 * scale + min for row " + std::to_string(n) + " group " +
                       std::to_string(grp) + " = " + std::to_string(top) +
                       " is beyond the fp16 range");
      }
      const size_t p = static_cast<size_t>(pair_at(groups, n, grp));
      w.scale_min[2 * p] = s;
      w.scale_min[2 * p + 1] = mn;
    }
    for (int64_t k = 0; k < m.cols; ++k) {
      const uint8_t q = m.q[static_cast<size_t>(n * m.cols + k)];
      if (q > 15) {
        return invalid("q[" + std::to_string(n) + "][" + std::to_string(k) +
                       "] = " + std::to_string(q) + " is above 15");
      }
      const NibbleAt at = nibble_at(m.cols, n, k);
      w.qweight[static_cast<size_t>(at.word)] |= static_cast<uint32_t>(q) << at.shift;
    }
  }
  return w;
}

float w4a16_dequant(const W4A16Weights& w, int64_t n, int64_t k) {
  QGATE_CHECK(n >= 0 && n < w.rows && k >= 0 && k < w.cols, "w4a16_dequant: out of range");
  const NibbleAt at = nibble_at(w.cols, n, k);
  const uint32_t q = (w.qweight[static_cast<size_t>(at.word)] >> at.shift) & 15u;
  const size_t p = static_cast<size_t>(pair_at(w.groups(), n, k / w.group_size));
  const float s = fp16_to_fp32(w.scale_min[2 * p]);
  const float mn = fp16_to_fp32(w.scale_min[2 * p + 1]);
  return static_cast<float>(q) * s + mn;
}

void w4a16_matmul_ref(const W4A16Weights& w, const float* x, int64_t m, float* y) {
  std::vector<double> row(static_cast<size_t>(w.cols));
  for (int64_t n = 0; n < w.rows; ++n) {
    for (int64_t k = 0; k < w.cols; ++k) row[static_cast<size_t>(k)] = w4a16_dequant(w, n, k);
    for (int64_t i = 0; i < m; ++i) {
      const float* xi = x + i * w.cols;
      double acc = 0.0;
      for (int64_t k = 0; k < w.cols; ++k) acc += row[static_cast<size_t>(k)] * xi[k];
      y[i * w.rows + n] = static_cast<float>(acc);
    }
  }
}

}  // namespace qgate
