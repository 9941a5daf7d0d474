#!/usr/bin/env bash
# shellcheck disable=SC2317  # the stage functions are called through stage()
# Runs ON the lent GPU machine (Ubuntu 24.04, root, no network), from the repository root, with
# $OUT set by the device tool: unpacks the carried .debs (scripts/device_deps.sh fetched them),
# configures and builds Release for sm_90, then runs the kernel tests, the W4A16-vs-cuBLASLt
# benchmark and compute-sanitizer memcheck on the CUDA tests, and prints a short summary last.
# docs/GPU.md has the device call and what the outputs mean.
#
# Every stage runs under a time limit carved out of one budget (the device call allows 600 s), its
# output goes to a log under $OUT, and a failing stage is recorded, not fatal: the later stages
# still run where they can, so one call brings back as much as possible. Exit status 0 only if
# every stage that ran succeeded.
#
# At most 8 files come back from $OUT: run.log (environment, unpacking, configure, build, kernel
# resource usage), tests.log, bench.log, memcheck.log, w4a16.csv, w4a16.json, summary.txt.
#
# The real model (94 MiB) cannot travel in one call: scripts/device_model_parts.sh splits it into
# third_party/model/part0 and part1, carried in two consecutive calls on the same warm machine;
# the model stage joins them once both have arrived (docs/GPU.md, "The real model").
#
# Knobs (environment):
#   QGATE_STAGES      stages to run, default
#                     env,deps,model,configure,build,resources,tests,engine,bench,decode,memcheck
#   QGATE_BUDGET_S    seconds for the whole script (default 570)
#   QGATE_CUDA_ARCH   CMAKE_CUDA_ARCHITECTURES (default 90; 90a enables wgmma/setmaxnreg code)
#   QGATE_BENCH_ARGS  extra arguments for qgate_cuda_kernels_bench (e.g. "--quick")
#   QGATE_CMAKE_ARGS  extra configure arguments (also given to the dependency probes)
#   JOBS              build parallelism (default: nproc)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

OUT="${OUT:-$ROOT/build-gpu/out}"
BUILD="${QGATE_GPU_BUILD_DIR:-$ROOT/build-gpu}"
MODEL_PARTS="$ROOT/third_party/model"
# Inside the (ignored) build folder, so that a second call on the same warm machine finds it.
PREFIX="${QGATE_DEPS_PREFIX:-$BUILD/deps}"
DEBS="$ROOT/third_party/debs"
ARCH="${QGATE_CUDA_ARCH:-90}"
JOBS="${JOBS:-$(nproc)}"
STAGES="${QGATE_STAGES:-env,deps,model,configure,build,resources,tests,engine,bench,decode,memcheck}"
BUDGET="${QGATE_BUDGET_S:-570}"
read -r -a BENCH_ARGS <<<"${QGATE_BENCH_ARGS:-}"
read -r -a CMAKE_EXTRA <<<"${QGATE_CMAKE_ARGS:-}"
START=$(date +%s)
export QGATE_SOURCE_DIR="$ROOT"  # the tests find models/ and tests/data through it

mkdir -p "$OUT"
RUNLOG="$OUT/run.log"
STAGELOG="$OUT/.stages"  # folded into summary.txt at the end
: >"$RUNLOG"
: >"$STAGELOG"
[ -d /usr/local/cuda/bin ] && export PATH="/usr/local/cuda/bin:$PATH"
export LD_LIBRARY_PATH="$PREFIX/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

elapsed() { echo $(($(date +%s) - START)); }
log() { printf '[device_run %4ds] %s\n' "$(elapsed)" "$*" | tee -a "$RUNLOG" >&2; }

