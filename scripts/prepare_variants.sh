#!/usr/bin/env bash
# Prepares the three variants the embedded default config serves, once: each is produced by
# `qgate quantize` from the GGUF into $QGATE_MODEL_DIR/variants/<name> and reused on later runs
# (qgate quantize publishes a finished directory atomically, so an existing one is complete;
# delete it to rebuild). Settings: docs/QUALITY.md explains the choice.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
QGATE="$QGATE_BUILD_DIR/gateway/qgate"
GGUF="$QGATE_MODEL_DIR/SmolLM2-135M-Instruct.Q4_1.gguf"
CALIB="$QGATE_MODEL_DIR/corpus/calib.txt"
VARIANTS_DIR="$QGATE_MODEL_DIR/variants"
mkdir -p "$VARIANTS_DIR"

prepare() {
  local name="$1"; shift
  local dir="$VARIANTS_DIR/$name"
  if [ -f "$dir/config.json" ]; then
    log "variant $name: cached in $dir"
    return
  fi
  log "variant $name: qgate quantize $*"
  "$QGATE" quantize --input "$GGUF" --output "$dir" --calib "$CALIB" --threads "$JOBS" "$@"
}

prepare smollm2-fp16 --method fp16
prepare smollm2-gptq-4bit --method gptq --bits 4 --group-size 64 --desc-act
prepare smollm2-awq-4bit --method awq --bits 4 --group-size 64

# Offline quality of the served variants against the FP16 baseline on held-out text: the
# qgate_eval_* gauges of `qgate serve` (config quality.eval_results). 2048 tokens keep this to
# a minute or two on two cores; docs/QUALITY.md has the larger evaluation.
EVAL_JSON="$VARIANTS_DIR/eval-results.json"
if [ ! -f "$EVAL_JSON" ]; then
  log "eval of the served variants -> $EVAL_JSON"
  "$QGATE" eval --baseline "$VARIANTS_DIR/smollm2-fp16" --model "$VARIANTS_DIR/smollm2-fp16" \
    --model "$VARIANTS_DIR/smollm2-gptq-4bit" --model "$VARIANTS_DIR/smollm2-awq-4bit" \
    --text "$QGATE_MODEL_DIR/corpus/eval.txt" --max-tokens 2048 --threads "$JOBS" \
    --json "$EVAL_JSON" > /dev/null
else
  log "eval results: cached in $EVAL_JSON"
fi
