// make_cuda_forward in a build without CUDA.
#include "engine/batch_forward.h"

namespace qgate {

Result<std::unique_ptr<BatchForward>> make_cuda_forward(const LlamaModel&, int device,
                                                        const BatchForwardLimits&) {
  return make_error(ErrorCode::kUnsupported,
                    "cuda:" + std::to_string(device) +
                        " requested but this qgate was built without CUDA (nvcc was not found at "
                        "build time)");
}

}  // namespace qgate
