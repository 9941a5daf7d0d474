# Shared settings for the set-up scripts. Sourced, not run.
set -euo pipefail
QGATE_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export QGATE_ROOT
export QGATE_MODEL_DIR="${QGATE_MODEL_DIR:-$QGATE_ROOT/models}"
QGATE_BUILD_DIR="${QGATE_BUILD_DIR:-$QGATE_ROOT/build}"
QGATE_VENV="${QGATE_VENV:-$QGATE_ROOT/.venv}"
JOBS="${JOBS:-$(nproc)}"

log() { printf '\033[1m[qgate]\033[0m %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}
