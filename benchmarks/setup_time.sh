#!/usr/bin/env bash
# A fresh clone's set-up time: the install part of `make test` (venv, requirements-torch/app/dev,
# then requirements-ray; no tests run), with pip and with uv, each on a cold cache and then on
# the warm cache that run left. Prints the rows of benchmarks/setup_time.md's table.
#
#   benchmarks/setup_time.sh [RUNS...]        RUNS: pip-cold pip-warm uv-cold uv-warm (default all;
#                                             a warm run reuses the cache of the cold run before it)
# Environment: SRC (the repository to clone; default this one), WORK (default /tmp/da3-setup-time;
#   needs about 20 GB free), COPY (files to copy from SRC into each clone: uncommitted changes,
#   default: every file `git status` shows as changed or new), CHECK=0 skips the check after
#   each run (a unit test file run in the new venv, not timed).
# Each run gets its own caches under WORK/cache (PIP_CACHE_DIR, and UV_CACHE_DIR for uv; the
# pip cache matters to uv too: pip downloads uv itself). The clones are deleted after each run,
# and the caches at the end; WORK/results keeps each run's log and `pip freeze`.
set -euo pipefail

SRC=$(cd "${SRC:-$(dirname "$0")/..}" && pwd)
WORK=${WORK:-/tmp/da3-setup-time}
CHECK=${CHECK:-1}
RUNS=("$@")
[ ${#RUNS[@]} -gt 0 ] || RUNS=(pip-cold pip-warm uv-cold uv-warm)
if [ -z "${COPY+set}" ]; then
  COPY=$(git -C "$SRC" status --porcelain --untracked-files=all | awk '$1 != "D" { print $NF }')
fi
mkdir -p "$WORK/results" "$WORK/cache"

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(free -g | awk '/Mem:/ { print $2 }') GB; $(df -h "$WORK" | awk 'NR == 2 { print $4 }') free under $WORK"
echo
echo "| run | installer | cache | wall (s) | load avg (1 min) before → after | venv size | re-run, nothing to install (s) |"
echo "|---|---|---|---|---|---|---|"

for run in "${RUNS[@]}"; do
  installer=${run%-*} cache=${run#*-}
  case "$run" in pip-cold | pip-warm | uv-cold | uv-warm) ;; *) echo "unknown run: $run" >&2; exit 2 ;; esac
  pip_cache="$WORK/cache/$installer-pip" uv_cache="$WORK/cache/$installer-uv"
  if [ "$cache" = cold ]; then rm -rf "$pip_cache" "$uv_cache"; fi
  mkdir -p "$pip_cache" "$uv_cache"

  clone="$WORK/clone-$run"
  rm -rf "$clone"
  git clone --quiet "$SRC" "$clone"
  for file in $COPY; do
    mkdir -p "$clone/$(dirname "$file")"
    cp -p "$SRC/$file" "$clone/$file"
  done

  load_before=$(cut -d' ' -f1 /proc/loadavg)
  start=$(date +%s.%N)
  (cd "$clone" && PIP_CACHE_DIR="$pip_cache" UV_CACHE_DIR="$uv_cache" \
    make .venv/.installed .venv/.installed-ray INSTALLER="$installer") >"$WORK/results/$run.log" 2>&1 \
    || { echo "$run failed: see $WORK/results/$run.log" >&2; tail -n 20 "$WORK/results/$run.log" >&2; exit 1; }
  wall=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { print e - s }')
  load_after=$(cut -d' ' -f1 /proc/loadavg)

  # A requirement file touched but unchanged: the installer runs again and finds nothing to do.
  touch "$clone/requirements-app.txt"
  start=$(date +%s.%N)
  (cd "$clone" && PIP_CACHE_DIR="$pip_cache" UV_CACHE_DIR="$uv_cache" make .venv/.installed INSTALLER="$installer") \
    >>"$WORK/results/$run.log" 2>&1
  rerun=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { print e - s }')

  "$clone/.venv/bin/python" -m pip freeze --all 2>/dev/null | LC_ALL=C sort -f >"$WORK/results/$run.freeze"
  size=$(du -sh "$clone/.venv" | cut -f1)
  printf '| %s | %s | %s | %.1f | %s → %s | %s | %.1f |\n' "$run" "$installer" "$cache" "$wall" "$load_before" "$load_after" "$size" "$rerun"
  if [ "$CHECK" = 1 ]; then
    (cd "$clone" && .venv/bin/python -m pytest -q tests/unit/test_contract_config.py tests/unit/test_requirements.py) \
      >"$WORK/results/$run.check" 2>&1 || { echo "  check failed: $WORK/results/$run.check" >&2; }
  fi
  rm -rf "$clone"
done
rm -rf "$WORK/cache"