FAILED=0
# stage NAME LOGFILE CAP_SECONDS COMMAND...: runs COMMAND (a program or a function of this script)
# with its output appended to LOGFILE, under min(CAP, what is left of the budget), and records the
# exit status and the seconds. Never stops the script.
stage() {
  local name="$1" logf="$2" cap="$3"
  shift 3
  if [[ ",$STAGES," != *",$name,"* ]]; then
    printf '%-10s skipped\n' "$name" >>"$STAGELOG"
    return 0
  fi
  local left=$((BUDGET - $(elapsed) - 20))
  if ((left < 15)); then
    log "$name: not run, budget spent"
    printf '%-10s not run (budget spent)\n' "$name" >>"$STAGELOG"
    FAILED=1
    return 0
  fi
  local limit=$((cap < left ? cap : left)) rc=0 t0
  t0=$(date +%s)
  log "$name: start (limit ${limit}s, log $(basename "$logf"))"
  printf '\n===== %s: %s\n' "$name" "$*" >>"$logf"
  if declare -F "$1" >/dev/null; then
    # A function cannot run under timeout(1): run it in a subshell with bash's own timeout.
    timeout --kill-after=10 "$limit" bash -c "$(declare -f "$1" probe); $(declare -p PREFIX DEBS BUILD ARCH JOBS CMAKE_EXTRA ROOT MODEL_PARTS); $*" >>"$logf" 2>&1 || rc=$?
  else
    timeout --kill-after=10 "$limit" "$@" >>"$logf" 2>&1 || rc=$?
  fi
  local dt=$(($(date +%s) - t0)) note=""
  ((rc == 124 || rc == 137)) && note=" (timed out at ${limit}s)"
  printf '%-10s rc=%-3s %4ds%s\n' "$name" "$rc" "$dt" "$note" >>"$STAGELOG"
  log "$name: rc=$rc in ${dt}s$note"
  ((rc == 0)) || FAILED=1
  return 0
}

env_report() {
  nvidia-smi || true
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,clocks.mem \
    --format=csv || true
  nvcc --version || true
  cmake --version || true
  "${CXX:-g++}" --version || true
  command -v ninja compute-sanitizer cuobjdump || true
  grep PRETTY_NAME /etc/os-release || true
  echo "cores: $(nproc)"
}

# probe NAME...: prints the packages among NAME... that CMake finds on this machine without our
# prefix (one throw-away project, so the compiler is detected once, not per package).
probe() {
  local dir
  dir="$(mktemp -d)"
  cat >"$dir/CMakeLists.txt" <<'EOF'
cmake_minimum_required(VERSION 3.25)
project(probe LANGUAGES CXX)
foreach(p IN LISTS PACKAGES)
  find_package(${p} QUIET)
  if(${p}_FOUND)
    file(APPEND "${CMAKE_BINARY_DIR}/found.txt" "${p}\n")
  endif()
endforeach()
EOF
  local list
  list="$(printf '%s;' "$@")"
  cmake -S "$dir" -B "$dir/build" "-DPACKAGES=${list%;}" "${CMAKE_EXTRA[@]}" >/dev/null 2>&1 || true
  cat "$dir/build/found.txt" 2>/dev/null || true
  rm -rf "$dir"
}

