#!/usr/bin/env bash
# Splits the real model (models/SmolLM2-135M-Instruct.Q4_1.gguf, 94 MiB) into two parts under
# third_party/model/ (ignored by git) so that the lent GPU machine, which has no network and takes
# at most 64 MiB of carried files per call, can have it: part0 (40 MiB) travels with
# third_party/debs in the first device call, part1 (the rest, ~54 MiB) alone in the second, and
# scripts/device_run.sh's model stage joins them there and checks the SHA-256 that
# scripts/fetch_model.sh checks. docs/GPU.md has the two calls.
#
# Usage: scripts/device_model_parts.sh      (run scripts/fetch_model.sh first)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SRC="${QGATE_MODEL_DIR:-$ROOT/models}/SmolLM2-135M-Instruct.Q4_1.gguf"
DEST="$ROOT/third_party/model"
PART0_BYTES=$((40 * 1024 * 1024))

sha="$(sed -n 's/^GGUF_SHA256=//p' "$ROOT/scripts/fetch_model.sh")"
if [ ! -f "$SRC" ] || ! echo "$sha  $SRC" | sha256sum -c --status; then
  echo "device_model_parts: $SRC is missing or not the expected file; run scripts/fetch_model.sh" >&2
  exit 1
fi
rm -rf "$DEST"
mkdir -p "$DEST/part0" "$DEST/part1"
head -c "$PART0_BYTES" "$SRC" >"$DEST/part0/gguf.part0"
tail -c +"$((PART0_BYTES + 1))" "$SRC" >"$DEST/part1/gguf.part1"
# Each part carries the whole file's name and checksum, so either call can tell what it holds.
for p in part0 part1; do
  printf '%s  %s\n' "$sha" "$(basename "$SRC")" >"$DEST/$p/SHA256"
done
if ! cat "$DEST/part0/gguf.part0" "$DEST/part1/gguf.part1" | sha256sum | grep -q "^$sha "; then
  echo "device_model_parts: the parts do not join back into the model" >&2
  exit 1
fi
du -b "$DEST"/part*/gguf.part* | awk '{printf "%s %.1f MiB\n", $2, $1 / 1048576}'
