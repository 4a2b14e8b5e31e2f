"""The CPU forward against the machine: matmul peak, FLOPs, our fraction of the peak, what
each step of `da3_core.worker.cpu_fast` gave, speed against stock DA3, memory per frame.

Run: ``.venv/bin/python -m benchmarks.bench_cpu`` (or within ``make bench``). Workload: the
one of `benchmarks.bench_runner` (4 frames of 640x480 at process_res 504, untrained DA3-SMALL
weights built through the real ``from_pretrained`` path: speed and memory do not depend on
the weights). Everything timed is timed side by side in one worker, variants alternating
call by call, medians: the machine may be shared.

Keys (goals in `GOALS`, chosen by the precision the worker picked):

* ``cpu_matmul_peak_gflops_{fp32,bf16}``: dense square matmul (1024-3072), best size's median.
* ``cpu_forward_gflop``: stock DA3's forward FLOPs (``torch.utils.flop_counter``, attention
  counted on its math path); ``cpu_forward_gflop_ours``: those our forward performs (the
  lean head skips a branch DA3 computes and throws away).
* ``cpu_forward_s``: our forward at the chosen precision; ``cpu_forward_peak_fraction``:
  our FLOPs / that time / the matmul peak at that precision (work actually done);
  ``cpu_forward_effective_peak_fraction``: the same with stock's FLOPs (the work DA3 would
  have done in that time).
* ``cpu_step_<step>_speedup``: the forward without that step / with it (all other steps on),
  ``cpu_forward_depth_err`` / ``cpu_forward_fp32_depth_err``: largest relative depth or
  confidence error of our forward (chosen precision / float32) against stock float32 (0:
  bit-identical); each step's parity is tested in tests/integration/test_cpu_fast.py.
* ``cpu_attention_flash_vs_math_{local,global}_speedup``: SDPA's math path / its flash
  kernel at DA3-SMALL's two attention shapes (the attention step keeps flash).
* ``cpu_inductor_freezing_speedup``: our forward eager / through ``torch.compile`` (inductor
  with ``freezing``) in a fresh worker, alternating; ``cpu_inductor_compile_s``: the compile
  (first call); ``cpu_inductor_depth_err``: compiled against eager. Measured, not shipped
  (docs/CPU.md says why).
* ``cpu_speedup_vs_stock``: stock ``DepthAnything3.inference()`` (its own CPU autocast, in a
  plain worker) / our reconstruction, alternating call by call (`bench_runner.stock_vs_ours`).
* ``cpu_worker_peak_mb_4x504``: the worker's resident peak for that run in a fresh worker
  (after one warm-up call), as `benchmarks.fit_guard` measures it.
* ``cloud_frames_at_504``: the most 640x480 frames the run guard accepts at 504 with
  ``DA3_MEMORY_LIMIT_MB=2600`` and a server of `PARENT_MB`; ``cloud_run_peak_mb``: the
  worker's peak when that many run in a fresh worker killed beyond what the guard left it
  (``cloud_run_ok`` 1 when it finished); ``cloud_run8_peak_mb`` / ``cloud_run8_ok``: the same
  for 8 frames, whatever the guard accepts.
"""

from __future__ import annotations

import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.bench_runner import speed_figures, stock_vs_ours, workload
from da3_core.presets import PRESETS_BY_NAME
from da3_core.runner import Runner
from da3_core.runs import guard, tasks

FORWARD_GOAL = {"bf16": 0.5, "fp32": 0.75}
GOALS: dict[str, float] = {
    "cpu_speedup_vs_stock": 6.0,
    "cpu_worker_peak_mb_4x504": 0.7 * 1960,
    "cloud_frames_at_504": 8.0,
}
CLOUD_LIMIT_MB = 2600.0
# A Streamlit server's own resident memory while it serves one session (the 240-320 MB seen
# in the browser tests: tests/unit/test_guard_advice.py); the guard counts it as used.
PARENT_MB = 300.0


def cloud_frames(limit_mb: float = CLOUD_LIMIT_MB, parent_mb: float = PARENT_MB, res: int = 504) -> tuple[int, Any]:
    """The most 640x480 DA3-SMALL frames the guard accepts (memory; time unbounded), and its estimate."""
    available = guard.Available(limit_mb - parent_mb, f"DA3_MEMORY_LIMIT_MB={limit_mb:.0f}")
    best, est = 0, None
    for n in range(1, 129):
        e = guard.estimate(
            PRESETS_BY_NAME["da3-small"], [(640, 480)] * n, res, "cpu", available, 1e9, model_loaded=True
        )
        if not e.fits_memory:
            break
        best, est = n, e
    return best, est