unpack_deps() {
  set -e
  if [ ! -d "$DEBS/required" ]; then
    echo "no $DEBS/required: run scripts/device_deps.sh on a networked machine and carry third_party/debs"
    return 1
  fi
  rm -rf "$PREFIX"
  mkdir -p "$PREFIX"
  for f in "$DEBS"/required/*.deb; do
    echo "unpack $(basename "$f")"
    dpkg -x "$f" "$PREFIX"
  done
  # prometheus-cpp's package file looks for civetweb, zlib and curl for its pull/push libraries,
  # which qgate does not link (the gateway uses prometheus-cpp::core) and the image may lack.
  local cfg="$PREFIX/usr/lib/x86_64-linux-gnu/cmake/prometheus-cpp/prometheus-cpp-config.cmake"
  sed -i -e 's/set(PROMETHEUS_CPP_ENABLE_PULL ON)/set(PROMETHEUS_CPP_ENABLE_PULL OFF)/' \
    -e 's/set(PROMETHEUS_CPP_ENABLE_PUSH ON)/set(PROMETHEUS_CPP_ENABLE_PUSH OFF)/' "$cfg"
  grep -q 'ENABLE_PULL OFF' "$cfg" && grep -q 'ENABLE_PUSH OFF' "$cfg"
  local names=() found name
  for d in "$DEBS"/fallback/*/; do
    [ -d "$d" ] && names+=("$(basename "$d")")
  done
  found="$(probe "${names[@]}")"
  for name in "${names[@]}"; do
    if grep -qx "$name" <<<"$found"; then
      echo "$name: found on this machine"
    else
      echo "$name: not found on this machine, unpacking the carried Debian 12 packages"
      for f in "$DEBS/fallback/$name"/*.deb; do dpkg -x "$f" "$PREFIX"; done
    fi
  done
}

# Joins the model parts into models/ once both are here (the first call brings part0, the second
# part1; see scripts/device_model_parts.sh) and checks the SHA-256. Without parts, or with one,
# it says so and succeeds: the real-model tests then skip with a message.
join_model() {
  set -e
  local name sha target have="" p
  if [ -f "$ROOT/models/SmolLM2-135M-Instruct.Q4_1.gguf" ]; then
    echo "model already in models/"
    return 0
  fi
  for p in part0 part1; do
    [ -f "$MODEL_PARTS/$p/gguf.$p" ] && have+=" $p"
  done
  if [ "$have" != " part0 part1" ]; then
    echo "model parts here:${have:- none} (both part0 and part1 are needed; the real-model" \
      "tests skip without them)"
    return 0
  fi
  read -r sha name <"$MODEL_PARTS/part0/SHA256"
  mkdir -p "$ROOT/models"
  target="$ROOT/models/$name"
  cat "$MODEL_PARTS/part0/gguf.part0" "$MODEL_PARTS/part1/gguf.part1" >"$target.part"
  if ! echo "$sha  $target.part" | sha256sum -c --status; then
    rm -f "$target.part"
    echo "the joined model does not match its SHA-256 $sha (parts from different splits?)"
    return 1
  fi
  mv "$target.part" "$target"
  echo "model joined and checked: $target"
}

configure() {
  local gen="Unix Makefiles"
  command -v ninja >/dev/null && gen="Ninja"
  cmake -S "$ROOT" -B "$BUILD" -G "$gen" -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_CUDA_ARCHITECTURES="$ARCH" -DCMAKE_PREFIX_PATH="$PREFIX/usr" "${CMAKE_EXTRA[@]}"
}

build() {
  local keep_going=()
  [ -f "$BUILD/build.ninja" ] && keep_going=(-- -k 0)
  cmake --build "$BUILD" -j "$JOBS" --target qgate_kernels_tests qgate_cuda_kernels_bench \
    qgate_engine_tests qgate_cuda_decode_bench \
    "${keep_going[@]}"
}

# Registers, spills and stack of every kernel as built for this run (also readable off-device).
resources() {
  command -v cuobjdump || { echo "no cuobjdump on this machine"; return 1; }
  local lib
  lib="$(find "$BUILD/kernels" -name 'libqgate_kernels.a' | head -1)"
  cuobjdump --dump-resource-usage "$lib" | grep -E 'Function|REG|STACK|LOCAL|spill' || true
}

# The gtest filter of the CUDA suites: every suite named in tests/kernels/cuda/*.cpp.
cuda_filter() {
  grep -ohE '^(TEST|TEST_F|TEST_P|TYPED_TEST)\(\s*[A-Za-z0-9_]+' "$ROOT"/tests/kernels/cuda/*.cpp |
    sed -E 's/.*\(\s*//' | sort -u | sed 's/.*/*&.*/' | paste -sd: -
}

# Decode tokens/s: the synthetic 7B Llama (4-bit and FP16), then each SmolLM2 variant present.
decode_bench() {
  local b="$BUILD/bench/qgate_cuda_decode_bench" status=0 m
  "$b" --synthetic 7b-q4 --streams 1,32 --steps 64 || status=1
  "$b" --synthetic 7b-f16 --streams 1,32 --steps 64 || status=1
  for m in models/SmolLM2-135M-Instruct.Q4_1.gguf models/variants/smollm2-fp16 \
           models/variants/smollm2-gptq-4bit models/variants/smollm2-awq-4bit; do
    [ -e "$ROOT/$m" ] && { "$b" --model "$ROOT/$m" --streams 1,32 --steps 128 || status=1; }
  done
  return "$status"
}

