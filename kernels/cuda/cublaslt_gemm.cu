// cuBLASLt GEMM for fp16/bf16 weights: y[m][n] = x[m][k] · W[n][k]ᵀ, row-major, fp32 compute.
//
// Row-major onto column-major. cuBLASLt reads every matrix column-major (CUBLASLT_ORDER_COL). A
// row-major R[r][c] with row stride c is, byte for byte, the column-major matrix Rᵀ (c x r, ld =
// c), so no data moves; only the roles change. The product we want, y = x·Wᵀ, transposed is
//     yᵀ (n x m) = W (n x k) · xᵀ (k x m),
// and in column-major terms every piece is already in memory:
//   D = yᵀ: the row-major y buffer read column-major: n x m, ld = n.
//   A = the row-major W buffer read column-major is Wᵀ (k x n, ld = k); op(A) = W needs transa = T.
//   B = the row-major x buffer read column-major is xᵀ (k x m, ld = k); transb = N.
// So cuBLASLt runs a "TN" GEMM with (M, N, K)_blas = (n, m, k): A is k x n (ld k), B is k x m (ld
// k), D is n x m (ld n). TN (both operands contiguous along K) is the one layout every cuBLASLt
// kernel family takes (FP8 takes nothing else), and it streams the weights row by row as they are
// stored.
//
// Alignment. cuBLASLt's layouts take any leading dimension >= rows; what an algorithm needs beyond
// that is told to it, not checked: the tensor-core kernels load 16-byte vectors and so need
// 16-byte-aligned pointers and rows. The heuristic sees the leading dimensions in the layouts but
// not the pointers: it assumes 256-byte alignment unless CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_*_BYTES
// says less, and an algorithm picked on that assumption would read misaligned vectors from a
// sub-view such as x + 1. So each call measures its pointers' alignment (up to 256), passes it to
// the heuristic and keys the cache by it. Refused here: non-positive sizes, unsupported type
// pairs, null or not element-aligned pointers (InvalidArgument); a configuration for which the
// heuristic offers no algorithm (Unsupported, naming the alignments). K = 100 (200-byte rows) is
// legal and runs on an algorithm without 16-byte vectors; callers after speed keep K % 8 == 0 and
// 16-byte-aligned buffers.
//
// The first call of a shape queries the heuristic (host work, far slower than a decode-size GEMM);
// make it before capturing a CUDA graph so that captured calls are cache hits.
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>

#include "kernels/cuda/cublaslt_gemm.h"
#include "kernels/cuda/device_memory.h"

namespace qgate::cuda {
namespace {

ErrorCode error_code_of(cublasStatus_t s) {
  switch (s) {
    case CUBLAS_STATUS_ALLOC_FAILED:
      return ErrorCode::kResourceExhausted;
    case CUBLAS_STATUS_NOT_SUPPORTED:
      return ErrorCode::kUnsupported;
    case CUBLAS_STATUS_INVALID_VALUE:
      return ErrorCode::kInvalidArgument;
    default:
      return ErrorCode::kInternal;
  }
}

// "cublasLtMatmul: CUBLAS_STATUS_NOT_SUPPORTED: the functionality requested is not supported".
Status cublas_status(cublasStatus_t s, const std::string& what) {
  if (s == CUBLAS_STATUS_SUCCESS) return Status::Ok();
  return make_error(error_code_of(s),
                    what + ": " + cublasLtGetStatusName(s) + ": " + cublasLtGetStatusString(s));
}

struct DescDeleter {
  void operator()(cublasLtMatmulDesc_t d) const { cublasLtMatmulDescDestroy(d); }
};
struct LayoutDeleter {
  void operator()(cublasLtMatrixLayout_t l) const { cublasLtMatrixLayoutDestroy(l); }
};
struct PreferenceDeleter {
  void operator()(cublasLtMatmulPreference_t p) const { cublasLtMatmulPreferenceDestroy(p); }
};
using DescPtr = std::unique_ptr<std::remove_pointer_t<cublasLtMatmulDesc_t>, DescDeleter>;
using LayoutPtr = std::unique_ptr<std::remove_pointer_t<cublasLtMatrixLayout_t>, LayoutDeleter>;
using PreferencePtr =
    std::unique_ptr<std::remove_pointer_t<cublasLtMatmulPreference_t>, PreferenceDeleter>;

}  // namespace

const char* gemm_type_name(GemmType t) {
  switch (t) {
    case GemmType::kF16:
      return "f16";
    case GemmType::kBF16:
      return "bf16";
    case GemmType::kF32:
      return "f32";
  }
  return "?";
}

namespace {

cudaDataType_t cuda_type(GemmType t) {
  switch (t) {
    case GemmType::kF16:
      return CUDA_R_16F;
    case GemmType::kBF16:
      return CUDA_R_16BF;
    case GemmType::kF32:
      return CUDA_R_32F;
  }
  return CUDA_R_32F;
}

size_t type_bytes(GemmType t) { return t == GemmType::kF32 ? 4 : 2; }

// Largest power of two <= 256 dividing the address (256 is what cuBLASLt assumes by default).
uint32_t pointer_alignment(const void* p) {
  const auto addr = reinterpret_cast<uintptr_t>(p);
  uint32_t a = 1;
  while (a < 256 && addr % (2 * a) == 0) a *= 2;
  return a;
}

// Everything the chosen algorithm depends on: sizes, types and the pointers' alignment.
using PlanKey =
    std::tuple<int64_t, int64_t, int64_t, GemmType, GemmType, uint32_t, uint32_t, uint32_t>;

// One cached problem: the descriptors stay alive with the algorithm chosen for them.
struct Plan {
  DescPtr desc;
  LayoutPtr a, b, d;
  cublasLtMatmulAlgo_t algo{};
};

// A server sees arbitrary prompt lengths (every m a new key); past this many plans the cache is
// dropped and refilled, which costs one heuristic query per shape again, not correctness.
constexpr size_t kMaxPlans = 4096;
// The heuristic returns its candidates best first; a few are asked for so that one whose
// workspace fits can be taken if the first does not.
constexpr int kHeuristicCandidates = 4;

class CublasLtGemmImpl final : public CublasLtGemm {
 public:
  CublasLtGemmImpl(cublasLtHandle_t handle, DeviceBuffer workspace)
      : handle_(handle), workspace_(std::move(workspace)) {}
  ~CublasLtGemmImpl() override {
    plans_.clear();  // descriptors before the handle
    cublasLtDestroy(handle_);
  }
  CublasLtGemmImpl(const CublasLtGemmImpl&) = delete;
  CublasLtGemmImpl& operator=(const CublasLtGemmImpl&) = delete;

