#!/usr/bin/env bash
# One session on a lent CUDA machine (run from the repo root, with the wheels of DA3 and its
# pure-Python dependencies in .whl/): install them beside the machine's torch, then
#   1. scripts/gpu_check.py: numpy back from CUDA, DA3-GIANT's Gaussians, the novel-view video;
#   2. benchmarks.fit_guard --grid cuda: the run guard's CUDA memory and time model;
#   3. the runner-vs-in-worker table (issue "Serving at scale").
# Each phase has its own time limit, so one overrun does not cost the others. Everything
# lands in $OUT (default /tmp/gpu-out).
set -u
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
# Into the environment that has the machine's torch (there: /opt/torch/.venv, first on PATH).
PY=$(command -v python3)
{ $PY -m pip install -q --no-deps --no-index .whl/*.whl .whl/*.tar.gz || uv pip install --python "$PY" --no-deps --no-index .whl/*.whl .whl/*.tar.gz; } > "$OUT/install.log" 2>&1 || echo "install failed: see install.log"
mkdir -p /tmp/da3-stubs
$PY -c "import sys; sys.path.insert(0, '.'); import scripts.gpu_check as g; open('/tmp/da3-stubs/sitecustomize.py', 'w').write(g.STUB_SITE)"
export PYTHONPATH=/tmp/da3-stubs:$PWD MAX_JOBS=16 TORCH_CUDA_ARCH_LIST=9.0 DA3_FIT_DEMO_ROOT=/tmp/da3-demo
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
t0=$(date +%s)
timeout "${CHECK_S:-240}" $PY scripts/gpu_check.py --out "$OUT" --skip-overhead --demo /tmp/da3-demo > "$OUT/gpu_check.log" 2>&1
echo "gpu_check rc=$? after $(( $(date +%s) - t0 )) s"; grep -E "^(PASS|FAIL)" "$OUT/gpu_check.log"
t1=$(date +%s)
timeout "${FIT_S:-200}" $PY -m benchmarks.fit_guard --grid "${GRID:-cuda}" --out "$OUT/guard_points_cuda.json" --merge "$OUT/guard_model_cuda.json" > "$OUT/fit.log" 2>&1
echo "fit_guard rc=$? after $(( $(date +%s) - t1 )) s"; grep -E "^da3|failed" "$OUT/fit.log"
t2=$(date +%s)
mkdir -p "$OUT/overhead"
timeout "${OVERHEAD_S:-100}" $PY scripts/gpu_check.py --out "$OUT/overhead" --skip-giant --overhead-presets "${OVERHEAD_PRESETS:-da3-small,da3-large}" --rounds 3 --demo /tmp/da3-demo > "$OUT/overhead.log" 2>&1
echo "overhead rc=$? after $(( $(date +%s) - t2 )) s"; grep "^overhead" "$OUT/overhead.log"
