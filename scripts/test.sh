#!/usr/bin/env bash
# README command 2: install everything, fetch the model, build (Release and ASan/UBSan) and run
# the whole test suite: GoogleTest suites under both builds, then the Python end-to-end checks
# against independent implementations.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
"$QGATE_ROOT/scripts/install_deps.sh"
"$QGATE_ROOT/scripts/fetch_model.sh"
"$QGATE_ROOT/scripts/fetch_corpus.sh"
"$QGATE_ROOT/scripts/build.sh"
# The end-to-end gateway tests serve the real variants; made once, cached in models/variants.
"$QGATE_ROOT/scripts/prepare_variants.sh"

# The sanitizer build skips CUDA and benchmarks: it exists to run the host code under ASan/UBSan.
# Its flags are chosen for CI time (measured on a 2-core machine, docs/TESTING.md):
# -O1 compiles the template-heavy gateway ~40% faster than -O2 (the whole build 7.8 -> 5.0 min);
# -fexpensive-optimizations keeps the FMA contraction GCC otherwise does only from -O2 on, so this
# build rounds exactly like Release (identical logits; without it one ulp in RoPE changes greedy
# text through the int8-activation kernels and the real-model tests disagree between builds);
# -g1 (line tables only) keeps file:line in reports (full -g made the build ~25% slower).
# kernels/CMakeLists.txt keeps the CPU kernels at -O2: they are the real-model tests' hot loops.
ASAN_DIR="${QGATE_ASAN_BUILD_DIR:-$QGATE_ROOT/build-asan}"
QGATE_BUILD_DIR="$ASAN_DIR" "$QGATE_ROOT/scripts/build.sh" \
  -DQGATE_SANITIZE=ON -DQGATE_CUDA=OFF -DQGATE_BUILD_BENCH=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 -fexpensive-optimizations -g1 -DNDEBUG"

status=0
log "unit tests (Release)"
ctest --test-dir "$QGATE_BUILD_DIR" --output-on-failure -j "$JOBS" || status=1
log "unit tests (ASan/UBSan)"
# The quantization-pipeline tests quantize the whole real model several times (minutes in
# Release); under the sanitizers they would dominate CI time while exercising the same math the
# quantize_math tests already run there, so the sanitizer pass leaves them to the Release pass.
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --test-dir "$ASAN_DIR" --output-on-failure -j "$JOBS" -E '^QuantizePipelineTest\.' || status=1
log "Python checks against independent references"
QGATE_BUILD_DIR="$QGATE_BUILD_DIR" "$QGATE_VENV/bin/python" -m pytest -q "$QGATE_ROOT/tests/python" || status=1
exit $status
