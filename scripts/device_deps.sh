#!/usr/bin/env bash
# Fetches, on a machine that reaches Debian's package registry, the .deb files that the lent GPU
# machine (Ubuntu 24.04, no network) needs to configure qgate, into third_party/debs/ (ignored by
# git; the device call carries it). scripts/device_run.sh unpacks them there. See docs/GPU.md.
#
#   required/   always unpacked: simdjson and prometheus-cpp, which the GPU image does not have.
#   fallback/<find_package name>/
#               unpacked only when the image's own package is not found by CMake (the image is said
#               to carry GoogleTest, Google Benchmark, yaml-cpp, spdlog/fmt, CLI11 and Boost, which
#               nobody has checked yet; these cost ~12 MB of the 64 MiB a call may carry).
#
# The packages are Debian 12 (bookworm) builds. Their runtime needs are old enough for Ubuntu 24.04
# (glibc >= 2.14..2.32 against the image's 2.39, libstdc++ >= 5.2..11 against GCC 13's), and their
# CMake package files locate themselves relative to where they are unpacked. SONAMEs, for the
# record: libsimdjson.so.14, libprometheus-cpp-{core,pull,push}.so.1.0, libspdlog.so.1.10,
# libfmt.so.9, libyaml-cpp.so.0.7, libbenchmark.so.1; GoogleTest is static.
#
# prometheus-cpp's package file also asks for civetweb, zlib and curl (for its pull/push
# libraries, which qgate does not link: the gateway uses prometheus-cpp::core); device_run.sh
# switches those two components off in its unpacked copy rather than carrying three more stacks.
# The pull/push shared objects are still fetched because that package file checks they exist.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="$ROOT/third_party/debs"

REQUIRED=(
  libsimdjson-dev libsimdjson14
  prometheus-cpp-dev libprometheus-cpp-core1.0 libprometheus-cpp-pull1.0 libprometheus-cpp-push1.0
)
# "<find_package name>:<packages>" (the folder name is what device_run.sh asks CMake for).
FALLBACK=(
  "GTest:libgtest-dev libgmock-dev"
  "benchmark:libbenchmark-dev libbenchmark1debian"
  "yaml-cpp:libyaml-cpp-dev libyaml-cpp0.7"
  "spdlog:libspdlog-dev libspdlog1.10 libfmt-dev libfmt9"
  "CLI11:libcli11-dev"
  "Boost:libboost1.81-dev"
)

log() { printf '[device_deps] %s\n' "$*" >&2; }

# apt-get download writes into the current directory; it needs no root, only the package lists.
# As root apt would hand the download to its unprivileged _apt user, who cannot write here.
APT_OPTS=(-q)
[ "$(id -u)" -eq 0 ] && APT_OPTS+=(-o APT::Sandbox::User=root)
fetch() {
  local dir="$1"
  shift
  mkdir -p "$dir"
  (cd "$dir" && apt-get download "${APT_OPTS[@]}" "$@" >/dev/null)
  # Epochs come URL-encoded ("1%3a1.10.0"): keep names to letters, digits and . _ - so that the
  # carried tree has no odd characters.
  local f
  for f in "$dir"/*.deb; do
    local clean
    clean="$(dirname "$f")/$(basename "$f" | tr -c 'A-Za-z0-9._\n-' '_')"
    [ "$f" = "$clean" ] || mv "$f" "$clean"
  done
}

if ! apt-cache show libsimdjson14 >/dev/null 2>&1; then
  log "package lists have no libsimdjson14: run 'apt-get update' first"
  exit 1
fi

rm -rf "$DEST"
fetch "$DEST/required" "${REQUIRED[@]}"
for entry in "${FALLBACK[@]}"; do
  name="${entry%%:*}"
  read -r -a pkgs <<<"${entry#*:}"
  fetch "$DEST/fallback/$name" "${pkgs[@]}"
done

# What was fetched, with versions, for the record (docs/GPU.md points here).
{
  echo "# fetched $(date -u +%Y-%m-%dT%H:%M:%SZ) from $(. /etc/os-release && echo "$PRETTY_NAME")"
  (cd "$DEST" && find . -name '*.deb' | sort | while read -r f; do
     printf '%s\t%s\n' "$f" "$(dpkg-deb -f "$f" Version)"
   done)
} >"$DEST/MANIFEST"
log "$(find "$DEST" -name '*.deb' | wc -l) packages, $(du -sh "$DEST" | cut -f1) in $DEST"
cat "$DEST/MANIFEST" >&2
