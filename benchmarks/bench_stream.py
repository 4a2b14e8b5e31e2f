"""Chunked ("streaming") runs: memory flat in the run's length, alignment accuracy, loop
closure, the cost of chunking against one call, the worker pool, and resume.

Run: ``.venv/bin/python -m benchmarks.bench_stream`` (prints a table; ``make bench`` runs it
with the rest). What each figure measures:

* ``stream_worker_peak_mb_ratio_128_vs_16`` / ``stream_parent_peak_mb_ratio_128_vs_16``:
  untrained DA3-SMALL (demo weights), 128 vs 16 synthetic 160x120 frames, chunk 8 overlap 2,
  process_res 140, no loop closure. Each run happens in a fresh process
  (``python -m benchmarks.bench_stream --one N``) with a fresh runner, so each peak is the
  run's own: the worker's ``VmHWM`` (reset from outside through ``/proc/<pid>/clear_refs``
  after a warm-up call that loads the model, so the peak is the run's, model included),
  and the parent's (that process: the server's stand-in) ``VmHWM``; frames are passed as a
  generator with ``sizes=``, so the parent never holds them all.
* ``stream_align_ate_pct``: the ground-truth oracle (`tests.oracle`), 128 frames on the line
  path, each chunk in its own random Sim(3) with 1 % depth noise, chunk 16 overlap 5, no
  loop closure: ATE RMSE (after one Sim(3) fit of the whole path) as % of the path length.
* ``stream_loop_ate_ratio`` (the brief's ``stream_loop_ate_reduction`` >= 3, as its inverse
  <= 1/3: ``benchmarks.run`` judges every name without ``speedup`` or ``_mb_s`` as "at most"):
  the oracle on the loop path with drift injected (3 deg and 2 % scale over every chunk),
  ATE with loop closure / without; ``stream_loop_ate_reduction`` (without / with) is
  reported beside it, without a goal.
* ``stream_time_ratio_32``: untrained DA3-SMALL, the same 32 frames (160x120, process_res
  140), chunked (chunk 16 overlap 5, no loop closure) vs one call (`RunService.submit`);
  wall from submit to outcome (frames saved, result written); worker and assembler warm;
  the median of alternating rounds (``_best``: the fastest of each). The 3 chunks of 16 see
  48 frames, 1.5 times the one call's 32, whatever the machinery costs:
  ``stream_time_ratio_32_per_frame_computed`` divides that out. ``_in_worker_s``: the seconds
  the worker spent on the run's calls (the rest of the wall is the server's and the
  assembler's); ``stream_time_ratio_32_worker_cpu``: the ratio of the worker's CPU seconds.
* ``stream_pool_speedup_2_workers``: the oracle with 0.5 s per chunk (a fake GPU; its "room"
  scene), 74 frames in 12 chunks of 8 overlapping by 2, on a runner with 2 workers vs 1
  (warm), wall from submit to outcome.
* ``stream_resume_redone_chunks``: the same slow oracle run (1 worker), stopped after 3
  chunks landed, once by cancelling and once by killing the worker (``SIGKILL``), then
  ``RunService.resume``: chunks computed by both the first run and its resume, summed over
  the two cases. ``stream_resume_identical`` is 1 when both resumed results equal an
  uninterrupted run's, array for array. (The killed worker logs a warning on stderr.)

On a shared machine the wall times stretch with the load: ``stream_load_avg_max`` is the
highest 1-minute load average seen at the start and after each part.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

GOALS = {
    "stream_worker_peak_mb_ratio_128_vs_16": 1.15,
    "stream_parent_peak_mb_ratio_128_vs_16": 1.3,
    "stream_align_ate_pct": 0.5,
    "stream_loop_ate_ratio": 1 / 3,
    "stream_time_ratio_32": 1.5,
    "stream_pool_speedup_2_workers": 1.8,
    "stream_resume_redone_chunks": 0.0,
}

PARAMS = {
    "process_res_method": "upper_bound_resize",
    "ref_view_strategy": "saddle_balanced",
    "reference_view": None,
    "infer_gs": False,
    "device": "cpu",
}
DA3_RES = 140
FRAME_WH = (160, 120)
ORACLE_WH = (64, 48)


# -- helpers ---------------------------------------------------------------------------------
def frame(i: int, wh: tuple[int, int] = FRAME_WH) -> np.ndarray:
    """Synthetic frame ``i``: a pattern that slides with ``i``, plus seeded noise."""
    w, h = wh
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([(xx * 2 + 5 * i) % 256, (yy * 3 + 2 * i) % 256, ((xx + i) ^ yy) % 256], -1).astype(np.float32)
    noise = np.random.default_rng(i).normal(0, 8, base.shape)
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def frames_gen(n: int) -> Iterator[np.ndarray]:
    for i in range(n):
        yield frame(i)


def names(n: int) -> list[str]:
    return [f"{i:04d}.jpg" for i in range(n)]


def da3_params(chunk: int | None = None, overlap: int | None = None, loops: bool = False) -> dict[str, Any]:
    p = {**PARAMS, "process_res": DA3_RES}
    if chunk is not None:
        p["chunking"] = {"chunk": chunk, "overlap": overlap, "loop_closure": loops}
    return p


def wait(run: Any, timeout: float = 600.0) -> Any:
    """Pump ``run`` until it has an outcome (pumping also keeps a one-call run watched)."""
    deadline = time.monotonic() + timeout
    while not run.finished:
        if time.monotonic() > deadline:
            run.cancel()
            raise TimeoutError(f"run stuck at {run.stage}")
        run.pump()
        time.sleep(0.02)
    return run.outcome


def vm_mb(field: str, pid: int | str = "self") -> float:
    """A ``/proc/<pid>/status`` field (``VmHWM``, ``VmRSS``) in MB; 0 where absent."""
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith(field + ":"):
                return float(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def reset_hwm(pid: int | str = "self") -> bool:
    """Reset a process's resident high-water mark to its current RSS (``clear_refs`` 5)."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def cpu_s(pid: int | None) -> float:
    """User + system CPU seconds of process ``pid`` so far (0 where it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


_sessions = iter(range(10**6))


def session(ws: Path) -> Path:
    return ws / "sessions" / f"{next(_sessions):032d}"


# -- memory: one run in this (fresh) process -------------------------------------------------
def one(n: int, workspace: Path, chunk: int = 8, overlap: int = 2) -> dict[str, float]:
    """A chunked DA3 run of ``n`` generated frames in this process (a fresh one: the parent
    peak is this run's): the worker's and this process's resident peaks."""
    from da3_core.config import Settings
    from da3_core.contract import ModelSpec, ReconstructRequest
    from da3_core.runner import Runner
    from da3_core.runs import records, tasks
    from da3_core.runs.service import RunService

    settings = Settings(workspace=workspace)
    runner = Runner(start_timeout_s=300)
    service = RunService(runner, settings)
    try:
        warm = ReconstructRequest(
            tuple(frame(i) for i in range(2)),
            ("a", "b"),
            ModelSpec("demo", "da3-small"),
            process_res=DA3_RES,
            device="cpu",
        )
        tasks.reconstruct.call(warm, str(settings.demo_weights_dir), runner=runner)  # loads the model
        pid = runner.worker_pid
        worker_reset = reset_hwm(pid)
        worker_before = vm_mb("VmRSS", pid)
        parent_before = vm_mb("VmHWM")
        t = time.perf_counter()
        run = service.submit_chunked(
            session(workspace),
            frames_gen(n),
            names(n),
            "upload",
            ModelSpec("demo", "da3-small"),
            da3_params(chunk, overlap),
            sizes=[FRAME_WH] * n,
        )
        outcome = wait(run)
        wall = time.perf_counter() - t
        if not outcome.ok:
            raise RuntimeError(f"chunked run of {n} frames: {outcome.message}")
        rec = records.load_result(run.run_dir)  # memory-mapped: what the server then holds
        assert rec.n_views == n
        del rec
        assert runner.worker_pid == pid, "the worker restarted during the run"
        return {
            "worker_peak_mb": vm_mb("VmHWM", pid),
            "worker_before_mb": worker_before,
            "worker_reset": float(worker_reset),
            "parent_peak_mb": vm_mb("VmHWM"),
            "parent_before_mb": parent_before,
            "wall_s": wall,
            "chunks": float(run.plan.n_chunks),
        }
    finally:
        service.close()
        runner.close()


def one_in_subprocess(n: int, workspace: Path) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH", "")]))}
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_stream", "--one", str(n), "--workspace", str(workspace)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    if out.returncode != 0:
        raise RuntimeError(f"--one {n} failed ({out.returncode}): {out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def memory(workspace: Path) -> dict[str, float]:
    small, large = one_in_subprocess(16, workspace), one_in_subprocess(128, workspace)
    out = {
        "stream_worker_peak_mb_ratio_128_vs_16": large["worker_peak_mb"] / small["worker_peak_mb"],
        "stream_parent_peak_mb_ratio_128_vs_16": large["parent_peak_mb"] / small["parent_peak_mb"],
        "stream_worker_peak_16_mb": small["worker_peak_mb"],
        "stream_worker_peak_128_mb": large["worker_peak_mb"],
        "stream_worker_warm_16_mb": small["worker_before_mb"],  # resident after the warm-up call (model loaded)
        "stream_worker_warm_128_mb": large["worker_before_mb"],
        "stream_worker_growth_16_mb": small["worker_peak_mb"] - small["worker_before_mb"],
        "stream_worker_growth_128_mb": large["worker_peak_mb"] - large["worker_before_mb"],
        "stream_parent_peak_16_mb": small["parent_peak_mb"],
        "stream_parent_peak_128_mb": large["parent_peak_mb"],
        "stream_parent_growth_16_mb": small["parent_peak_mb"] - small["parent_before_mb"],
        "stream_parent_growth_128_mb": large["parent_peak_mb"] - large["parent_before_mb"],
        "stream_da3_128_frames_s": large["wall_s"],
        "stream_da3_128_chunks": large["chunks"],
    }
    if not (small["worker_reset"] and large["worker_reset"]):
        out["stream_worker_hwm_not_reset"] = 1.0  # the peaks include the model load
    return out


# -- time: chunked vs one call on warm workers ------------------------------------------------
def time_ratio(workspace: Path, n: int = 32, chunk: int = 16, overlap: int = 5, rounds: int = 2) -> dict[str, float]:
    from da3_core.config import Settings
    from da3_core.contract import ModelSpec
    from da3_core.runner import Runner
    from da3_core.runs.service import RunService

    model = ModelSpec("demo", "da3-small")
    imgs = [frame(i) for i in range(n)]
    runner = Runner(start_timeout_s=300)
    service = RunService(runner, Settings(workspace=workspace))

    in_worker: dict[bool, list[float]] = {True: [], False: []}
    worker_cpu: dict[bool, list[float]] = {True: [], False: []}

    def once(chunked: bool, k: int = n) -> float:
        pid = runner.worker_pid
        cpu = cpu_s(pid)
        t = time.perf_counter()
        if chunked:
            run = service.submit_chunked(
                session(workspace), imgs[:k], names(k), "upload", model, da3_params(chunk, overlap)
            )
        else:
            run = service.submit(session(workspace), imgs[:k], names(k), "upload", model, da3_params())
        outcome = wait(run)
        wall = time.perf_counter() - t
        if not outcome.ok:
            raise RuntimeError(f"{'chunked' if chunked else 'one-call'} run: {outcome.message}")
        # Seconds the worker spent on the run's call(s), from each call's start to its landing.
        in_worker[chunked].append(sum(run._chunk_seconds) if chunked else float(run.result.timings.get("total", 0.0)))
        worker_cpu[chunked].append(cpu_s(pid) - cpu if pid and runner.worker_pid == pid else float("nan"))
        return wall

    try:
        once(False, 4)  # loads the model
        once(True, 4)  # starts the assembler child (one chunk of 4)
        walls: dict[bool, list[float]] = {True: [], False: []}
        for d in (in_worker, worker_cpu):
            d[True].clear()
            d[False].clear()
        for _ in range(rounds):
            for chunked in (True, False):
                walls[chunked].append(once(chunked))
    finally:
        service.close()
        runner.close()
    from da3_core.chunks.plan import plan_chunks

    c, o = statistics.median(walls[True]), statistics.median(walls[False])
    plan = plan_chunks(n, chunk, overlap)
    return {
        "stream_time_ratio_32": c / o,
        "stream_time_ratio_32_best": min(walls[True]) / min(walls[False]),
        # the chunks see overlapping frames twice: the ratio per frame the network saw
        "stream_time_ratio_32_per_frame_computed": (c / plan.frames_computed) / (o / n),
        "stream_chunked_32_s": c,
        "stream_one_call_32_s": o,
        "stream_chunked_32_frames_computed": float(plan.frames_computed),
        "stream_chunked_32_in_worker_s": statistics.median(in_worker[True]),
        "stream_one_call_32_in_worker_s": statistics.median(in_worker[False]),
        # the worker's CPU seconds: less stretched than wall time by other work on the machine
        "stream_time_ratio_32_worker_cpu": statistics.median(worker_cpu[True]) / statistics.median(worker_cpu[False]),
    }


# -- oracle: alignment, loop closure, pool, resume ---------------------------------------------
def ate_pct(run_dir: Path, scene: Path) -> float:
    from da3_core.runs import records
    from da3_core.scene.align import ate_rmse, camera_centres
    from tests import oracle

    rec = records.load_result(run_dir)
    gt = oracle.load_gt(scene)
    rmse, length = ate_rmse(
        camera_centres(np.asarray(rec.extrinsics, np.float64)), camera_centres(gt["extrinsics"][: rec.n_views])
    )
    return 100.0 * rmse / length


def oracle_run(
    service: Any, ws: Path, scene: Path, n: int, chunk: int, overlap: int, loops: bool = False, finish: bool = True
) -> Any:
    from tests import oracle

    params = {**PARAMS, "process_res": 112, "chunking": {"chunk": chunk, "overlap": overlap, "loop_closure": loops}}
    run = service.submit_chunked(
        session(ws), oracle.frames(scene, range(n)), names(n), "upload", oracle.oracle_model(scene), params
    )
    if finish:
        outcome = wait(run)
        if not outcome.ok:
            raise RuntimeError(f"oracle run ({n} frames, chunk {chunk}): {outcome.message}")
    return run


def result_arrays(run_dir: Path) -> dict[str, np.ndarray]:
    from da3_core.chunks import store

    return {p.stem: np.load(p, allow_pickle=False) for p in sorted(store.result_dir(run_dir).glob("*.npy"))}


def oracle_figures(tmp: Path) -> dict[str, float]:
    from da3_core.chunks import store
    from da3_core.config import Settings
    from da3_core.runner import Runner
    from da3_core.runs.service import RunService
    from tests import oracle
    from tests.oracle_tasks import oracle_chunk

    w, h = ORACLE_WH
    out: dict[str, float] = {}
    t = time.perf_counter()
    line = oracle.make_oracle(tmp / "line", n_frames=128, path="line", width=w, height=h)
    loop = oracle.make_oracle(
        tmp / "loop",
        n_frames=128,
        path="loop",
        width=w,
        height=h,
        options=oracle.OracleOptions(drift_deg=3.0, drift_scale=0.02),
    )
    # A slow "model" for the pool and resume: the "room" scene (no sky: the courtyard's chunks of 8
    # on the line path include some without sky pixels, which the assembler does not take yet).
    slow = oracle.make_oracle(
        tmp / "slow",
        n_frames=74,
        path="line",
        width=w,
        height=h,
        scene="room",
        options=oracle.OracleOptions(delay_s=0.5),
    )
    out["stream_oracle_render_s"] = time.perf_counter() - t
    ws = tmp / "ws"

    runner = Runner(cancel_grace_s=1.0)
    service = RunService(runner, Settings(workspace=ws), chunk_task=oracle_chunk)
    try:
        t = time.perf_counter()
        run = oracle_run(service, ws, line, 128, 16, 5)
        out["stream_oracle_128_s"] = time.perf_counter() - t  # includes the worker's and the assembler's start
        out["stream_align_ate_pct"] = ate_pct(run.run_dir, line)
        out["stream_align_chunks"] = float(run.plan.n_chunks)

        plain = oracle_run(service, ws, loop, 128, 16, 5, loops=False)
        t = time.perf_counter()
        closed = oracle_run(service, ws, loop, 128, 16, 5, loops=True)
        out["stream_oracle_128_loops_s"] = time.perf_counter() - t
        without, with_loops = ate_pct(plain.run_dir, loop), ate_pct(closed.run_dir, loop)
        graph = store.read_json(store.chunks_dir(closed.run_dir) / "graph.json")
        out.update(
            {
                "stream_loop_ate_open_pct": without,
                "stream_loop_ate_closed_pct": with_loops,
                "stream_loop_ate_ratio": with_loops / without,
                "stream_loop_ate_reduction": without / with_loops,
                "stream_loops_closed": float(len(graph.get("loops", []))),
            }
        )

        # The pool: 74 frames in 12 chunks of 8 (overlap 2), 0.5 s each; 1 worker (this runner) vs 2.
        n_pool = 74
        oracle_run(service, ws, slow, 14, 8, 2)  # warm: the slow oracle's truth cached in the worker
        t = time.perf_counter()
        reference = oracle_run(service, ws, slow, n_pool, 8, 2)
        one_worker = time.perf_counter() - t
        out["stream_pool_chunks"] = float(reference.plan.n_chunks)

        # Resume: stop after 3 chunks landed (cancel; then a killed worker), resume, count chunks done twice.
        redone, identical = 0, True
        ref_arrays = result_arrays(reference.run_dir)
        for how in ("cancel", "kill"):
            run = oracle_run(service, ws, slow, n_pool, 8, 2, finish=False)
            deadline = time.monotonic() + 120
            while len(store.done_chunks(run.run_dir, run.plan)) < 3:
                if time.monotonic() > deadline or run.finished:
                    raise RuntimeError(f"resume ({how}): the run did not get to 3 chunks ({run.outcome})")
                time.sleep(0.01)
            if how == "cancel":
                run.cancel()
            else:
                os.kill(runner.worker_pid, signal.SIGKILL)
            outcome = wait(run)
            if outcome.ok:
                raise RuntimeError(f"resume ({how}): the run was not stopped")
            first = set(run.computed)
            again = service.resume(run.run_dir)
            if not wait(again).ok:
                raise RuntimeError(f"resume ({how}): {again.outcome.message}")
            second = set(again.computed)
            redone += len(first & second)
            out[f"stream_resume_{how}_first_chunks"] = float(len(first))
            out[f"stream_resume_{how}_resumed_chunks"] = float(len(second))
            if first | second != set(range(run.plan.n_chunks)):
                raise RuntimeError(f"resume ({how}): chunks missing: {set(range(run.plan.n_chunks)) - first - second}")
            got = result_arrays(again.run_dir)
            identical &= got.keys() == ref_arrays.keys() and all(np.array_equal(got[k], ref_arrays[k]) for k in got)
        out["stream_resume_redone_chunks"] = float(redone)
        out["stream_resume_identical"] = float(identical)
    finally:
        service.close()
        runner.close()

    pool = Runner(workers=2, cancel_grace_s=1.0)
    service = RunService(pool, Settings(workspace=ws), chunk_task=oracle_chunk)
    try:
        oracle_run(service, ws, slow, 14, 8, 2)  # warm: both workers start (2 chunks at once)
        t = time.perf_counter()
        oracle_run(service, ws, slow, n_pool, 8, 2)
        two_workers = time.perf_counter() - t
    finally:
        service.close()
        pool.close()
    out.update(
        {
            "stream_pool_speedup_2_workers": one_worker / two_workers,
            "stream_pool_1_worker_s": one_worker,
            "stream_pool_2_workers_s": two_workers,
        }
    )
    return out


# -- the module ----------------------------------------------------------------------------------
def run() -> dict[str, float]:
    from da3_core.config import Settings
    from da3_core.runner import Runner
    from da3_core.runs import tasks

    tmp = Path(tempfile.mkdtemp(prefix="da3-bench-stream-"))
    try:
        out: dict[str, float] = {}
        loads = [os.getloadavg()[0]]
        t = time.perf_counter()
        out.update(oracle_figures(tmp / "oracle"))
        loads.append(os.getloadavg()[0])
        out["stream_oracle_part_s"] = time.perf_counter() - t
        workspace = tmp / "da3"
        setup = Runner(start_timeout_s=300)
        try:
            tasks.build_demo_weights.call(
                "da3-small", str(Settings(workspace=workspace).demo_weights_dir), runner=setup
            )
        finally:
            setup.close()
        t = time.perf_counter()
        out.update(memory(workspace))
        out["stream_memory_part_s"] = time.perf_counter() - t
        loads.append(os.getloadavg()[0])
        t = time.perf_counter()
        out.update(time_ratio(workspace))
        out["stream_time_part_s"] = time.perf_counter() - t
        loads.append(os.getloadavg()[0])
        # The 1-minute load average at the start and after each part (max): a shared machine
        # under load stretches the wall times (and the ratios of wall times) above.
        out["stream_load_avg_max"] = max(loads)
        return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_stream", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--one", type=int, default=0, help="internal: one chunked DA3 run of this many frames; prints JSON"
    )
    parser.add_argument("--workspace", default="", help="internal: with --one, the workspace (demo weights built)")
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(one(args.one, Path(args.workspace))))
        return 0
    from benchmarks.run import verdict

    t = time.perf_counter()
    results = run()
    width = max(len(k) for k in results)
    print(f"{'metric':<{width}}  {'value':>12}  verdict")
    for key in sorted(results):
        print(f"{key:<{width}}  {results[key]:>12.4g}  {verdict(key, results[key], GOALS.get(key))}")
    print(f"\ntook {time.perf_counter() - t:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