def figures(fw: dict[str, Any]) -> tuple[dict[str, float], list[str]]:
    """Keys and table rows from `benchmarks.cpu_tasks.forward_figures`' answer."""
    med = {k: statistics.median(v) for k, v in fw["times"].items()}
    precision = fw["precision"]
    peak = fw[f"peak_{precision}"]["peak"]
    out: dict[str, float] = {
        "cpu_matmul_peak_gflops_fp32": fw["peak_fp32"]["peak"],
        "cpu_matmul_peak_gflops_bf16": fw["peak_bf16"]["peak"],
        "cpu_forward_gflop": fw["flops_stock"] / 1e9,
        "cpu_forward_gflop_ours": fw["flops_ours"] / 1e9,
        "cpu_forward_s": med["ours"],
        "cpu_forward_peak_fraction": fw["flops_ours"] / 1e9 / med["ours"] / peak,
        "cpu_forward_effective_peak_fraction": fw["flops_stock"] / 1e9 / med["ours"] / peak,
        "cpu_forward_stock_fp32_s": med["stock_fp32"],
        "cpu_forward_speedup_vs_stock_fp32": med["stock_fp32"] / med["ours"],
        "cpu_forward_fp32_steps_speedup": med["stock_fp32"] / med["ours_fp32"],
        "cpu_forward_fp32_depth_err": fw["errors"]["ours_fp32"],
        "cpu_forward_depth_err": fw["errors"]["ours"],
        "cpu_precision_bf16": 1.0 if precision == "bf16" else 0.0,
    }
    if "today_bf16" in med:
        out["cpu_forward_steps_speedup"] = med["today_bf16"] / med["ours"]
    rows = [f"precision {precision} ({fw['reason']}), {fw['threads']} threads, CPU flags: {' '.join(fw['flags'])}"]
    rows.append(f"{'variant':<28}{'median s':>10}{'vs ours':>9}{'err vs stock fp32':>19}")
    for name, t in med.items():
        rows.append(f"{name:<28}{t:>10.3f}{t / med['ours']:>9.2f}{fw['errors'][name]:>19.2g}")
        if name.startswith("without_"):
            step = name.removeprefix("without_")
            out[f"cpu_step_{step}_speedup"] = t / med["ours"]
    att = fw["attention"]
    for label in ("local", "global"):
        out[f"cpu_attention_flash_vs_math_{label}_speedup"] = att[f"{label}_math_s"] / att[f"{label}_flash_s"]
    GOALS["cpu_forward_peak_fraction"] = FORWARD_GOAL[precision]
    return out, rows


def run(workspace: Path | None = None, rounds: int = 4) -> dict[str, float]:
    own = workspace is None
    workspace = workspace or Path(tempfile.mkdtemp(prefix="da3-bench-cpu-"))
    demo_root = str(workspace / "demo-weights")
    request = workload()
    runner = Runner(name="da3-cpu-bench")
    out: dict[str, float] = {}
    rows: list[str] = []
    try:
        tasks.build_demo_weights.call("da3-small", demo_root, runner=runner)
        fw = runner.call("benchmarks.cpu_tasks:forward_figures", request, demo_root, rounds, duration=3600)
        keys, rows = figures(fw)
        out.update(keys)
        speed = speed_figures(stock_vs_ours(runner, request, demo_root, rounds=3, both_precisions=False))
        out.update({k: v for k, v in speed.items() if not k.startswith("cpu_precision")})
        runner.restart()  # dynamo's state stays out of the other figures' worker
        ind = runner.call("benchmarks.cpu_tasks:inductor_figures", request, demo_root, duration=1800)
        out["cpu_inductor_freezing_speedup"] = ind["eager_s"] / ind["compiled_s"]
        out["cpu_inductor_compile_s"] = ind["compile_s"]
        out["cpu_inductor_depth_err"] = ind["depth_err"]
        rows.append(
            f"inductor (freezing): eager {ind['eager_s']:.3f} s, compiled {ind['compiled_s']:.3f} s "
            f"after a {ind['compile_s']:.0f} s compile; depth error {ind['depth_err']:.2g}"
        )
        # Memory: fresh workers, as the guard's fit measures.
        runner.restart()
        runner.call("benchmarks.worker_tasks:measure_run", request, demo_root, duration=1800)
        out["cpu_worker_peak_mb_4x504"] = runner.call(
            "benchmarks.worker_tasks:measure_run", request, demo_root, duration=1800
        )["rss_peak_mb"]
        n, est = cloud_frames()
        out["cloud_frames_at_504"] = float(n)
        if est is not None:
            cap = est.available.mb - est.parent_mb
            out["cloud_worker_cap_mb"] = cap
            out["cloud_guard_worker_mb"] = est.worker_mb
            runner.restart()
            try:
                m = runner.call("benchmarks.cpu_tasks:capped_run", workload(n), demo_root, cap, duration=3600)
                out["cloud_run_peak_mb"], out["cloud_run_ok"] = m["rss_peak_mb"], 1.0
            except Exception as exc:  # noqa: BLE001 - the capped worker was killed: the row says so
                print(f"  {n} frames under {cap:.0f} MB failed: {type(exc).__name__}: {exc}", file=sys.stderr)
                out["cloud_run_ok"] = 0.0
            # The goal's 8 frames under the same cap, whatever the guard says (what the guard's
            # one-line model leaves on the table).
            runner.restart()
            try:
                m = runner.call("benchmarks.cpu_tasks:capped_run", workload(8), demo_root, cap, duration=3600)
                out["cloud_run8_peak_mb"], out["cloud_run8_ok"] = m["rss_peak_mb"], 1.0
            except Exception as exc:  # noqa: BLE001 - the capped worker was killed: the row says so
                print(f"  8 frames under {cap:.0f} MB failed: {type(exc).__name__}: {exc}", file=sys.stderr)
                out["cloud_run8_ok"] = 0.0
    finally:
        runner.close()
        if own:
            shutil.rmtree(workspace, ignore_errors=True)
    for row in rows:
        print("  " + row, file=sys.stderr)
    return out


def main() -> int:
    result = run()
    width = max(len(k) for k in result)
    from benchmarks.run import verdict

    for key in sorted(result):
        goal = GOALS.get(key)
        print(f"{key:<{width}}  {result[key]:>12.4g}  {verdict(key, result[key], goal)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
