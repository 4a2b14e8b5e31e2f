"""The cost of isolation, with fake tasks (`benchmarks.sim_tasks`), and the worker pool.

Run: ``.venv/bin/python -m benchmarks.bench_isolation`` (or ``make bench``).

* ``runner_empty_call_ms``: an empty task's round trip through the runner, median of 300.
* ``runner_gpu_sim_overhead_ratio_{4,32}``: the fake GPU task (DA3-SMALL on an H100: 4 or
  32 frames of 640x480 in, 95 or 450 ms of sleep, a reconstruction-sized result out) through
  the runner, divided by the same function called directly inside the worker. Medians of 7,
  alternating the two.
* ``runner_transfer_mb_s``: 256 MB of arrays (made once in the worker) out of it, read back in
  the caller (one byte per page touched, so the mapping's page faults are counted), median of 5.
* ``pool_speedup_2_workers``: 16 tasks that sleep 0.5 s, wall with 1 worker / with 2.

Large arrays cross through shared memory with one copy (`da3_core.runner.shm`); what is left
of the overhead is that copy, into pages the kernel has to allocate (``runner_copy_*`` keys
show the copy alone, measured in this process, so the table says how much of the ratio it is).
"""

from __future__ import annotations

import json
import statistics
import time

import numpy as np

from da3_core.runner import Runner, shm

GOALS = {
    "runner_empty_call_ms": 2.0,
    "runner_gpu_sim_overhead_ratio_4": 1.05,
    "runner_gpu_sim_overhead_ratio_32": 1.05,
    "runner_transfer_mb_s": 2000.0,  # at least (benchmarks/run.py: names ending in _mb_s)
    "pool_speedup_2_workers": 1.9,
}

SIM = "benchmarks.sim_tasks"
SLEEP_S = {4: 0.095, 32: 0.45}


def frames(n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(n)
    return [rng.integers(0, 255, (480, 640, 3), dtype=np.uint8) for _ in range(n)]


def empty_call_ms(runner: Runner, n: int = 300) -> float:
    runner.call(f"{SIM}:empty")
    times = []
    for _ in range(n):
        t = time.perf_counter()
        runner.call(f"{SIM}:empty")
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def gpu_sim_ratio(runner: Runner, n: int, rounds: int = 7, prefix: str = "runner") -> dict[str, float]:
    """The fake GPU task through ``runner`` against it called directly in the worker (or
    actor), alternating; keys start with ``prefix`` (``runner`` or ``ray``)."""
    fr = frames(n)
    sleep_s = SLEEP_S[n]
    runner.call(f"{SIM}:gpu_sim", fr, sleep_s)  # warm: torch imported, pages touched once
    runner.call(f"{SIM}:time_gpu_sim_direct", fr, sleep_s, 1)
    direct, through = [], []
    for _ in range(rounds):
        direct += runner.call(f"{SIM}:time_gpu_sim_direct", fr, sleep_s, 1)
        t = time.perf_counter()
        value = runner.call(f"{SIM}:gpu_sim", fr, sleep_s)
        through.append(time.perf_counter() - t)
        del value  # freed outside the timing, as a caller that keeps it would
    d, r = statistics.median(direct), statistics.median(through)
    result_mb = 2.1 * n  # see benchmarks/sim_tasks.py
    return {
        f"{prefix}_gpu_sim_overhead_ratio_{n}": r / d,
        f"{prefix}_gpu_sim_{n}_direct_s": d,
        f"{prefix}_gpu_sim_{n}_runner_s": r,
        f"{prefix}_gpu_sim_{n}_payload_mb": round(n * 640 * 480 * 3 / 2**20 + result_mb, 1),
    }


def time_sleepers(runner: Runner, workers: int, tasks: int = 16, seconds: float = 0.5) -> float:
    """Wall seconds of ``tasks`` sleeping calls once ``workers`` workers have started."""
    for job in [runner.submit(f"{SIM}:empty") for _ in range(workers * 2)]:
        job.result(120)  # every worker started
    t = time.perf_counter()
    jobs = [runner.submit(f"{SIM}:sleep", (seconds,)) for _ in range(tasks)]
    for job in jobs:
        job.result(120)
    return time.perf_counter() - t


def transfer_mb_s(runner: Runner, megabytes: int = 256, rounds: int = 5) -> float:
    runner.call(f"{SIM}:arrays", megabytes)
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        value = runner.call(f"{SIM}:arrays", megabytes)
        for arr in value.values():
            arr.view(np.uint8).reshape(-1)[::4096].sum()  # read every page once
        times.append(time.perf_counter() - t)
        del value, arr
    return megabytes / statistics.median(times)


def copy_ms(megabytes: float) -> float:
    """One copy of ``megabytes`` into a fresh shared-memory segment, as the runner makes it."""
    value = {"a": np.ones(int(megabytes * 2**20), np.uint8)}
    times = []
    for _ in range(5):
        t = time.perf_counter()
        packed = shm.pack(value)
        times.append(time.perf_counter() - t)
        shm.unlink(packed.segment)
    return statistics.median(times) * 1000


def pool_speedup(tasks: int = 16, seconds: float = 0.5) -> dict[str, float]:
    walls = {}
    for workers in (1, 2):
        runner = Runner(workers=workers)
        try:
            walls[workers] = time_sleepers(runner, workers, tasks, seconds)
        finally:
            runner.close()
    return {
        "pool_speedup_2_workers": walls[1] / walls[2],
        "pool_wall_1_worker_s": walls[1],
        "pool_wall_2_workers_s": walls[2],
    }


def run() -> dict[str, float]:
    out: dict[str, float] = {}
    runner = Runner()
    try:
        out["runner_empty_call_ms"] = empty_call_ms(runner)
        for n in (4, 32):
            out.update(gpu_sim_ratio(runner, n))
            out[f"runner_copy_{n}_ms"] = copy_ms(n * 640 * 480 * 3 / 2**20) + copy_ms(2.1 * n)
        out["runner_transfer_mb_s"] = transfer_mb_s(runner)
    finally:
        runner.close()
    out.update(pool_speedup())
    return out


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
