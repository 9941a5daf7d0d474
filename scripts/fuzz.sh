#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (ASan + UBSan) in build-fuzz/ and runs each for the given
# number of seconds (default 60) on the seed corpus in tests/fuzz/corpus/.
# Usage: scripts/fuzz.sh [seconds] [target...]   (default: every target below)
# Targets: fuzz_gguf, fuzz_safetensors (model files), fuzz_openai_request (API request bodies),
# fuzz_http_server (raw bytes to a live HTTP server), fuzz_admin_api (admin changes, durability),
# fuzz_routing_state (the durable admin state), fuzz_serve_config (the YAML config),
# fuzz_sampler (sampling over NaN/inf logits),
# fuzz_text (tokenizer, chat prompts, streaming detokenizer and stop strings on the real
# tokenizer: needs models/, scripts/fetch_model.sh).
# New interesting inputs go to build-fuzz/corpus/<format>/ (the source tree stays untouched);
# crashes are written to build-fuzz/artifacts/ and make the script exit non-zero.
set -euo pipefail

seconds="${1:-60}"
shift || true
targets=("$@")
[[ ${#targets[@]} -eq 0 ]] &&
  targets=(fuzz_gguf fuzz_safetensors fuzz_openai_request fuzz_http_server fuzz_admin_api
    fuzz_routing_state fuzz_serve_config fuzz_sampler fuzz_text)

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="$root/build-fuzz"
cc="${CC:-clang-14}"
cxx="${CXX:-clang++-14}"

cmake -S "$root" -B "$build" -G Ninja -DCMAKE_C_COMPILER="$cc" -DCMAKE_CXX_COMPILER="$cxx" \
  -DQGATE_BUILD_FUZZ=ON -DQGATE_CUDA=OFF -DQGATE_BUILD_BENCH=OFF -DQGATE_NATIVE=ON \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 -gline-tables-only" >/dev/null
ninja -C "$build" "${targets[@]}"

mkdir -p "$build/artifacts"
status=0
for target in "${targets[@]}"; do
  format="${target#fuzz_}"
  mkdir -p "$build/corpus/$format"
  echo "== $target for ${seconds}s"
  # The first corpus dir receives new inputs; the seed dir is only read.
  if ! "$build/tests/$target" -max_total_time="$seconds" -print_final_stats=1 \
      -artifact_prefix="$build/artifacts/${target}-" \
      "$build/corpus/$format" "$root/tests/fuzz/corpus/$format"; then
    echo "!! $target found a crash; see $build/artifacts/" >&2
    status=1
  fi
done
exit $status
