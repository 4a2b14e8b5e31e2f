"""Measure DA3 runs and fit the memory and time model the run guard uses (`da3_core.runs.guard`).

Each point is one real reconstruction through the runner in a fresh worker (untrained weights
built from the preset, 640x480 frames): the worker's resident peak (``VmHWM``, reset before the call), on
CUDA the peak GPU memory, the inference seconds, and the parent's resident growth while it
holds the result. The fit:

* memory, per preset and device: ``peak_mb = a + b * ktokens + d * h`` (h: the ktokens of the
  largest chunk of 8 frames, which DA3's DPT head decodes at once at full resolution): the
  tightest such line with every measured point under it (a linear programme): the guard must
  not under-estimate what it measured;
* time, per device: ``inference_s = gparams * (c0 + c1 * k + c2 * k**2 + c3 * q)``
  (non-negative least squares on all presets; k^2 is DA3's global attention, q its
  per-frame attention);
* the parent: ``a + b * result_mb + e * frame_mb`` (result: image, depth and confidence at the
  processed size; frame: one frame's share, since unprojecting makes per-frame temporaries);
* on a CPU, inference seconds are scaled by the share of the worker's threads' time actually
  used, so that other work on the machine does not inflate them.

Usage: ``python -m benchmarks.fit_guard [--grid quick|cpu|cpu-small|cuda] [--out FILE] [--merge da3_core/runs/guard_model.json]
[--precisions fp32,bf16] [--merge-presets]``.
``--merge`` writes this device's part into the model file the app reads, keeping the other
device's part; with ``--merge-presets`` only the memory lines of the measured presets are
replaced (the rest of the device's part is kept). ``--precisions`` measures every point once
per CPU precision (``DA3_CPU_PRECISION`` in the worker), so that the memory line covers
both: the server cannot know which one a CPU worker will pick. Prints one table row per point and the fit's largest errors.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.cpu_tasks import cpu_flags  # noqa: E402 - run as a script: the repo root joins sys.path first
from benchmarks.run import machine as bench_machine  # noqa: E402 - run as a script: the repo root joins sys.path first
from benchmarks.worker_tasks import reset_hwm, vm_kb  # noqa: E402 - run as a script: the repo root joins sys.path first
from da3_core import presets  # noqa: E402 - run as a script: the repo root joins sys.path first
from da3_core.contract import ModelSpec, ReconstructRequest  # noqa: E402 - run as a script: the repo root joins sys.path first
from da3_core.runs import tasks  # noqa: E402 - run as a script: the repo root joins sys.path first
from da3_core.runs.guard import ktokens  # noqa: E402 - run as a script: the repo root joins sys.path first

GRIDS = {
    # (preset, frames, process_res)
    "quick": [("da3-small", n, 504) for n in (1, 4)],
    # DA3-SMALL alone (the Community Cloud preset), for --merge-presets after a change of the CPU path.
    "cpu-small": [("da3-small", n, 504) for n in (1, 4, 8, 16, 32)]
    + [("da3-small", n, 1008) for n in (1, 4)]
    + [("da3-small", 1, 2016)],
    "cpu": (
        [("da3-small", n, 504) for n in (1, 4, 8, 16, 32)]
        + [("da3-small", n, 1008) for n in (1, 4, 8)]
        + [("da3-base", n, 504) for n in (1, 4, 8)]
        + [("da3-large", n, 504) for n in (1, 4)]
        + [("da3-giant", n, 504) for n in (1, 2)]
    ),
    "cuda": (
        [("da3-small", n, r) for r in (504, 1008) for n in (1, 8, 32)]
        + [("da3-base", 1, 504), ("da3-base", 8, 504), ("da3-base", 8, 1008)]
        + [("da3-large", n, 504) for n in (1, 8, 32)]
        + [("da3-large", n, 1008) for n in (1, 8)]
        + [("da3-giant", n, 504) for n in (1, 8, 32, 64)]
        + [("da3-giant", n, 1008) for n in (1, 8)]
    ),
}


def frames(n: int, hw: tuple[int, int] = (480, 640)) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(n)
    return tuple((rng.random((*hw, 3)) * 255).astype(np.uint8) for _ in range(n))


def _hwm_reset() -> float:
    """Reset this process's resident high-water mark; return the resident MB now."""
    reset_hwm()
    return vm_kb("VmRSS") / 1024


