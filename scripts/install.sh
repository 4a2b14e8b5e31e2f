#!/usr/bin/env bash
# Installs requirement files into the project's venv (made when missing): with uv when it
# can be had, else with pip. Called by the Makefile:  scripts/install.sh -r FILE [-r FILE ...]
#
# Environment: VENV (.venv), PYTHON (python3: makes the venv), INSTALLER: auto (uv, bootstrapped
# from PyPI into $VENV/.uv, pinned; pip if that fails), uv (uv or fail), or pip (pip only).
# uv does not read pip's configuration: where pip is configured with its own indexes, find-links,
# constraints or certificate (as on this project's machines, whose local indexes hold torch),
# they are passed on to uv, so both installers see the same wheels.
set -euo pipefail

VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
INSTALLER=${INSTALLER:-auto}
UV_VERSION=0.13.9
PY="$VENV/bin/python"
UV="$VENV/.uv/bin/uv"

pip_install() {
  "$PY" -m pip install --quiet --upgrade pip
  "$PY" -m pip install --quiet "$@"
}

case "$INSTALLER" in
  auto | uv | pip) ;;
  *) echo "INSTALLER must be auto, uv or pip (got '$INSTALLER')" >&2; exit 2 ;;
esac
test -x "$PY" || "$PYTHON" -m venv "$VENV"
[ "$INSTALLER" != pip ] || { pip_install "$@"; exit 0; }

# With INSTALLER=auto, any uv failure (getting it or installing with it) hands over to pip.
fallback() {  # WHY
  if [ "$INSTALLER" = uv ]; then echo "install: $1 (INSTALLER=uv: no fallback)" >&2; exit 1; fi
  echo "install: $1; installing with pip"
  pip_install "${requirements[@]}"
  exit 0
}
requirements=("$@")

# uv, pinned, in a folder of its own inside the venv (make clean removes it). Few retries: when
# PyPI cannot be reached, pip takes over quickly.
if ! { test -x "$UV" && "$UV" --version 2>/dev/null | grep -qF " $UV_VERSION"; }; then
  if ! log=$("$PY" -m pip install --quiet --retries 1 --timeout 20 --upgrade --target "$VENV/.uv" \
      "uv==$UV_VERSION" 2>&1); then
    fallback "could not get uv $UV_VERSION ($(tail -n1 <<<"$log"))"
  fi
fi

# pip's effective setting NAME (environment first, as pip reads it), whitespace-separated.
pip_conf=$("$PY" -m pip config list 2>/dev/null || true)
pip_setting() {
  local key
  for key in ":env:.$1" "install.$1" "global.$1"; do
    awk -v k="$key=" 'index($0, k) == 1 { v = substr($0, length(k) + 1); gsub(/^\x27|\x27$/, "", v);
      gsub(/\\n/, " ", v); print v; found = 1; exit } END { exit !found }' <<<"$pip_conf" && return
  done
  return 0
}

uv_args=()
for url in $(pip_setting index-url); do uv_args+=(--index-url "$url"); done
for url in $(pip_setting extra-index-url); do uv_args+=(--extra-index-url "$url"); done
for place in $(pip_setting find-links); do uv_args+=(--find-links "$place"); done
for file in $(pip_setting constraint); do uv_args+=(--constraint "$file"); done
# With its default (first-index) strategy uv takes a package found on an extra index only from
# there; pip picks the best version over all indexes. Local indexes hold only some releases.
if [ -n "$(pip_setting index-url)$(pip_setting extra-index-url)" ]; then
  uv_args+=(--index-strategy unsafe-best-match)
fi
cert=$(pip_setting cert)
if [ -n "$cert" ] && [ -z "${SSL_CERT_FILE:-}" ]; then export SSL_CERT_FILE="$cert"; fi

echo "install: uv $UV_VERSION${uv_args[*]:+ (pip settings passed on: ${uv_args[*]})}"
"$UV" pip install --quiet --compile-bytecode --python "$PY" "${uv_args[@]}" "$@" || fallback "uv failed (its error is above)"
