#!/usr/bin/env bash
# Installs what building and testing qgate needs: Debian packages (the chosen stack) and a Python
# virtual environment with the independent reference implementations the tests compare against.
# Idempotent: only missing packages are installed.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

DEBIAN_PACKAGES=(
  build-essential cmake ninja-build pkg-config git unzip ca-certificates
  python3 python3-venv python3-pip
  libboost1.81-dev        # Beast/Asio HTTP server, Boost.JSON writer
  libsimdjson-dev         # JSON parsing
  prometheus-cpp-dev      # metrics
  libyaml-cpp-dev         # configuration
  libcli11-dev            # command line
  libspdlog-dev libfmt-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  clang-14 libclang-rt-14-dev   # libFuzzer targets
  wrk nginx-light         # load generation; reverse proxy in the end-to-end tests
  prometheus              # promtool: checks and unit-tests deploy/prometheus
)

missing=()
for p in "${DEBIAN_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Under systemd the prometheus package starts a system Prometheus on :9090; only its promtool
  # is wanted here.
  if [[ " ${missing[*]} " == *" prometheus "* ]] && [ -d /run/systemd/system ]; then
    as_root systemctl disable --now prometheus >/dev/null 2>&1 || true
  fi
else
  log "Debian packages already installed"
fi

# Python tools for the tests: the `gguf` reader, HF `tokenizers` and `safetensors` are the
# independent references; numpy runs the reference forward pass.
PY_PACKAGES=(numpy==2.* gguf==0.19.0 tokenizers==0.23.* safetensors==0.* pytest==8.* openai==1.* matplotlib==3.* pyyaml==6.* kubernetes-validate==1.*)
if [ ! -x "$QGATE_VENV/bin/python" ]; then
  log "creating Python environment $QGATE_VENV"
  python3 -m venv "$QGATE_VENV"
fi
if ! "$QGATE_VENV/bin/python" -c "import numpy, gguf, tokenizers, safetensors, pytest, openai, matplotlib, yaml, kubernetes_validate" 2>/dev/null; then
  log "installing Python packages: ${PY_PACKAGES[*]}"
  "$QGATE_VENV/bin/pip" install -q --disable-pip-version-check "${PY_PACKAGES[@]}"
fi