def parent_cycle(req: ReconstructRequest, demo: str, runner, folder: Path) -> tuple[dict, float]:
    """The call through the runner and what the server then does with a result: save the
    run, load it back, compute the world points. Returns the worker's measurement and the
    parent's resident growth at its peak."""
    from da3_core.runs import records
    from da3_core.scene import geometry

    before = _hwm_reset()
    rec_m = runner.call("benchmarks.worker_tasks:measure_run_kept", req, demo, duration=3600)
    m, rec = rec_m
    run_dir, meta = records.start_run(
        folder, req.images, req.names, "upload", req.model, {"process_res": req.process_res}
    )
    meta = records.finish_run(run_dir, meta, rec)
    del rec
    loaded = records.load_result(run_dir, meta)
    cams = geometry.resolve_cameras(loaded, fov_deg=60.0)
    pts = geometry.unproject_all(loaded, cams)
    growth = vm_kb("VmHWM") / 1024 - before
    del loaded, cams, pts
    return m, max(0.0, growth)


def measure(grid: str, demo: str, runner, out: Path | None = None, precisions: tuple[str, ...] = ("",)) -> list[dict]:
    """The grid's points (each once per CPU precision in ``precisions``; "": the worker's
    own choice); each is also written to ``out`` as it comes (a killed run keeps them)."""
    points: list[dict] = []
    built: set[str] = set()
    combos = [(p, n, r, prec) for prec in precisions for (p, n, r) in GRIDS[grid]]
    print(
        f"{'preset':<12}{'frames':>7}{'res':>6}{'ktok':>8}{'infer s':>9}{'worker MB':>11}{'GPU MB':>9}{'parent+MB':>11}{'result MB':>11}",
        flush=True,
    )
    for preset, n, res, precision in combos:
        if precision:
            os.environ["DA3_CPU_PRECISION"] = precision  # the restarted worker inherits it
        if preset not in built:
            tasks.build_demo_weights.call(preset, demo, runner=runner)
            built.add(preset)
        req = ReconstructRequest(
            frames(n), tuple(f"{i}.png" for i in range(n)), ModelSpec("demo", preset), process_res=res
        )
        # A fresh worker per point: a process keeps (part of) the memory its earlier, larger runs
        # freed, so its peak would read high. A run in a new worker is what the guard estimates.
        runner.restart()
        try:
            if n <= 4:  # a warm-up call (cheap at this size): the first call of a worker initialises its kernels
                runner.call("benchmarks.worker_tasks:measure_run", req, demo, duration=1800)
            with tempfile.TemporaryDirectory(prefix="da3-fit-") as folder:
                m, growth = parent_cycle(req, demo, runner, Path(folder))
        except Exception as exc:  # noqa: BLE001 - e.g. out of memory: the row says so and the grid goes on
            print(f"{preset:<12}{n:>7}{res:>6}  failed: {type(exc).__name__}: {str(exc)[:200]}", flush=True)
            points.append(
                {"preset": preset, "frames": n, "process_res": res, "error": f"{type(exc).__name__}: {exc}"[:500]}
            )
            continue
        k, q = ktokens(n, res, 640 / 480), n * ktokens(1, res, 640 / 480) ** 2
        m.update(preset=preset, frames=n, process_res=res, ktokens=k, q=q, parent_growth_mb=growth)
        if precision:
            m["cpu_precision"] = precision
        points.append(m)
        if out is not None:
            out.write_text(json.dumps({"points": points}, indent=1, default=float))
        print(
            f"{preset:<12}{n:>7}{res:>6}{m['ktokens']:>8.1f}{m['inference_s']:>9.2f}{m['rss_peak_mb']:>11.0f}"
            f"{m.get('cuda_peak_reserved_mb', 0):>9.0f}{m['parent_growth_mb']:>11.0f}{m['result_mb']:>11.1f}",
            flush=True,
        )
    return points


def envelope(columns: list[np.ndarray], y: np.ndarray) -> list[float]:
    """Non-negative coefficients of the tightest line over the points: minimise the summed
    over-estimate subject to no point lying above it (a linear programme)."""
    from scipy.optimize import linprog  # noqa: PLC0415 - the fit runs where scipy is (DA3 brings it)

    a = np.stack(columns, 1)
    res = linprog(c=a.sum(0), A_ub=-a, b_ub=-y, bounds=[(0, None)] * a.shape[1], method="highs")
    if not res.success:
        raise RuntimeError(f"the envelope fit failed: {res.message}")
    return [float(v) for v in res.x]


