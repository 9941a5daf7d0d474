#!/usr/bin/env bash
# Gateway overhead: requests/s and p50/p99 latency of qgate's HTTP front door, with nginx serving
# a response of the same size as the reference, both measured by wrk in the same run.
#
# Two qgate paths, neither touching a model (so the figures are the gateway's, not the engine's):
#   GET  /v1/models                   Beast session, router, Boost.JSON body
#   POST /v1/chat/completions  (404)  + simdjson parse and validation of a chat request, routing
#                                     table lookup, OpenAI error body
# nginx answers each path with the exact bytes and status qgate sent, from memory.
#
# Usage: bench/gateway_overhead.sh [DURATION_S] [CONNECTIONS]   (defaults 10 s, 32)
# Needs: build/gateway/qgate, the variants (scripts/prepare_variants.sh), wrk, nginx.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
QGATE="${QGATE_BUILD_DIR:-$ROOT/build}/gateway/qgate"
DUR="${1:-10}"
CONN="${2:-32}"
WORK="$(mktemp -d)"
trap 'kill $QPID $NPID 2>/dev/null || true; rm -rf "$WORK"' EXIT

export QGATE_MODEL_DIR="${QGATE_MODEL_DIR:-$ROOT/models}" QGATE_ADMIN_TOKEN=bench
cat > "$WORK/qgate.yaml" <<YAML
listen: {api: {host: 127.0.0.1, port: 0}, admin: {host: 127.0.0.1, port: 0}}
admin_token: {env: QGATE_ADMIN_TOKEN}
state_dir: $WORK/state
variants:
  - {name: smollm2-gptq, model: variants/smollm2-gptq-4bit, worker: {threads: 1}}
routes:
  - {model: smollm2, weights: {smollm2-gptq: 1}, baseline: smollm2-gptq}
health: {probe_interval: 1h}
YAML
"$QGATE" serve --config "$WORK/qgate.yaml" --ready-file "$WORK/ready.json" 2> "$WORK/qgate.log" &
QPID=$!
for _ in $(seq 600); do [ -f "$WORK/ready.json" ] && break; sleep 0.1; done
QPORT=$(python3 -c "import json; print(json.load(open('$WORK/ready.json'))['api_port'])")

CHAT='{"model":"no-such-model","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"What is 2 + 2?"}],"max_tokens":32,"temperature":0}'
curl -s "http://127.0.0.1:$QPORT/v1/models" > "$WORK/models.json"
curl -s "http://127.0.0.1:$QPORT/v1/chat/completions" -H 'Content-Type: application/json' -d "$CHAT" > "$WORK/chat404.json"

NPORT=$(python3 -c "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])")
cat > "$WORK/nginx.conf" <<NGINX
worker_processes 2;
daemon off;
pid $WORK/nginx.pid;
error_log $WORK/nginx.err warn;
events { worker_connections 1024; }
http {
  access_log off;
  default_type application/json;
  client_body_temp_path $WORK/body;
  server {
    listen 127.0.0.1:$NPORT;
    # The bodies qgate sent, answered from memory with qgate's status (no file I/O either side).
    location = /v1/models { return 200 '$(sed "s/'/\\\\'/g" "$WORK/models.json")'; }
    location = /v1/chat/completions { return 404 '$(sed "s/'/\\\\'/g" "$WORK/chat404.json")'; }
  }
}
NGINX
nginx -c "$WORK/nginx.conf" &
NPID=$!
sleep 0.5

cat > "$WORK/post.lua" <<LUA
wrk.method = "POST"
wrk.body = '$CHAT'
wrk.headers["Content-Type"] = "application/json"
LUA

run() {  # name url [script]
  local name="$1" url="$2" script="${3:-}"
  local out
  out=$(wrk -t2 -c"$CONN" -d"${DUR}s" --latency ${script:+-s "$script"} "$url")
  local rps p50 p99 non2xx
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1=="50%" {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  non2xx=$(awk '/Non-2xx/ {print $NF}' <<<"$out")
  printf '| %s | %s | %s | %s | %s |\n' "$name" "$rps" "$p50" "$p99" "${non2xx:-0}"
}

echo "wrk -t2 -c$CONN -d${DUR}s --latency; body sizes: models $(wc -c < "$WORK/models.json") B, chat 404 $(wc -c < "$WORK/chat404.json") B"
echo "| target | requests/s | p50 | p99 | non-2xx responses |"
echo "|---|---|---|---|---|"
curl -s -o /dev/null -w "nginx check: GET %{http_code} %{size_download} B\n" "http://127.0.0.1:$NPORT/v1/models"
run "nginx GET /v1/models (same bytes)" "http://127.0.0.1:$NPORT/v1/models"
run "qgate GET /v1/models" "http://127.0.0.1:$QPORT/v1/models"
run "nginx POST /v1/chat/completions (same 404 bytes)" "http://127.0.0.1:$NPORT/v1/chat/completions" "$WORK/post.lua"
run "qgate POST /v1/chat/completions (parse, validate, route, 404)" "http://127.0.0.1:$QPORT/v1/chat/completions" "$WORK/post.lua"
