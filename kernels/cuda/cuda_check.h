// The one CUDA/cuBLAS error check of the project: names the statement, the device, file and line.
#pragma once

#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>

#define CUDA_CHECK(stmt)                                                                    \
  do {                                                                                      \
    cudaError_t _qgate_err = (stmt);                                                        \
    if (_qgate_err != cudaSuccess) {                                                        \
      int _qgate_dev = -1;                                                                  \
      cudaGetDevice(&_qgate_dev);                                                           \
      std::fprintf(stderr, "qgate: CUDA error %s (%s) in `%s` on device %d at %s:%d\n",     \
                   cudaGetErrorName(_qgate_err), cudaGetErrorString(_qgate_err), #stmt,     \
                   _qgate_dev, __FILE__, __LINE__);                                         \
      std::abort();                                                                         \
    }                                                                                       \
  } while (0)