TESTS="$BUILD/tests/qgate_kernels_tests"
BENCH="$BUILD/bench/qgate_cuda_kernels_bench"
SANITIZER="$(command -v compute-sanitizer || ls /usr/local/cuda/compute-sanitizer/compute-sanitizer 2>/dev/null || echo compute-sanitizer)"

stage env "$RUNLOG" 60 env_report
stage deps "$RUNLOG" 120 unpack_deps
stage model "$RUNLOG" 30 join_model
stage configure "$RUNLOG" 120 configure
stage build "$RUNLOG" 360 build
stage resources "$RUNLOG" 30 resources
# Tests first (CPU and CUDA), then the benchmark (checks before it times), then memcheck, which is
# the slowest per test and so gets what remains.
stage tests "$OUT/tests.log" 180 "$TESTS" --gtest_color=no
# The engine's GPU forward pass against the CPU one (synthetic models always; the real SmolLM2
# files only when models/ was carried, see docs/GPU.md), then end-to-end decode speed.
stage engine "$OUT/engine.log" 180 "$BUILD/tests/qgate_engine_tests" --gtest_color=no \
  --gtest_filter='CudaForward*:GpuWeights*:GpuMemoryPlan*:SyntheticModel*'
stage bench "$OUT/bench.log" 300 "$BENCH" --out "$OUT/w4a16.csv" --json "$OUT/w4a16.json" "${BENCH_ARGS[@]}"
stage decode "$OUT/engine.log" 240 decode_bench
stage memcheck "$OUT/memcheck.log" 300 "$SANITIZER" --tool memcheck --error-exitcode 3 \
  --print-limit 50 "$TESTS" --gtest_color=no --gtest_filter="$(cuda_filter)"

# ---- summary (printed last: the device tool returns the end of the output) ----
{
  echo "===== qgate GPU run: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -1), arch $ARCH, $(elapsed)s"
  cat "$STAGELOG"
  if [ -f "$OUT/tests.log" ]; then
    echo "tests: $(grep -hE '^\[  (PASSED|FAILED|SKIPPED) +\] [0-9]+ test' "$OUT/tests.log" | tr '\n' ' ')"
    grep -hE '^\[  FAILED  \] .*\.' "$OUT/tests.log" | sort -u | head -20 || true
    nocuda=$(grep -c 'no CUDA device' "$OUT/tests.log" || true)
    if [ "${nocuda:-0}" -gt 0 ]; then
      echo "WARNING: $nocuda CUDA tests skipped for want of a device"
    fi
  fi
  if [ -f "$OUT/engine.log" ]; then
    echo "engine: $(grep -hE '^\[  (PASSED|FAILED|SKIPPED) +\] [0-9]+ test' "$OUT/engine.log" | tr '\n' ' ')"
    grep -hE '^\[  FAILED  \] .*\.|"summary": true|MISMATCH' "$OUT/engine.log" | head -20 || true
  fi
  if [ -f "$OUT/memcheck.log" ]; then
    echo "memcheck: $(grep -h 'ERROR SUMMARY' "$OUT/memcheck.log" | tail -1)"
  fi
  if [ -f "$OUT/bench.log" ]; then
    grep -hE '^device |CHECK|FAIL|^target |all checks passed' "$OUT/bench.log" | head -30 || true
  fi
} >"$OUT/summary.txt"
rm -f "$STAGELOG"

# The benchmark's table, then the summary, so both land in the returned tail.
if [ -f "$OUT/bench.log" ]; then
  sed -n '/^per call, us/,$p' "$OUT/bench.log" | grep -v '^target ' || true
fi
cat "$OUT/summary.txt"
exit "$FAILED"
