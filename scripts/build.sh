#!/usr/bin/env bash
# Configures and builds qgate (Release, CPU path always; CUDA when nvcc is found).
# Usage: scripts/build.sh [extra cmake args...]; QGATE_BUILD_DIR picks the build directory.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
# nvcc is often installed outside PATH.
if ! command -v nvcc >/dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then
  export PATH="/usr/local/cuda/bin:$PATH"
fi
cmake -S "$QGATE_ROOT" -B "$QGATE_BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release "$@" >/dev/null
log "building in $QGATE_BUILD_DIR"
cmake --build "$QGATE_BUILD_DIR" -j "$JOBS"