  Status matmul(const void* w, GemmType w_type, const void* x, int64_t m, int64_t n, int64_t k,
                void* y, GemmType y_type, cudaStream_t stream) override {
    QGATE_TRY_STATUS(validate(w, w_type, x, m, n, k, y, y_type));
    const PlanKey key{
        m, n, k, w_type, y_type, pointer_alignment(w), pointer_alignment(x), pointer_alignment(y)};
    auto it = plans_.find(key);
    if (it == plans_.end()) {
      if (plans_.size() >= kMaxPlans) plans_.clear();
      QGATE_ASSIGN_OR_RETURN(Plan plan, make_plan(key));
      it = plans_.emplace(key, std::move(plan)).first;
    }
    const Plan& p = it->second;
    // Scale type is fp32 (the descriptor's), so alpha/beta are floats read from the host.
    const float alpha = 1.0f;
    const float beta = 0.0f;
    // beta = 0: C is not read; it is given the output's buffer and layout as cuBLASLt asks.
    return cublas_status(cublasLtMatmul(handle_, p.desc.get(), &alpha, w, p.a.get(), x, p.b.get(),
                                        &beta, y, p.d.get(), y, p.d.get(), &p.algo,
                                        workspace_.get(), workspace_.bytes(), stream),
                         "cublasLtMatmul " + shape_string(m, n, k, w_type, y_type));
  }

  size_t workspace_bytes() const override { return workspace_.bytes(); }

 private:
  static std::string shape_string(int64_t m, int64_t n, int64_t k, GemmType w_type,
                                  GemmType y_type) {
    return "(m=" + std::to_string(m) + ", n=" + std::to_string(n) + ", k=" + std::to_string(k) +
           ", " + gemm_type_name(w_type) + "->" + gemm_type_name(y_type) + ")";
  }

  static Status validate(const void* w, GemmType w_type, const void* x, int64_t m, int64_t n,
                         int64_t k, const void* y, GemmType y_type) {
    auto invalid = [&](const std::string& why) {
      return Status(
          make_error(ErrorCode::kInvalidArgument,
                     "cublaslt_gemm " + shape_string(m, n, k, w_type, y_type) + ": " + why));
    };
    if (m <= 0 || n <= 0 || k <= 0) return invalid("m, n and k must be positive");
    if (w_type != GemmType::kF16 && w_type != GemmType::kBF16) {
      return invalid("weights must be f16 or bf16");
    }
    if (y_type != w_type && y_type != GemmType::kF32) {
      return invalid("output must have the weights' type or be f32");
    }
    if (w == nullptr || x == nullptr || y == nullptr) return invalid("null pointer");
    if (pointer_alignment(w) < 2 || pointer_alignment(x) < 2) {
      return invalid("w and x must be 2-byte aligned");
    }
    if (pointer_alignment(y) < type_bytes(y_type)) {
      return invalid("y must be aligned to its element size");
    }
    return Status::Ok();
  }

