#!/usr/bin/env bash
# Produces the numbers behind docs/QUALITY.md: quantizes SmolLM2-135M-Instruct with every method
# the table compares, then scores each variant on the held-out split (models/corpus/eval.txt)
# against the FP16 baseline. Results land in $QGATE_MODEL_DIR/quality/ (eval.json, eval.txt, the
# quantize logs and manifests); the script prints the Markdown table of docs/QUALITY.md at the end.
#
# Usage: scripts/quality_report.sh [EVAL_TOKENS]   (default 32768 tokens of eval.txt)
# Assumes scripts/start.sh (or build.sh + fetch_model.sh + fetch_corpus.sh) has run.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
EVAL_TOKENS="${1:-32768}"
THREADS="${THREADS:-$(nproc)}"
QGATE="$QGATE_BUILD_DIR/gateway/qgate"
GGUF="$QGATE_MODEL_DIR/SmolLM2-135M-Instruct.Q4_1.gguf"
OUT="$QGATE_MODEL_DIR/quality"
EVAL_TEXT="$QGATE_MODEL_DIR/corpus/eval.txt"
mkdir -p "$OUT"

# name | quantize arguments
VARIANTS=(
  "fp16|--method fp16"
  "rtn-g64|--method rtn --group-size 64"
  "gptq-g64|--method gptq --group-size 64"
  "gptq-g64-actorder|--method gptq --group-size 64 --desc-act"
  "gptq-g128|--method gptq --group-size 128"
  "awq-g64|--method awq --group-size 64"
)

for entry in "${VARIANTS[@]}"; do
  name="${entry%%|*}"; args="${entry#*|}"
  dir="$OUT/$name"
  if [ ! -f "$dir/config.json" ]; then  # qgate quantize publishes whole directories atomically
    log "quantize $name: qgate quantize --input $GGUF --output $dir $args"
    # shellcheck disable=SC2086
    /usr/bin/time -v "$QGATE" quantize --input "$GGUF" --output "$dir" $args --threads "$THREADS" \
      --overwrite 2> "$OUT/$name.quantize.log"
  fi
done

# One eval run scores every variant (and the source GGUF, whose exact dequantization the FP16
# baseline is) against a single baseline pass per window.
if [ ! -f "$OUT/eval.json" ]; then
  models=()
  for entry in "${VARIANTS[@]}"; do
    name="${entry%%|*}"
    [ "$name" = fp16 ] || models+=(--model "$OUT/$name")
  done
  log "eval on $EVAL_TOKENS tokens of eval.txt: ${models[*]}"
  /usr/bin/time -v "$QGATE" eval --baseline "$OUT/fp16" "${models[@]}" --model "$GGUF" \
    --text "$EVAL_TEXT" --max-tokens "$EVAL_TOKENS" --threads "$THREADS" --json "$OUT/eval.json" \
    > "$OUT/eval.txt" 2> "$OUT/eval.log"
fi
"$QGATE_VENV/bin/python" "$QGATE_ROOT/scripts/quality_table.py" "$OUT"
