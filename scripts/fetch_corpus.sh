#!/usr/bin/env bash
# Builds the English text corpus that qgate calibrates quantization on (calib.txt) and evaluates
# variants on (eval.txt) from the HTML of pinned Debian documentation packages, into the ignored
# models/corpus/ cache. See docs/CORPUS.md for the sources, licences, split and checksums.
#
# eval.txt is never used to tune quantization settings: calibration and any setting search read
# calib.txt only.
#
# Idempotent: when both files are present with the pinned checksums nothing is fetched.
# QGATE_CORPUS_ACCEPT=1 skips the checksum pin (for a maintainer who changed the sources or the
# converter on purpose); the new sums are then printed for the pins below and docs/CORPUS.md.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

CALIB_SHA256=dce702b8ddf109297db75e32e712616844f9c1ad9c72dce939268e63cb34eff4
EVAL_SHA256=badaa90b803ee10da662dd371b606d32907b970ed8e427880e8908eb1fb131b6

CORPUS_DIR="$QGATE_MODEL_DIR/corpus"
CONVERTER="$QGATE_ROOT/scripts/corpus_to_text.py"
EXPECTED_SUMS="$CALIB_SHA256  calib.txt
$EVAL_SHA256  eval.txt"

pins_match() {  # $1: folder holding calib.txt and eval.txt
  (cd "$1" && printf '%s\n' "$EXPECTED_SUMS" | sha256sum -c --status --strict 2>/dev/null)
}

print_sizes() {
  local f
  for f in calib eval; do
    log "$(printf '%-5s %9d bytes %8d words %6d paragraphs  %s' "$f" \
      "$(wc -c <"$CORPUS_DIR/$f.txt")" "$(wc -w <"$CORPUS_DIR/$f.txt")" \
      "$(awk 'BEGIN { RS = "" } END { print NR }' "$CORPUS_DIR/$f.txt")" "$CORPUS_DIR/$f.txt")"
  done
}

if [ "${QGATE_CORPUS_ACCEPT:-0}" != 1 ] && [ -f "$CORPUS_DIR/calib.txt" ] \
    && [ -f "$CORPUS_DIR/eval.txt" ] && pins_match "$CORPUS_DIR"; then
  log "corpus cached: $CORPUS_DIR"
  print_sizes
  exit 0
fi

mapfile -t PACKAGES < <(python3 "$CONVERTER" --packages)
if [ "${#PACKAGES[@]}" -eq 0 ]; then
  echo "fetch_corpus: $CONVERTER --packages named no package" >&2
  exit 1
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
# apt fetches as the unprivileged _apt user, which must be able to write here.
chmod 755 "$tmp"
mkdir "$tmp/debs" "$tmp/root" "$tmp/out"
chmod 777 "$tmp/debs"

# `apt-cache show PKG=VERSION` exits 0 for an unknown version, so ask madison for the list.
known() {  # $1: PACKAGE=VERSION
  apt-cache madison "${1%%=*}" 2>/dev/null |
    awk -F'|' -v want="${1#*=}" '{ gsub(/ /, "", $2) } $2 == want { found = 1 } END { exit !found }'
}
# The package lists may be absent or stale on a fresh machine.
all_known() {
  local spec
  for spec in "${PACKAGES[@]}"; do
    known "$spec" || return 1
  done
}
if ! all_known; then
  log "package lists lack a pinned version; running apt-get update"
  as_root apt-get update -qq
fi
for spec in "${PACKAGES[@]}"; do
  if ! known "$spec"; then
    {
      echo "fetch_corpus: pinned package $spec is not in the archive (the available versions:"
      apt-cache policy "${spec%%=*}" 2>/dev/null | sed 's/^/  /'
      echo "). Pin an available version in SOURCES of scripts/corpus_to_text.py, rebuild with"
      echo "QGATE_CORPUS_ACCEPT=1, and update the pins here and docs/CORPUS.md."
    } >&2
    exit 1
  fi
done

log "downloading ${#PACKAGES[*]} Debian documentation packages"
(cd "$tmp/debs" && apt-get download -q "${PACKAGES[@]}" >/dev/null)
for deb in "$tmp"/debs/*.deb; do
  dpkg -x "$deb" "$tmp/root"
done

log "converting HTML to text"
python3 "$CONVERTER" --root "$tmp/root" --out "$tmp/out"
if ! pins_match "$tmp/out"; then
  if [ "${QGATE_CORPUS_ACCEPT:-0}" = 1 ]; then
    log "QGATE_CORPUS_ACCEPT=1: new checksums (pin them here and in docs/CORPUS.md):"
    (cd "$tmp/out" && sha256sum calib.txt eval.txt) >&2
  else
    {
      echo "fetch_corpus: the converted corpus does not match the pinned SHA-256s:"
      (cd "$tmp/out" && sha256sum calib.txt eval.txt) | sed 's/^/  got      /'
      printf '%s\n' "$EXPECTED_SUMS" | sed 's/^/  expected /'
      echo "(a different converter or Python version?). Nothing was installed."
    } >&2
    exit 1
  fi
fi

mkdir -p "$CORPUS_DIR"
for f in calib.txt eval.txt MANIFEST.tsv; do
  mv "$tmp/out/$f" "$CORPUS_DIR/$f.part" && mv "$CORPUS_DIR/$f.part" "$CORPUS_DIR/$f"
done
printf '%s\n' "${PACKAGES[@]}" >"$CORPUS_DIR/VERSIONS"
(cd "$CORPUS_DIR" && sha256sum calib.txt eval.txt >SHA256SUMS)
log "corpus ready: $CORPUS_DIR (sources: ${PACKAGES[*]})"
print_sizes