  Result<Plan> make_plan(const PlanKey& key) const {
    const auto [m, n, k, w_type, y_type, align_w, align_x, align_y] = key;
    const std::string what = shape_string(m, n, k, w_type, y_type);
    Plan p;
    cublasLtMatmulDesc_t desc = nullptr;
    QGATE_TRY_STATUS(cublas_status(cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F),
                                   "cublasLtMatmulDescCreate " + what));
    p.desc.reset(desc);
    const cublasOperation_t trans_a = CUBLAS_OP_T;
    const cublasOperation_t trans_b = CUBLAS_OP_N;
    QGATE_TRY_STATUS(cublas_status(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA,
                                                                  &trans_a, sizeof(trans_a)),
                                   "cublasLtMatmulDescSetAttribute(TRANSA) " + what));
    QGATE_TRY_STATUS(cublas_status(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB,
                                                                  &trans_b, sizeof(trans_b)),
                                   "cublasLtMatmulDescSetAttribute(TRANSB) " + what));

    // The mapping in the file comment: A = W buffer as k x n, B = x buffer as k x m, D = y as n x
    // m.
    auto layout = [&](LayoutPtr& out, GemmType t, int64_t rows, int64_t cols,
                      int64_t ld) -> Status {
      cublasLtMatrixLayout_t l = nullptr;
      QGATE_TRY_STATUS(
          cublas_status(cublasLtMatrixLayoutCreate(&l, cuda_type(t), static_cast<uint64_t>(rows),
                                                   static_cast<uint64_t>(cols), ld),
                        "cublasLtMatrixLayoutCreate " + what));
      out.reset(l);
      return Status::Ok();
    };
    QGATE_TRY_STATUS(layout(p.a, w_type, k, n, k));
    QGATE_TRY_STATUS(layout(p.b, w_type, k, m, k));
    QGATE_TRY_STATUS(layout(p.d, y_type, n, m, n));

    cublasLtMatmulPreference_t pref_raw = nullptr;
    QGATE_TRY_STATUS(cublas_status(cublasLtMatmulPreferenceCreate(&pref_raw),
                                   "cublasLtMatmulPreferenceCreate " + what));
    PreferencePtr pref(pref_raw);
    const uint64_t max_workspace = workspace_.bytes();
    QGATE_TRY_STATUS(cublas_status(
        cublasLtMatmulPreferenceSetAttribute(pref_raw, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                             &max_workspace, sizeof(max_workspace)),
        "cublasLtMatmulPreferenceSetAttribute(MAX_WORKSPACE_BYTES) " + what));
    // A is the weights, B the activations, C and D the output (same buffer).
    const std::array<std::pair<cublasLtMatmulPreferenceAttributes_t, uint32_t>, 4> aligns{{
        {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, align_w},
        {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, align_x},
        {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, align_y},
        {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, align_y},
    }};
    for (const auto& [attr, value] : aligns) {
      QGATE_TRY_STATUS(
          cublas_status(cublasLtMatmulPreferenceSetAttribute(pref_raw, attr, &value, sizeof(value)),
                        "cublasLtMatmulPreferenceSetAttribute(MIN_ALIGNMENT) " + what));
    }

    std::array<cublasLtMatmulHeuristicResult_t, kHeuristicCandidates> results{};
    int returned = 0;
    QGATE_TRY_STATUS(cublas_status(
        cublasLtMatmulAlgoGetHeuristic(handle_, desc, p.a.get(), p.b.get(), p.d.get(), p.d.get(),
                                       pref_raw, kHeuristicCandidates, results.data(), &returned),
        "cublasLtMatmulAlgoGetHeuristic " + what));
    for (int i = 0; i < returned; ++i) {
      if (results[i].state == CUBLAS_STATUS_SUCCESS &&
          results[i].workspaceSize <= workspace_.bytes()) {
        p.algo = results[i].algo;
        return std::move(p);  // C++17 (nvcc) does not move into the converting constructor
      }
    }
    return make_error(
        ErrorCode::kUnsupported,
        "cublasLtMatmulAlgoGetHeuristic " + what + ": no algorithm (" + std::to_string(returned) +
            " candidates) for pointer alignments w=" + std::to_string(align_w) +
            " x=" + std::to_string(align_x) + " y=" + std::to_string(align_y) +
            " within a workspace of " + std::to_string(workspace_.bytes()) + " bytes");
  }

  cublasLtHandle_t handle_;
  DeviceBuffer workspace_;
  std::map<PlanKey, Plan> plans_;
};

}  // namespace

Result<std::unique_ptr<CublasLtGemm>> CublasLtGemm::create(size_t workspace_bytes) {
  // cublasLtCreate does not touch the device; making sure a device is usable first turns "no GPU"
  // into a clear CUDA error instead of a failure at the first matmul.
  int device = -1;
  QGATE_TRY_STATUS(cuda_status(cudaGetDevice(&device), "CublasLtGemm::create: cudaGetDevice"));
  QGATE_ASSIGN_OR_RETURN(DeviceBuffer workspace,
                         DeviceBuffer::allocate(workspace_bytes, "cuBLASLt workspace"));
  cublasLtHandle_t handle = nullptr;
  QGATE_TRY_STATUS(cublas_status(cublasLtCreate(&handle), "cublasLtCreate"));
  return std::unique_ptr<CublasLtGemm>(new CublasLtGemmImpl(handle, std::move(workspace)));
}

}  // namespace qgate::cuda
