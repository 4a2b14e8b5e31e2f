"""Robustness figures: how fast a dead worker is reported, and memory growth over many calls.

Run: ``.venv/bin/python -m benchmarks.bench_hardening``.
* ``fault_recovery_s``: worst time, over SIGKILL / segfault / os._exit (5 each), from the
  worker's death to the caller's error (the contract's bound is 2 s).
* ``rss_growth_pct_100_calls``: growth of the larger of parent and worker resident memory
  over 100 consecutive real reconstructions (2 frames, process_res 112, untrained
  DA3-SMALL), after 10 warm-up calls (goal < 10 %).
"""

from __future__ import annotations

import json
import os
import signal
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil

from da3_core.contract import ModelSpec, ReconstructRequest
from da3_core.runner import Runner
from da3_core.runner.protocol import GPUError
from da3_core.runs import tasks

GOALS = {"fault_recovery_s": 2.0, "rss_growth_pct_100_calls": 10.0}
FT = "tests.fake_tasks"


def fault_recovery_s(repeats: int = 5) -> float:
    """Worst seconds from a worker's death to the caller's error."""
    runner = Runner()
    worst = 0.0
    try:
        for _ in range(repeats):
            for how in ("sigkill", "segfault", "exit"):
                runner.call(f"{FT}:square", 2)
                pid = runner.worker_pid
                if how == "sigkill":
                    job = runner.submit(f"{FT}:stubborn", (30,), duration=60)
                    time.sleep(0.2)
                    died = time.monotonic()
                    os.kill(pid, signal.SIGKILL)
                else:
                    task = "die_by_segfault" if how == "segfault" else "die_by_exit"
                    job = runner.submit(f"{FT}:{task}")
                    proc = psutil.Process(pid)
                    try:
                        while proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                            time.sleep(0.001)
                    except psutil.NoSuchProcess:
                        pass  # already reaped by the runner: it died just now
                    died = time.monotonic()
                try:
                    job.result(30)
                except GPUError:
                    pass
                worst = max(worst, (job.finished_at or time.monotonic()) - died)
    finally:
        runner.close()
    return worst


def rss_growth_pct(
    calls: int = 100,
    warmup: int = 10,
    workspace: Path | None = None,
    runner: Runner | None = None,
    process_res: int = 112,
) -> dict[str, float]:
    """Percent growth of parent and worker RSS over ``calls`` real reconstructions after ``warmup``.

    Args:
        calls: Reconstructions measured.
        warmup: Reconstructions before the first measurement.
        workspace: Where the demo weights live (a temporary folder by default).
        runner: A runner to use (and leave open); by default a fresh one, closed at the end.
        process_res: DA3's processing resolution of each call (the test suite uses 56: a leak
            per call shows at any size, and 100 calls then take seconds).
    """
    demo = str((workspace or Path(tempfile.mkdtemp(prefix="da3-rss-"))) / "demo-weights")
    frames = tuple(np.full((96, 128, 3), 30 * i + 20, np.uint8) for i in range(2))
    req = ReconstructRequest(frames, ("a", "b"), ModelSpec("demo", "da3-small"), process_res=process_res)
    own = runner is None
    runner = runner or Runner()
    me = psutil.Process()
    try:
        for _ in range(warmup):
            tasks.reconstruct.call(req, demo, runner=runner)
        worker = psutil.Process(runner.worker_pid)
        starts = runner.worker_starts
        parent0, worker0 = me.memory_info().rss, worker.memory_info().rss
        for _ in range(calls):
            tasks.reconstruct.call(req, demo, runner=runner)
        parent1, worker1 = me.memory_info().rss, worker.memory_info().rss
        assert runner.worker_starts == starts, "the worker restarted during the measurement"
    finally:
        if own:
            runner.close()
    return {
        "parent_rss_growth_pct": 100.0 * (parent1 - parent0) / parent0,
        "worker_rss_growth_pct": 100.0 * (worker1 - worker0) / worker0,
        "rss_growth_pct_100_calls": 100.0 * max((parent1 - parent0) / parent0, (worker1 - worker0) / worker0),
    }


def run() -> dict[str, float]:
    out = {"fault_recovery_s": fault_recovery_s()}
    out.update(rss_growth_pct())
    return out


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
