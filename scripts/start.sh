#!/usr/bin/env bash
# README command 1: install everything, fetch the model and the calibration corpus, build, prepare
# the three variants (once; cached in models/variants), then serve them with the embedded default
# config: OpenAI API on 127.0.0.1:8080, admin API on 127.0.0.1:8081. Ctrl-C drains and stops.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
"$QGATE_ROOT/scripts/install_deps.sh"
"$QGATE_ROOT/scripts/fetch_model.sh"
"$QGATE_ROOT/scripts/fetch_corpus.sh"
"$QGATE_ROOT/scripts/build.sh"
"$QGATE_ROOT/scripts/prepare_variants.sh"
if [ -z "${QGATE_ADMIN_TOKEN:-}" ]; then
  # The admin API always needs a bearer token; make one for this session if none was given.
  QGATE_ADMIN_TOKEN="$(head -c 24 /dev/urandom | base64 | tr -d '/+=')"
  export QGATE_ADMIN_TOKEN
  log "admin token for this session (set QGATE_ADMIN_TOKEN to choose one): $QGATE_ADMIN_TOKEN"
fi
cd "$QGATE_ROOT"  # the default config keeps its routing state in ./qgate-state
log "serving: curl http://127.0.0.1:8080/v1/chat/completions -H 'Content-Type: application/json' -d '{\"model\":\"smollm2\",\"messages\":[{\"role\":\"user\",\"content\":\"What is 2 + 2?\"}]}'"
exec "$QGATE_BUILD_DIR/gateway/qgate" serve "$@"
