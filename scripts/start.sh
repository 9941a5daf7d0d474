#!/usr/bin/env bash
# README command 1: install everything, fetch the model, build, and answer a chat request.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
"$QGATE_ROOT/scripts/install_deps.sh"
"$QGATE_ROOT/scripts/fetch_model.sh"
"$QGATE_ROOT/scripts/build.sh"
log "asking the model a question"
"$QGATE_BUILD_DIR/gateway/qgate" chat --verbose --message "${1:-Give me three tips for staying healthy.}"
