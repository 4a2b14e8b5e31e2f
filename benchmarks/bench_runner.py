"""Runner and CPU-path figures: overhead of isolation, speed against stock DA3, start-up, memory.

Run: ``.venv/bin/python -m benchmarks.bench_runner``. Workload: 4 frames of 640x480 at
process_res 504 on untrained DA3-SMALL weights (speed does not depend on the weights).
Goal: runner_overhead_ratio <= 1.05. ``make bench`` takes cpu_speedup_vs_stock from
`benchmarks.bench_cpu`, which calls `stock_vs_ours` here; ``--speed-only`` runs it alone. "Stock" is
``DepthAnything3.inference()`` as shipped, in a plain process; "ours" is our CPU path in
the worker (the precision ``DA3_CPU_PRECISION=auto`` picks: bfloat16 autocast where the CPU
has AVX512-BF16 or AMX-BF16, float32 otherwise; malloc tuned); they alternate call by call,
4 rounds. ``cpu_precision_bf16`` is 1 when auto picked bfloat16, 0 for float32. Where the
CPU has hardware bfloat16 the other precision is timed in the same alternation too
(``our_cpu_inference_{fp32,bf16}_s``, ``cpu_speedup_vs_stock_{fp32,bf16}``); without it,
bfloat16 is emulated and only timed with ``--both-precisions``.

The speed comparison alone, smaller: ``.venv/bin/python -m benchmarks.bench_runner --speed-only
--frames 2 --process-res 280 --rounds 3`` (prints JSON; writes nothing).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import psutil

from da3_core.contract import ModelSpec, ReconstructRequest
from da3_core.runner import Runner
from da3_core.runs import tasks

# cpu_speedup_vs_stock is measured (with stock_vs_ours, below) by benchmarks.bench_cpu.
GOALS = {"runner_overhead_ratio": 1.05}
ROOT = Path(__file__).resolve().parents[1]


def workload(n: int = 4, process_res: int = 504) -> ReconstructRequest:
    """``n`` noisy 640x480 frames on untrained DA3-SMALL at ``process_res``."""
    rng = np.random.default_rng(0)
    frames = []
    for i in range(n):
        yy, xx = np.mgrid[0:480, 0:640]
        base = np.stack([(xx + 30 * i) % 256, yy % 256, (xx ^ yy) % 256], -1).astype(np.float32)
        frames.append(np.clip(base + rng.normal(0, 10, base.shape), 0, 255).astype(np.uint8))
    return ReconstructRequest(
        tuple(frames), tuple(f"{i}.png" for i in range(n)), ModelSpec("demo", "da3-small"), process_res=process_res
    )


def stock_vs_ours(
    runner: Runner, request: ReconstructRequest, demo_root: str, rounds: int, both_precisions: bool | None = None
) -> dict[str, list[float]]:
    """Stock DA3 (in a second, plain worker: its own autocast, default threads and allocator)
    against our path, alternating call by call so the machine's drift hits both alike.

    Args:
        runner: Runs our path (its worker keeps our model).
        request: The workload.
        demo_root: Folder of the demo weights (built already).
        rounds: Timed calls per side, after one warm-up call each.
        both_precisions: Also time the precision auto did not pick. None: only where the CPU
            has hardware bfloat16 (emulated bfloat16 is slow and says nothing).

    Returns:
        Seconds per call: ``stock``, ``ours`` (auto's precision), ``ours_fp32`` and
        ``ours_bf16`` (whichever were timed), and ``precision`` (``["fp32"]`` or ``["bf16"]``;
        a list so the dict stays uniform).
    """
    stock_runner = Runner(name="da3-stock")
    folder = str(Path(demo_root) / request.model.ref)
    ours_task = "benchmarks.worker_tasks:time_ours_once"
    out: dict[str, list] = {"stock": [], "ours": []}
    try:
        stock_runner.call("benchmarks.worker_tasks:time_stock_once", folder, request, duration=1800)  # load + warm
        _, precision, reason = runner.call(ours_task, request, demo_root, "auto", duration=1800)  # warm
        print(f"  our CPU precision: {precision} ({reason})", file=sys.stderr, flush=True)
        out["precision"] = [precision]
        other = "bf16" if precision == "fp32" else "fp32"
        if both_precisions is None:
            both_precisions = precision == "bf16"  # auto picked bf16: the CPU has it in hardware
        if both_precisions:
            runner.call(ours_task, request, demo_root, other, duration=1800)  # warm
        for _ in range(rounds):
            out["stock"].append(
                stock_runner.call("benchmarks.worker_tasks:time_stock_once", folder, request, duration=1800)
            )
            out["ours"].append(runner.call(ours_task, request, demo_root, precision, duration=1800)[0])
            if both_precisions:
                out.setdefault(f"ours_{other}", []).append(
                    runner.call(ours_task, request, demo_root, other, duration=1800)[0]
                )
        out[f"ours_{precision}"] = list(out["ours"])
    finally:
        stock_runner.close()
    return out


def speed_figures(speed: dict[str, list]) -> dict[str, float]:
    """The speed metrics of `stock_vs_ours`' timings (medians; ``_best``: fastest calls)."""
    stock = statistics.median(speed["stock"])
    out = {
        "stock_inference_s": stock,
        "our_cpu_inference_s": statistics.median(speed["ours"]),
        "cpu_speedup_vs_stock": stock / statistics.median(speed["ours"]),
        "cpu_speedup_vs_stock_best": min(speed["stock"]) / min(speed["ours"]),
        "cpu_precision_bf16": 1.0 if speed["precision"] == ["bf16"] else 0.0,
    }
    for precision in ("fp32", "bf16"):
        times = speed.get(f"ours_{precision}")
        if times:
            out[f"our_cpu_inference_{precision}_s"] = statistics.median(times)
            out[f"cpu_speedup_vs_stock_{precision}"] = stock / statistics.median(times)
    return out


def run_speed_only(frames: int, process_res: int, rounds: int, both_precisions: bool | None) -> dict[str, float]:
    """Only the stock-vs-ours comparison, on a smaller workload if asked."""
    workspace = Path(tempfile.mkdtemp(prefix="da3-bench-"))
    demo_root = str(workspace / "demo-weights")
    request = workload(frames, process_res)
    runner = Runner()
    try:
        tasks.build_demo_weights.call("da3-small", demo_root, runner=runner)
        speed = stock_vs_ours(runner, request, demo_root, rounds=rounds, both_precisions=both_precisions)
    finally:
        runner.close()
        shutil.rmtree(workspace, ignore_errors=True)  # the demo weights (137 MB); nothing else is kept
    result = speed_figures(speed)
    result.update({"frames": float(frames), "process_res": float(process_res), "rounds": float(rounds)})
    return result


def parent_rss_mb(demo_root: str) -> float:
    """RSS of a Streamlit process that rendered the home page and received one reconstruction."""
    from tests.conftest import run_python

    code = textwrap.dedent(
        f"""
        import json, numpy as np, psutil
        from streamlit.testing.v1 import AppTest
        at = AppTest.from_file("streamlit_app.py", default_timeout=300)
        at.run()
        from da3_core.runs import tasks
        from da3_core.contract import ModelSpec, ReconstructRequest
        from da3_core.app.holder import get_runner
        imgs = tuple(np.full((480, 640, 3), 60 * i, np.uint8) for i in range(4))
        tasks.reconstruct.call(ReconstructRequest(imgs, tuple("abcd"), ModelSpec("demo", "da3-small"), process_res=504),
                               {demo_root!r}, runner=get_runner())
        print(json.dumps(psutil.Process().memory_info().rss / 2**20))
        """
    )
    return float(run_python(code, {"DA3_WORKSPACE": str(Path(demo_root).parent)}).strip().splitlines()[-1])


def run(workspace: Path | None = None, repeats: int = 5) -> dict[str, float]:
    workspace = workspace or Path(tempfile.mkdtemp(prefix="da3-bench-"))
    demo_root = str(workspace / "demo-weights")
    request = workload()
    setup = Runner()
    tasks.build_demo_weights.call("da3-small", demo_root, runner=setup)
    setup.close()

    runner = Runner()
    try:
        t = time.perf_counter()
        tasks.reconstruct.call(request, demo_root, runner=runner)
        cold = time.perf_counter() - t

        walls, inproc = [], []
        for _ in range(repeats):
            t = time.perf_counter()
            tasks.reconstruct.call(request, demo_root, runner=runner)
            walls.append(time.perf_counter() - t)
            inproc.extend(runner.call("benchmarks.worker_tasks:time_inprocess", request, demo_root, 1, duration=600))
        worker_rss = psutil.Process(runner.worker_pid).memory_info().rss / 2**20
    finally:
        runner.close()
    return {
        "cold_start_s": cold,
        "warm_call_s": statistics.median(walls),
        "inprocess_call_s": statistics.median(inproc),
        "runner_overhead_ratio": statistics.median(walls) / statistics.median(inproc),
        "worker_rss_mb": worker_rss,
        "parent_rss_mb": parent_rss_mb(demo_root),
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_runner", description=__doc__.splitlines()[0])
    parser.add_argument("--speed-only", action="store_true", help="only stock vs ours (cpu_speedup_vs_stock)")
    parser.add_argument("--frames", type=int, default=4, help="frames (--speed-only)")
    parser.add_argument("--process-res", type=int, default=504, help="process_res (--speed-only)")
    parser.add_argument("--rounds", type=int, default=4, help="timed calls per side (--speed-only)")
    parser.add_argument(
        "--both-precisions", action="store_true", default=None, help="also time the precision auto did not pick"
    )
    args = parser.parse_args(argv)
    if args.speed_only:
        print(json.dumps(run_speed_only(args.frames, args.process_res, args.rounds, args.both_precisions), indent=2))
    else:
        print(json.dumps(run(), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