def line_over(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(a, b) of the tightest ``a + b * x`` over every point (slope >= 0)."""
    a, b = envelope([np.ones_like(x), x], y)
    return a, b


CHUNK = 8  # DA3's DPT heads decode frames in chunks of 8 (``chunk_size`` in depth_anything_3/model/dpt.py)


def chunk_ktokens(p: dict, head_frames: int = CHUNK) -> float:
    """ktokens of the largest chunk of frames the head decodes at once (equal frames here)."""
    return p["ktokens"] / p["frames"] * min(p["frames"], head_frames)


def fit_memory(points: list[dict], key: str, head_frames: int = CHUNK) -> dict[str, dict[str, float]]:
    """Per preset: the tightest ``a + b * ktokens + d * h`` over every measured point, h
    being the ktokens of the largest chunk of 8 frames. DA3's backbone holds every frame's
    tokens (b); its DPT head decodes 8 frames at a time at full resolution (d) (``head_frames``:
    1 where the worker's CPU forward decodes frame by frame, cpu_fast's ``head_chunk``), so memory
    climbs steeply over the first 8 frames and slowly after (DA3-SMALL at 504 on the CPU:
    1.3 GB for 1 frame, 2.5 GB for 8, 3.1 GB for 32), and 8 frames at 1008 need twice what
    32 at 504 do, with the same tokens. A preset never measured past 8 frames cannot tell b
    from d: its slope is split as in the preset measured furthest (DA3-SMALL)."""
    out: dict[str, dict[str, float]] = {}
    groups = {
        preset: [p for p in points if p["preset"] == preset and key in p]
        for preset in sorted({p["preset"] for p in points})
    }
    groups = {k: v for k, v in groups.items() if v}
    if not groups:
        return out
    ref = max(groups, key=lambda n: (sum(p["frames"] > CHUNK for p in groups[n]), len(groups[n])))
    share_b = 0.0
    pts = groups[ref]
    if any(p["frames"] > CHUNK for p in pts):
        _, b, d = envelope(
            [
                np.ones(len(pts)),
                np.array([p["ktokens"] for p in pts]),
                np.array([chunk_ktokens(p, head_frames) for p in pts]),
            ],
            np.array([p[key] for p in pts]),
        )
        share_b = b / (b + d) if b + d > 0 else 0.0
    for preset, pts in groups.items():
        k = np.array([p["ktokens"] for p in pts])
        h = np.array([chunk_ktokens(p, head_frames) for p in pts])
        y = np.array([p[key] for p in pts])
        if any(p["frames"] > CHUNK for p in pts):
            a, b, d = envelope([np.ones_like(k), k, h], y)
        else:  # here k == h
            a, slope = line_over(k, y)
            b, d = slope * share_b, slope * (1 - share_b)
        over = (a + b * k + d * h) / y - 1
        out[preset] = {
            "a_mb": round(a, 1),
            "b_mb_per_ktoken": round(b, 2),
            "d_mb_per_chunk_ktoken": round(d, 2),
            "points": len(pts),
            "ktokens_max": round(float(k.max()), 1),
            "max_over_estimate": round(float(over.max()), 3),
            "head_frames": head_frames,
        }
    return out


def nnls(a: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    """Non-negative least squares for a few columns: the best of the least-squares fits over
    every subset of columns whose coefficients are all >= 0 (scipy is not needed)."""
    import itertools

    best, best_res = np.zeros(a.shape[1]), float(np.sum(y**2))
    for r in range(1, a.shape[1] + 1):
        for cols in itertools.combinations(range(a.shape[1]), r):
            c, *_ = np.linalg.lstsq(a[:, cols], y, rcond=None)
            if np.all(c >= 0):
                res = float(np.sum((a[:, cols] @ c - y) ** 2))
                if res < best_res:
                    best, best_res = np.zeros(a.shape[1]), res
                    best[list(cols)] = c
    return best, best_res


def fit_time(points: list[dict]) -> dict[str, float]:
    pts = [p for p in points if "inference_s" in p]
    g = np.array([float(presets.preset_for(p["preset"]).params.rstrip("B")) for p in pts])
    k = np.array([p["ktokens"] for p in pts])
    t = np.array([p["inference_s"] for p in pts])
    q = np.array([p["q"] for p in pts])
    design = np.stack([np.ones_like(k), k, k**2, q], 1) * g[:, None]
    w = 1 / np.maximum(t, 1e-3)  # relative error: weight each point by 1 / its time
    coef, _ = nnls(design * w[:, None], t * w)
    pred = design @ coef
    rel = np.abs(pred - t) / t
    return {
        "c0_s_per_gparam": float(coef[0]),
        "c1_s_per_gparam_ktoken": float(coef[1]),
        "c2_s_per_gparam_ktoken2": float(coef[2]),
        "c3_s_per_gparam_q": float(coef[3]),
        "max_rel_error": round(float(rel.max()), 3),
        "median_rel_error": round(float(np.median(rel)), 3),
        "points": len(pts),
    }


def fit(points: list[dict], device: str, head_frames: int = CHUNK) -> dict:
    ok = [p for p in points if "error" not in p]
    model = {
        "worker_mb": fit_memory(ok, "rss_peak_mb", head_frames),
        "time": fit_time(ok),
        "parent_mb": dict(
            zip(
                ("a_mb", "b_per_result_mb", "e_per_frame_result_mb"),
                (
                    round(v, 2)
                    for v in envelope(
                        [
                            np.ones(len(ok)),
                            np.array([p["result_mb"] for p in ok]),
                            np.array([p["result_mb"] / p["frames"] for p in ok]),
                        ],
                        np.array([p["parent_growth_mb"] for p in ok]),
                    )
                ),
            )
        ),
    }
    if device == "cuda":
        model["gpu_mb"] = fit_memory(ok, "cuda_peak_reserved_mb", head_frames)
    return model


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grid", choices=sorted(GRIDS), default="cpu")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "guard_points.json"))
    ap.add_argument("--merge", default="", help="model file to write this device's fit into")
    ap.add_argument(
        "--merge-presets", action="store_true", help="with --merge: replace only the measured presets' memory lines"
    )
    ap.add_argument("--precisions", default="", help="CPU precisions to measure each point in, e.g. fp32,bf16")
    ap.add_argument(
        "--fit-only", default="", help="fit the points of this file (written by an earlier run) instead of measuring"
    )
    ap.add_argument(
        "--head-frames",
        type=int,
        default=CHUNK,
        help="frames the worker's DPT head decodes at once: 8 (DA3), 1 for the CPU forward's head_chunk",
    )
    ap.add_argument("--only-presets", default="", help="with --fit-only: fit only these presets' points (comma list)")
    args = ap.parse_args(argv)
    if args.fit_only:
        data = json.loads(Path(args.fit_only).read_text())
        only = {p for p in args.only_presets.split(",") if p}
        points = [p for p in data["points"] if not only or p["preset"] in only]
        for p in points:
            p.setdefault("q", p["frames"] * ktokens(1, p["process_res"], 640 / 480) ** 2)
        machine = data.get("machine") or {"device": points[0].get("device", "cpu")}
        return write_fit(points, machine, args.out, args.merge, args.merge_presets, args.head_frames)
    from da3_core.runner import Runner

    demo = os.environ.get("DA3_FIT_DEMO_ROOT") or str(Path(tempfile.gettempdir()) / "da3-fit-demo-weights")
    runner = Runner(start_timeout_s=300)
    try:
        info = tasks.worker_info.call(runner=runner)
        device = str(info.get("device", "cpu"))
        t0 = time.perf_counter()
        precisions = tuple(p for p in args.precisions.split(",") if p) or ("",)
        points = measure(args.grid, demo, runner, Path(args.out), precisions)
        took = time.perf_counter() - t0
    finally:
        runner.close()
    machine = {
        "device": device,
        "cpu": platform.processor() or platform.machine(),
        "cpu_model": bench_machine()["cpu"],
        "cpu_flags": cpu_flags(),
        "cores": os.cpu_count(),
        "gpu": info.get("cuda_device"),
        "torch": info.get("torch_version"),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "grid": args.grid,
        "seconds": round(took, 1),
    }
    return write_fit(points, machine, args.out, args.merge, args.merge_presets, args.head_frames)


def write_fit(
    points: list[dict], machine: dict, out: str, merge: str, presets_only: bool = False, head_frames: int = CHUNK
) -> int:
    device = machine["device"]
    model = fit(points, device, head_frames)
    model["measured_on"] = machine
    Path(out).write_text(json.dumps({"machine": machine, "points": points, "fit": model}, indent=1, default=float))
    print(json.dumps(model, indent=1), flush=True)
    if merge:
        path = Path(merge)
        whole = json.loads(path.read_text()) if path.exists() else {}
        if presets_only and device in whole:
            for key in ("worker_mb", "gpu_mb"):
                if key in model:
                    whole[device].setdefault(key, {}).update(model[key])
            whole[device].setdefault("memory_measured_on", {}).update({name: machine for name in model["worker_mb"]})
        else:
            whole[device] = model
        path.write_text(json.dumps(whole, indent=1) + "\n")
        print(f"wrote the {device} fit into {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
