"""Runner and CPU-path figures: overhead of isolation, speed against stock DA3, start-up, memory.

Run: ``.venv/bin/python -m benchmarks.bench_runner``. Workload: 4 frames of 640x480 at
process_res 504 on untrained DA3-SMALL weights (speed does not depend on the weights).
Goals: runner_overhead_ratio <= 1.05, cpu_speedup_vs_stock >= 3.5. "Stock" is
``DepthAnything3.inference()`` as shipped, in a plain process; "ours" is our CPU path in
the worker (float32, no autocast, malloc tuned); they alternate call by call, 4 rounds.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import psutil

from da3_core import tasks
from da3_core.contract import ModelSpec, ReconstructRequest
from da3_core.gpu import Runner

GOALS = {"runner_overhead_ratio": 1.05, "cpu_speedup_vs_stock": 3.5}
ROOT = Path(__file__).resolve().parents[1]


def workload(n: int = 4, process_res: int = 504) -> ReconstructRequest:
    rng = np.random.default_rng(0)
    frames = []
    for i in range(n):
        yy, xx = np.mgrid[0:480, 0:640]
        base = np.stack([(xx + 30 * i) % 256, yy % 256, (xx ^ yy) % 256], -1).astype(np.float32)
        frames.append(np.clip(base + rng.normal(0, 10, base.shape), 0, 255).astype(np.uint8))
    return ReconstructRequest(tuple(frames), tuple(f"{i}.png" for i in range(n)), ModelSpec("demo", "da3-small"), process_res=process_res)


def stock_vs_ours(runner: Runner, request: ReconstructRequest, demo_root: str, rounds: int) -> dict[str, list[float]]:
    """Stock DA3 (in a second, plain worker: its own autocast, default threads and allocator)
    against our path, alternating call by call so the machine's drift hits both alike."""
    stock_runner = Runner(name="da3-stock")
    folder = str(Path(demo_root) / request.model.ref)
    out: dict[str, list[float]] = {"stock": [], "ours": []}
    try:
        stock_runner.call("benchmarks.worker_tasks:time_stock_once", folder, request, duration=1800)  # load + warm
        for _ in range(rounds):
            out["stock"].append(stock_runner.call("benchmarks.worker_tasks:time_stock_once", folder, request, duration=1800))
            out["ours"].extend(runner.call("benchmarks.worker_tasks:time_inprocess", request, demo_root, 1, duration=1800))
    finally:
        stock_runner.close()
    return out


def parent_rss_mb(demo_root: str) -> float:
    """RSS of a Streamlit process that rendered the home page and received one reconstruction."""
    from tests.conftest import run_python

    code = textwrap.dedent(
        f"""
        import json, numpy as np, psutil
        from streamlit.testing.v1 import AppTest
        at = AppTest.from_file("streamlit_app.py", default_timeout=300)
        at.run()
        from da3_core import tasks
        from da3_core.contract import ModelSpec, ReconstructRequest
        from da3_core.holder import get_runner
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
        speed = stock_vs_ours(runner, request, demo_root, rounds=4)
    finally:
        runner.close()
    return {
        "cold_start_s": cold,
        "warm_call_s": statistics.median(walls),
        "inprocess_call_s": statistics.median(inproc),
        "runner_overhead_ratio": statistics.median(walls) / statistics.median(inproc),
        "stock_inference_s": statistics.median(speed["stock"]),
        "our_cpu_inference_s": statistics.median(speed["ours"]),
        "cpu_speedup_vs_stock": statistics.median(speed["stock"]) / statistics.median(speed["ours"]),
        "cpu_speedup_vs_stock_best": min(speed["stock"]) / min(speed["ours"]),
        "worker_rss_mb": worker_rss,
        "parent_rss_mb": parent_rss_mb(demo_root),
    }


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
