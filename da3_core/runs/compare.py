"""Comparisons of two runs, and scores of a run against its reference, computed in a child process.

The Streamlit process never does the maths (`da3_core.scene.metrics` needs scipy and
seconds of CPU): `Comparer` holds one spawned child (a ``ProcessPoolExecutor`` of one
worker, as `da3_core.chunks.service.Assembler`) that runs `compute`. What crosses the
process boundary is typed: a `CompareRequest` in (folders and numbers only: the child reads
the runs from disk) and a `CompareSummary` out (the numbers, their definitions, a few
notes). The arrays the page draws (the depth-difference maps, the two clouds of the
overlay) are written by the child next to the summary, in the session folder::

    <session>/compare/<key>.json    the summary (`CompareSummary`)
    <session>/compare/<key>.npz     per-view numbers, difference maps, overlay clouds

so a reload, another browser or another page finds a finished comparison again. The cache
key names both runs (or the run and its reference) and the F1 threshold; a run's result
never changes once done, so a cached comparison stays true.

References (`reference_for`): a run of a bundled example (``source`` ``example:<key>``) is
scored against the example's true cameras and rendered depth
(`da3_core.scene.reference`); a run with known cameras (``cameras.npz``) or with a
reference saved by the evaluate-a-folder flow (``reference.npz``) against those cameras
(cameras only: there is no reference depth).
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import logging
import math
import multiprocessing
import re
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

log = logging.getLogger(__name__)

COMPARE_DIR = "compare"
REFERENCE_FILE = "reference.npz"
"""A run's reference cameras saved by the evaluate-a-folder flow (extrinsics (N, 4, 4),
intrinsics (N, 3, 3) in frame pixels, names, source), beside ``cameras.npz``."""
DEFAULT_THRESHOLD_PCT = 2.0
OVERLAY_POINTS = 30_000
"""Points per run in the overlay figure (a seeded sample; the numbers use up to `METRIC_POINTS`)."""
METRIC_POINTS = 200_000
DIFF_MAX_SIDE = 320
"""The difference maps are stored with their longer side at most this (every s-th pixel)."""

Kind = Literal["runs", "example", "cameras"]
POSE_KEYS = ("rot_err_deg", "trans_err_deg", "auc_3", "auc_30", "ate_rmse")


@dataclass(frozen=True)
class Reference:
    """What a run can be scored against.

    Attributes:
        kind: ``"example"`` (true cameras and depth) or ``"cameras"`` (cameras only).
        path: The example folder, or the ``.npz`` of cameras.
        label: For the page, e.g. ``"the Living room example's true cameras and depth"``.
    """

    kind: Kind
    path: str
    label: str


@dataclass(frozen=True)
class CompareRequest:
    """What the page asks the child (crosses the process boundary: plain values only).

    Attributes:
        kind: ``"runs"`` (B scored against A), ``"example"`` or ``"cameras"`` (run A scored
            against ``reference``).
        run_a: Run folder of A (the reference in ``"runs"``; the scored run otherwise).
        run_b: Run folder of B (``"runs"`` only, else "").
        threshold_pct: The F1 threshold as a percentage of the reference's median valid depth.
        out: The cache path without extension (``<session>/compare/<key>``).
        reference: The example folder or the cameras ``.npz`` (not for ``"runs"``).
    """

    kind: Kind
    run_a: str
    run_b: str
    threshold_pct: float
    out: str
    reference: str = ""

    def __post_init__(self) -> None:
        if self.kind not in ("runs", "example", "cameras"):
            raise ValueError(f"kind must be 'runs', 'example' or 'cameras', got {self.kind!r}")
        if not (math.isfinite(self.threshold_pct) and self.threshold_pct > 0):
            raise ValueError(f"threshold_pct must be a number > 0, got {self.threshold_pct}")
        if self.kind == "runs" and not self.run_b:
            raise ValueError("a comparison of two runs needs run_b")
        if self.kind != "runs" and not self.reference:
            raise ValueError(f"a score against {self.kind} needs the reference's path")

    @property
    def key(self) -> str:
        return Path(self.out).name


@dataclass(frozen=True)
class CompareSummary:
    """What the child sends back (and writes to ``<key>.json``).

    Attributes:
        key: The cache key.
        kind: As the request's.
        run_a / run_b: Run ids (``run_b`` "" for a reference score).
        reference_label: What A was scored against (``"runs"``: run A's id).
        numbers: Metric name -> value (names of `da3_core.scene.metrics.DEFINITIONS`).
        definitions: One line per metric name in ``numbers``.
        shared: The frames both sides hold, in the reference's order.
        alignment: How B was moved into A's world (``"camera centres"``, ``"points"``, ``"none"``).
        scale: The similarity's scale (B's units -> A's), 1.0 without alignment.
        threshold: The F1 threshold in the reference's units (None without clouds).
        threshold_pct: As asked.
        unit: The reference's depth unit (``"m"`` or ``"relative"``).
        seconds: Time the child took.
        notes: Plain sentences the page shows (what was not scored, and why).
    """

    key: str
    kind: str
    run_a: str
    run_b: str
    reference_label: str
    numbers: dict[str, float]
    definitions: dict[str, str]
    shared: tuple[str, ...]
    alignment: str
    scale: float
    threshold: float | None
    threshold_pct: float
    unit: str
    seconds: float
    notes: tuple[str, ...] = ()

    def table(self) -> list[dict[str, Any]]:
        """Rows ``{"metric", "value", "definition"}`` in `DISPLAY_ORDER`."""
        order = [k for k in DISPLAY_ORDER if k in self.numbers] + [k for k in self.numbers if k not in DISPLAY_ORDER]
        return [
            {"metric": LABELS.get(k, k), "value": self.numbers[k], "definition": self.definitions[k]} for k in order
        ]

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["shared"] = list(self.shared)
        d["notes"] = list(self.notes)
        return d

    @staticmethod
    def from_json(d: dict[str, Any]) -> CompareSummary:
        known = {k: v for k, v in d.items() if k in CompareSummary.__dataclass_fields__}
        known["shared"] = tuple(known.get("shared", ()))
        known["notes"] = tuple(known.get("notes", ()))
        return CompareSummary(**known)


DISPLAY_ORDER = (
    "abs_rel",
    "delta_1",
    "rot_err_deg",
    "trans_err_deg",
    "auc_3",
    "auc_30",
    "ate_rmse",
    "chamfer",
    "f1",
    "precision",
    "recall",
    "accuracy",
    "completeness",
)
LABELS = {
    "abs_rel": "AbsRel",
    "delta_1": "δ < 1.25",
    "rot_err_deg": "rotation error (°)",
    "trans_err_deg": "translation-direction error (°)",
    "auc_3": "AUC@3",
    "auc_30": "AUC@30",
    "ate_rmse": "camera-centre RMSE (ATE)",
    "chamfer": "Chamfer distance",
    "f1": "F1",
    "precision": "precision",
    "recall": "recall",
    "accuracy": "accuracy",
    "completeness": "completeness",
}


# --------------------------------------------------------------------------------------
# Cache paths and references (parent side: cheap, no scipy)
# --------------------------------------------------------------------------------------


def _pct_text(pct: float) -> str:
    return f"{pct:g}".replace(".", "p").replace("-", "m")


def cache_key(run_a: str, run_b: str | None, threshold_pct: float, reference: Kind | None = None) -> str:
    """``<run A>__<run B>__f<pct>``, or ``<run>__ref-<kind>__f<pct>`` for a reference score."""
    for rid in (run_a, run_b or ""):
        if rid and not re.fullmatch(r"[A-Za-z0-9_-]{1,80}", rid):
            raise ValueError(f"not a run id: {rid!r}")
    middle = run_b if reference is None else f"ref-{reference}"
    return f"{run_a}__{middle}__f{_pct_text(float(threshold_pct))}"


def cache_dir(session_dir: Path) -> Path:
    return Path(session_dir) / COMPARE_DIR


def read_cached(out: Path) -> CompareSummary | None:
    """The summary saved at ``out`` (``.json`` beside its ``.npz``), or None when absent or unreadable."""
    out = Path(out)
    try:
        data = json.loads(out.with_suffix(".json").read_text())
        if not out.with_suffix(".npz").is_file():
            return None
        return CompareSummary.from_json(data)
    except (OSError, ValueError, TypeError):
        return None


def read_arrays(out: Path) -> dict[str, np.ndarray]:
    """The arrays saved with a summary (``allow_pickle=False``); {} when absent."""
    try:
        with np.load(Path(out).with_suffix(".npz"), allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError):
        return {}


def reference_for(run_dir: Path, meta: Any, examples_root: Path) -> Reference | None:
    """What the run in ``run_dir`` can be scored against, or None.

    Order: a bundled example (``source`` ``example:<key>``, its ``scene.json`` present and
    naming every frame of the run), then a reference saved by the evaluate-a-folder flow,
    then the known cameras the run was given.
    """
    source = str(getattr(meta, "source", ""))
    if source.startswith("example:"):
        key = source.split(":", 1)[1]
        folder = Path(examples_root) / key
        scene = folder / "scene.json"
        if re.fullmatch(r"[A-Za-z0-9_-]{1,40}", key) and scene.is_file():
            try:
                data = json.loads(scene.read_text(encoding="utf-8"))
                files = {str(f["file"]) for f in data["frames"]}
            except (OSError, ValueError, KeyError, TypeError):
                files = set()
            if files and set(meta.names) <= files:
                title = str(data.get("title", key))
                return Reference("example", str(folder), f"the {title} example's true cameras and depth")
    saved = Path(run_dir) / REFERENCE_FILE
    if saved.is_file():
        return Reference("cameras", str(saved), "the reference cameras given with the folder (cameras only)")
    if getattr(meta, "cameras_file", ""):
        return Reference(
            "cameras",
            str(Path(run_dir) / meta.cameras_file),
            "the known cameras the run was given (cameras only; DA3 ran with them, so this checks they were kept)",
        )
    return None


def save_reference(
    run_dir: Path, extrinsics: np.ndarray, intrinsics: np.ndarray, names: list[str], source: str
) -> Path:
    """Write a run's reference cameras (``reference.npz``, atomically)."""
    path = Path(run_dir) / REFERENCE_FILE
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(
        tmp,
        extrinsics=np.asarray(extrinsics, np.float64),
        intrinsics=np.asarray(intrinsics, np.float64),
        names=np.asarray(list(names), dtype=str),
        source=np.asarray(source),
    )
    tmp.replace(path)
    return path


# --------------------------------------------------------------------------------------
# In the child
# --------------------------------------------------------------------------------------


def _run_arrays(run_dir: Path) -> tuple[Any, str, Any]:
    """(RunArrays, unit, meta) of a finished run. Only the arrays the scores need are read
    (a one-call run's ``result.npz`` also holds the images and confidence). Runs without
    poses (mono presets) get their assumed intrinsics and no extrinsics: depth is compared,
    cameras and clouds not."""
    from da3_core.runs import records
    from da3_core.scene import geometry
    from da3_core.scene.metrics import RunArrays

    meta = records.read_meta(run_dir)
    if meta.status != "done":
        raise ValueError(f"run {meta.run_id} is {meta.status}, not done: only finished runs can be compared")
    if records.is_chunked(run_dir):
        rec = records.load_result(run_dir, meta)
        depth, ext, ixt = np.asarray(rec.depth), rec.extrinsics, rec.intrinsics
        names, metric = tuple(rec.names), bool(rec.is_metric)
    else:
        with np.load(Path(run_dir) / records.RESULT_FILE, allow_pickle=False) as z:
            depth = z["depth"]
            ext = z["extrinsics"] if "extrinsics" in z.files else None
            ixt = z["intrinsics"] if "intrinsics" in z.files else None
            names = tuple(str(n) for n in z["names"]) if "names" in z.files else tuple(meta.names)
            metric = bool(z["is_metric"]) if "is_metric" in z.files else meta.is_metric
    unit = "m" if metric else "relative units"
    if ext is not None and ixt is not None:
        return RunArrays(depth, np.asarray(ixt), np.asarray(ext), names), unit, meta
    k = geometry.intrinsics_from_fov(int(depth.shape[1]), int(depth.shape[2]))
    return RunArrays(depth, np.repeat(k[None], len(depth), axis=0), None, names), unit, meta


def _threshold(depth: np.ndarray, pct: float) -> float:
    valid = np.isfinite(depth) & (depth > 0)
    med = float(np.median(depth[valid])) if valid.any() else 1.0
    return pct / 100.0 * med


def _cloud_sample(arrays: Any, index: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Up to ``n`` world points (float32) of the views ``index`` of ``arrays``, seeded uniform."""
    from da3_core.scene.metrics import unproject_view

    rng = np.random.default_rng(seed)
    depth = np.asarray(arrays.depth)[index]
    valid = np.isfinite(depth) & (depth > 0)
    total = int(valid.sum())
    if total == 0 or arrays.extrinsics is None:
        return np.zeros((0, 3), np.float32)
    flat = np.flatnonzero(valid.ravel())
    pick = np.zeros(valid.size, dtype=bool)
    pick[flat if total <= n else rng.choice(flat, size=n, replace=False)] = True
    pick = pick.reshape(valid.shape)
    ext = np.asarray(arrays.extrinsics)[index]
    k = np.asarray(arrays.intrinsics)[index]
    pts = [unproject_view(depth[j], k[j], ext[j][:3], pick[j]) for j in range(len(index))]
    return np.concatenate(pts).astype(np.float32)


def _write(out: Path, summary: CompareSummary, arrays: dict[str, np.ndarray]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp.npz")
    np.savez(tmp, **arrays)  # small (capped clouds, strided maps): not worth compressing
    tmp.replace(out.with_suffix(".npz"))
    tmp_json = out.with_name(out.name + ".tmp.json")
    tmp_json.write_text(json.dumps(summary.to_json(), indent=1))
    tmp_json.replace(out.with_suffix(".json"))  # last: a summary is only read with its arrays


def compute(request: CompareRequest) -> CompareSummary:
    """Run one comparison (in the child): read the runs, score, write the cache, return the summary.

    Raises:
        ValueError: A run not done, no shared frame, a reference that does not fit the run;
            each message names the run or the field.
    """
    from da3_core.scene import metrics as M

    t0 = time.perf_counter()
    out = Path(request.out)
    notes: list[str] = []
    if request.kind == "runs":
        a, unit, meta_a = _run_arrays(Path(request.run_a))
        b, _, meta_b = _run_arrays(Path(request.run_b))
        ia, _ = M.shared_frames(a.names, b.names)
        if ia.size == 0:
            raise ValueError(
                f"runs {meta_a.run_id} and {meta_b.run_id} share no frame (frames are matched by name: "
                f"{', '.join(a.names[:3])}… against {', '.join(b.names[:3])}…)"
            )
        if a.extrinsics is None or b.extrinsics is None:
            notes.append("One run has no cameras (a mono preset): only depth is compared.")
        reference_label = f"run {meta_a.run_id}"
        run_a, run_b = meta_a.run_id, meta_b.run_id
        ref = a
    elif request.kind == "example":
        from da3_core.scene.reference import example_truth

        b, _, meta_b = _run_arrays(Path(request.run_a))
        params = dict(meta_b.params)
        truth = example_truth(
            Path(request.reference),
            list(b.names),
            b.hw,
            params.get("process_res"),
            str(params.get("process_res_method", "upper_bound_resize")),
        )
        if truth.note:
            notes.append(truth.note[0].upper() + truth.note[1:] + ".")
        a = M.RunArrays(truth.depth, truth.intrinsics, truth.extrinsics, truth.names)
        unit = "m"
        if b.extrinsics is None:
            notes.append(f"Run {meta_b.run_id} has no cameras (a mono preset): only depth is scored.")
        reference_label = f"the {truth.key} example's truth"
        run_a, run_b = meta_b.run_id, ""
        ref = a
    else:
        return _score_cameras(request, t0)

    threshold = _threshold(np.asarray(ref.depth)[M.shared_frames(a.names, b.names)[0]], request.threshold_pct)
    c = M.compare_runs(a, b, f1_threshold=threshold, max_cloud_points=METRIC_POINTS)
    numbers = {k: float(v) for k, v in c.numbers().items()}
    stride = max(1, math.ceil(max(a.hw) / DIFF_MAX_SIDE))
    arrays: dict[str, np.ndarray] = {
        "names": np.asarray(c.shared, dtype=str),
        "per_view_abs_rel": c.depth.per_view_abs_rel,
        "per_view_delta_1": c.depth.per_view_delta_1,
        "per_view_scale": c.depth.per_view_scale,
        "n_pixels": c.depth.n_pixels,
        "depth_diff": np.ascontiguousarray(c.depth_diff[:, ::stride, ::stride], dtype=np.float32),
        "diff_stride": np.asarray(stride),
    }
    if c.cloud is not None:
        arrays["cloud_a"] = _cloud_sample(a, c.index_a, OVERLAY_POINTS, 1)
        arrays["cloud_b"] = c.sim.apply(_cloud_sample(b, c.index_b, OVERLAY_POINTS, 2).astype(np.float64)).astype(
            np.float32
        )
    if c.pose is None and a.extrinsics is not None and b.extrinsics is not None:
        notes.append("Only one frame is shared: no camera pairs to score.")
    summary = CompareSummary(
        key=request.key,
        kind=request.kind,
        run_a=run_a,
        run_b=run_b,
        reference_label=reference_label,
        numbers=numbers,
        definitions={k: M.DEFINITIONS[k] for k in numbers},
        shared=c.shared,
        alignment=c.alignment,
        scale=float(c.sim.scale),
        threshold=None if c.cloud is None else float(c.cloud.threshold),
        threshold_pct=float(request.threshold_pct),
        unit=unit,
        seconds=time.perf_counter() - t0,
        notes=tuple(notes),
    )
    _write(out, summary, arrays)
    return summary


def _score_cameras(request: CompareRequest, t0: float) -> CompareSummary:
    """A run's cameras against reference cameras (pose metrics only)."""
    from da3_core.scene import metrics as M

    b, _, meta = _run_arrays(Path(request.run_a))
    with np.load(request.reference, allow_pickle=False) as z:
        ext = np.asarray(z["extrinsics"], np.float64)
        names = tuple(str(n) for n in z["names"])
        source = str(z["source"]) if "source" in z.files else "given"
    if b.extrinsics is None:
        raise ValueError(
            f"run {meta.run_id} has no cameras (a mono preset): there is nothing to score against {source}"
        )
    ok = np.isfinite(ext.reshape(len(ext), -1)).all(axis=1)
    ref_names = tuple(n for n, good in zip(names, ok) if good)
    ia, ib = M.shared_frames(ref_names, b.names)
    if ia.size < 2:
        raise ValueError(
            f"run {meta.run_id} shares {ia.size} frame(s) with the {source} cameras (matched by name): at least 2 are needed"
        )
    ref_ext = ext[ok][ia]
    pose = M.pose_metrics(ref_ext, np.asarray(b.extrinsics)[ib])
    numbers = {
        "rot_err_deg": pose.rot_err_deg,
        "trans_err_deg": pose.trans_err_deg,
        "auc_3": pose.auc_3,
        "auc_30": pose.auc_30,
        "ate_rmse": pose.ate_rmse,
    }
    summary = CompareSummary(
        key=request.key,
        kind="cameras",
        run_a=meta.run_id,
        run_b="",
        reference_label=f"the {source} cameras",
        numbers={k: float(v) for k, v in numbers.items()},
        definitions={k: M.DEFINITIONS[k] for k in numbers},
        shared=tuple(ref_names[i] for i in ia),
        alignment="none (relative poses)",
        scale=1.0,
        threshold=None,
        threshold_pct=float(request.threshold_pct),
        unit="reference units",
        seconds=time.perf_counter() - t0,
        notes=("Cameras only: a camera file holds no depth, so depth and clouds are not scored.",),
    )
    _write(
        Path(request.out),
        summary,
        {"per_pair_rot_deg": pose.per_pair_rot_deg, "per_pair_trans_deg": pose.per_pair_trans_deg},
    )
    return summary


# --------------------------------------------------------------------------------------
# The child process and its jobs (parent side)
# --------------------------------------------------------------------------------------


@dataclass
class CompareJob:
    """One comparison this server runs or ran (parent side).

    Attributes:
        request: What was asked.
        future: The child's future.
        submitted_at / finished_at: Monotonic times.
    """

    request: CompareRequest
    future: cf.Future
    submitted_at: float = field(default_factory=time.monotonic)
    finished_at: float | None = None

    @property
    def key(self) -> str:
        return self.request.key

    @property
    def pending(self) -> bool:
        return not self.future.done()

    @property
    def line(self) -> str:
        """One line for the page: queued / computing (seconds) / done / failed."""
        waited = time.monotonic() - self.submitted_at
        if self.future.cancelled():
            return "Cancelled."
        if not self.future.done():
            verb = "Computing in a child process" if self.future.running() else "Waiting for the child process"
            return f"{verb}… {waited:.1f} s"
        err = self.error
        return f"Failed: {err}" if err else f"Done in {waited:.1f} s."

    @property
    def error(self) -> str:
        """The error message ("" while running or when it succeeded)."""
        if not self.future.done() or self.future.cancelled():
            return ""
        exc = self.future.exception()
        if exc is None:
            return ""
        if isinstance(exc, cf.process.BrokenProcessPool):
            return "the comparison's child process died (out of memory?); try again, a new one starts"
        return f"{type(exc).__name__}: {exc}"

    def summary(self) -> CompareSummary | None:
        if not self.future.done() or self.future.cancelled() or self.future.exception() is not None:
            return None
        result = self.future.result()
        return result if isinstance(result, CompareSummary) else None


def _in_child(request: CompareRequest) -> CompareSummary:
    return compute(request)


class Comparer:
    """One spawned child process that runs `compute` for every session of the server, one
    comparison at a time (numpy and scipy only). A crashed child is replaced on the next
    submit. Jobs are found again by cache key; finished ones are also on disk."""

    def __init__(self, keep: int = 32) -> None:
        self._pool: cf.ProcessPoolExecutor | None = None
        self._lock = threading.Lock()
        self._jobs: dict[str, CompareJob] = {}
        self._keep = keep

    def _executor(self) -> cf.ProcessPoolExecutor:
        if self._pool is None:
            self._pool = cf.ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
        return self._pool

    def submit(self, request: CompareRequest) -> CompareJob:
        """Queue ``request`` (returns at once); a job for the same key still pending is returned instead."""
        from da3_core.runner.backends.process import _spawn_without_main_module

        with self._lock:
            held = self._jobs.get(request.out)
            if held is not None and held.pending:
                return held
            # Spawned with the main module trimmed: in the Streamlit server __main__ is the
            # page script being run, which the child must not re-run (see chunks' Assembler).
            with _spawn_without_main_module():
                try:
                    future = self._executor().submit(_in_child, request)
                except (cf.process.BrokenProcessPool, RuntimeError):
                    self._pool = None
                    future = self._executor().submit(_in_child, request)
            job = CompareJob(request, future)
            self._jobs[request.out] = job
            finished = [k for k, j in self._jobs.items() if not j.pending]
            for k in finished[: max(0, len(self._jobs) - self._keep)]:
                self._jobs.pop(k)
        future.add_done_callback(lambda _f: self._ended(job))
        log.info("comparison %s queued", request.key)
        return job

    def _ended(self, job: CompareJob) -> None:
        job.finished_at = time.monotonic()
        if job.error:
            log.warning("comparison %s failed: %s", job.key, job.error)
            if "child process died" in job.error:
                with self._lock:
                    self._pool = None
        else:
            log.info("comparison %s done in %.2f s", job.key, job.finished_at - job.submitted_at)

    def job(self, out: Path | str) -> CompareJob | None:
        with self._lock:
            return self._jobs.get(str(out))

    def cancel(self, out: Path | str) -> bool:
        """Cancel a job still waiting for the child (a running one finishes: seconds)."""
        job = self.job(out)
        return bool(job is not None and job.future.cancel())

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool = None


__all__ = [
    "COMPARE_DIR",
    "DEFAULT_THRESHOLD_PCT",
    "REFERENCE_FILE",
    "CompareJob",
    "CompareRequest",
    "CompareSummary",
    "Comparer",
    "Reference",
    "cache_dir",
    "cache_key",
    "compute",
    "read_arrays",
    "read_cached",
    "reference_for",
    "save_reference",
]
