"""Export jobs (COLMAP model, 3DGS PLY, novel-view video): their estimates, their state saved in
the run folder (``exports/.<kind>.job.json``, so a reload finds them), and their status for the page.
The run service (`da3_core.runs.service.RunService.submit_export`) submits and watches them.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from da3_core.contract import Reconstruction
from da3_core.runner import Job
from da3_core.runs import guard, records
from da3_core.runs.jobs import OneJob, RunOutcome, _read_events, job_clock, queued_text, took_text

EXPORT_TITLES = {
    "colmap": "COLMAP model",
    "gs_ply": "3DGS PLY",
    "gs_video": "novel-view video",
    "mesh": "meshes",
    "features": "feature maps",
}


# What each kind leaves in exports/ when done (a folder for COLMAP, a file for the others).
EXPORT_TARGETS = {
    "colmap": "colmap",
    "gs_ply": "gs_ply/0000.ply",
    "gs_video": "gs_video.mp4",
    "mesh": "mesh",
    "features": "features.npz",
}


EXPORT_RECORD = ".{kind}.job.json"  # the job's state in exports/ (hidden: not offered as a download)


INTERRUPTED_EXPORT = (
    "interrupted: the server stopped while this export was running; nothing half-written was kept, make it again"
)


# What the estimates rest on. COLMAP and 3DGS PLY: DA3's exporters measured in this project's
# worker on a 2-core shared CPU (3 views of 48x64, best and worst of repeated runs): the COLMAP
# exporter adds every kept point to pycolmap one by one in Python, 20-50 us and 83 bytes on
# disk per point; the PLY writer took 8-35 us per Gaussian. The video: gsplat compiled its
# kernels in 69.5 s and 86 s on two H100 servers (../shared/design/GPU_NOTES.md), once per
# worker, and rasterised a view in 0.023 s there; x264 encoding was not measured.
COLMAP_S_PER_POINT = 40e-6


COLMAP_BYTES_PER_POINT = 83


GS_PLY_S_PER_GAUSSIAN = 20e-6


GSPLAT_COMPILE_S = 86.0


GSPLAT_S_PER_FRAME = 0.023


@dataclass(frozen=True)
class ExportEstimate:
    """What an export job is expected to take, and what the figures rest on.

    Attributes:
        budget_s: The task's budget: the worker is stopped once the job has run this long.
        seconds: Expected seconds of work once a worker takes it.
        memory_mb: Expected memory in the worker for the job's data (MB).
        output_mb: Expected size of what it writes (MB), or None when not known.
        basis: What the figures rest on, in a sentence.
    """

    budget_s: float
    seconds: float
    memory_mb: float
    output_mb: float | None
    basis: str

    def note(self) -> str:
        """One line for the page, e.g. ``Estimate: about 3 s, 40 MB of worker memory, writes
        about 5 MB; stopped after 10 min. Rests on: ...``."""
        out = f", writes about {_mb(self.output_mb)}" if self.output_mb is not None else ""
        return (
            f"Estimate: about {guard.duration(self.seconds)}, {_mb(self.memory_mb)} of worker memory{out}; "
            f"stopped after {guard.duration(self.budget_s)}. Rests on: {self.basis}"
        )


def _mb(mb: float) -> str:
    return f"{mb / 1024:.1f} GB" if mb >= 1024 else f"{mb:.0f} MB" if mb >= 10 else f"{max(mb, 0.1):.1f} MB"


def rec_mb(rec: Reconstruction) -> float:
    """MB of a reconstruction's arrays (what is sent to the worker for an export)."""
    arrays = [rec.depth, rec.conf, rec.extrinsics, rec.intrinsics, rec.images, rec.sky]
    if rec.gaussians is not None:
        g = rec.gaussians
        arrays += [g.means, g.scales, g.rotations, g.harmonics, g.opacities]
    return sum(int(np.asarray(a).nbytes) for a in arrays if a is not None) / 2**20


def gs_video_frames(n_views: int, trajectory: str) -> int:
    """The number of frames DA3's trajectory renders (`run_renderer_in_chunk_w_trj_mode`'s rules)."""
    if trajectory in ("wander", "dolly_zoom") or n_views < 2:
        return 120
    if trajectory in ("original", "smooth"):
        return n_views
    inter = 8
    if (n_views - 1) * inter > 24 * 18:
        inter = max(1, 24 * 10 // (n_views - 1))
    if (n_views - 1) * inter < 24 * 2:
        inter = max(1, 24 * 2 // (n_views - 1))
    frames = (n_views - 1) * (inter - 1) + 1 if inter > 2 else n_views
    if trajectory == "extend":
        frames += 2 * max(36, min(60, frames // 4))
    return frames


def export_estimate(
    kind: str, rec: Reconstruction, budget_s: float, options: dict[str, Any] | None = None
) -> ExportEstimate:
    """The estimate of an export job of ``kind`` (see the constants above for its basis).

    Memory: the run's arrays three times over (the copy sent to the worker, DA3's Prediction
    built from copies, and the exporter's own arrays); pycolmap's and gsplat's own objects
    are not counted."""
    options = options or {}
    arrays = rec_mb(rec)
    n, h, w = rec.depth.shape
    if kind == "colmap":
        kept = n * h * w * (1.0 - float(options.get("conf_percentile", 40.0)) / 100.0)
        return ExportEstimate(
            budget_s,
            1.0 + kept * COLMAP_S_PER_POINT,
            3 * arrays,
            kept * COLMAP_BYTES_PER_POINT / 2**20,
            f"{int(kept):,} points kept of {n * h * w:,} pixels; DA3's exporter measured at 20-50 us and "
            f"{COLMAP_BYTES_PER_POINT} bytes per point on a 2-core CPU (it adds the points one by one).",
        )
    if kind == "gs_ply":
        if rec.gaussians is None:
            raise ValueError("this run has no 3D Gaussians")
        g = len(rec.gaussians.means)
        floats = 11 + 3 * int(np.prod(rec.gaussians.harmonics.shape[2:]) or 1)  # xyz, opacity, scale, rotation, colour
        return ExportEstimate(
            budget_s,
            1.0 + g * GS_PLY_S_PER_GAUSSIAN,
            3 * arrays,
            g * floats * 4 / 2**20,
            f"{g:,} Gaussians of {floats} floats each; DA3's writer measured at 8-35 us per Gaussian on a 2-core CPU.",
        )
    if kind == "gs_video":
        frames = gs_video_frames(n, str(options.get("trajectory", "interpolate_smooth")))
        seconds = GSPLAT_COMPILE_S + frames * GSPLAT_S_PER_FRAME
        return ExportEstimate(
            budget_s,
            seconds,
            3 * arrays + frames * h * w * 3 * 2 / 2**20,
            None,
            f"about {frames} frames of {w}x{h}; the budget covers gsplat's one-time kernel compile "
            f"(69.5 s and {GSPLAT_COMPILE_S:.0f} s measured on H100s, counted here: the first video of a "
            f"worker compiles) plus {GSPLAT_S_PER_FRAME} s per rendered view measured there; x264 "
            f"encoding not measured.",
        )
    if kind == "mesh":
        from da3_core.scene import mesh, mesh_build

        return ExportEstimate(
            budget_s,
            mesh_build.estimate_seconds(rec),
            mesh_build.estimate_mb(rec),
            None,
            f"{n} views of {w}x{h}; a TSDF grid of at most {mesh.MAX_VOXELS:,} voxels (5 bytes each) integrated "
            f"in blocks near the surface, then marching cubes; fusion measured at about "
            f"{mesh_build.FUSE_S_PER_MPX:g} s per million pixels on a 2-core CPU.",
        )
    if kind == "features":
        from da3_core.scene import features

        layers = tuple(options.get("layers") or ())
        size = features.feature_mb(n, (h, w), rec.preset, len(layers))
        forward = float(rec.timings.get("inference", 0.0) or 0.0)
        return ExportEstimate(
            budget_s,
            float(rec.timings.get("load_model", 0.0) or 0.0) + forward + 1.0,
            3 * arrays + 2 * (size or 0.0),
            size,
            f"one more forward pass of {rec.preset} on the run's {n} frames (the run's took {forward:.1f} s); "
            f"{len(layers)} layer(s) of float16 features"
            + ("." if size is not None else " (size unknown for this checkpoint)."),
        )
    raise ValueError(f"unknown export {kind!r}: one of {', '.join(EXPORT_TITLES)}")


@dataclass(frozen=True)
class ExportStatus:
    """What a page shows of an export job: from the job while the server holds it, else from
    its record in the run's exports/ folder.

    Attributes:
        kind: ``"colmap"``, ``"gs_ply"`` or ``"gs_video"``.
        status: ``"queued"``, ``"running"``, ``"done"``, ``"failed"`` or ``"cancelled"``.
        line: The live status line (queue place or stage, time).
        fraction: Progress in [0, 1].
        message: Why it did not finish ("" when done).
        traceback: The worker-side traceback, while the server holds the job.
        files: What it wrote, relative to exports/ (when done).
        info: What the task returned besides (the video's frames, size, seconds).
        total_s / waiting_s: Seconds from submission to the end, and of those in the queue.
        estimate: The estimate's note, as shown when it was submitted.
        cancel_requested: Cancel was asked and the job has not ended yet.
    """

    kind: str
    status: str
    line: str = ""
    fraction: float = 0.0
    message: str = ""
    traceback: str = ""
    files: tuple[str, ...] = ()
    info: dict[str, Any] = field(default_factory=dict)
    total_s: float | None = None
    waiting_s: float | None = None
    estimate: str = ""
    cancel_requested: bool = False

    @property
    def title(self) -> str:
        return EXPORT_TITLES[self.kind]

    @property
    def pending(self) -> bool:
        return self.status in ("queued", "running")

    @property
    def ok(self) -> bool:
        return self.status == "done"

    def took(self) -> str:
        """``6.1 s (4.0 s running, 2.1 s waiting)`` (see `took_text`)."""
        return took_text(self.total_s, self.waiting_s)


@dataclass
class ExportJob(OneJob):
    """An export job of this server (same surface as `ActiveRun`: run_id, run_dir,
    submitted_at, finished, outcome, pump, status_line, fraction, cancel, cancel_requested).

    Attributes:
        kind: ``"colmap"``, ``"gs_ply"`` or ``"gs_video"``.
        run_dir: The run whose result it exports (into ``run_dir/exports``).
        job: The runner's job.
        estimate: The estimate it was submitted with.
        options: The export's options (confidence percentile, trajectory, fps...).
        stage / fraction / position / ahead: What it last reported.
        outcome: Set once the record in exports/ says how it ended.
        files: What it wrote, relative to exports/ (when done).
        info: What the task returned besides.
    """

    kind: str
    run_dir: Path
    job: Job
    estimate: ExportEstimate
    options: dict[str, Any] = field(default_factory=dict)
    stage: str = "queued"
    fraction: float = 0.0
    position: int | None = None
    ahead: int | None = None
    outcome: RunOutcome | None = None
    files: tuple[str, ...] = ()
    info: dict[str, Any] = field(default_factory=dict)
    finished_at: float | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def title(self) -> str:
        return EXPORT_TITLES[self.kind]

    @property
    def run_id(self) -> str:
        return self.run_dir.name

    def pump(self) -> None:
        """Read the job's new events into the display fields.

        Unlike a run's, an export job is not touched: it is not abandoned when its page
        closes or the user goes to another page; its budget bounds it, and its file waits in
        the run folder for the next visit."""
        with self._lock:
            _read_events(self, self.job)

    def status_line(self) -> str:
        """E.g. ``Queued: position 1 (1 ahead) · COLMAP model · waiting 2.1 s`` or
        ``Making the COLMAP model: writing the COLMAP model (3 views) · 1.2 s``."""
        if self.job.started_at is None:
            return f"{queued_text(self.position, self.ahead)} · {self.title} · waiting {self.elapsed_s:.1f} s"
        return f"Making the {self.title}: {self.stage} · {self.elapsed_s:.1f} s"

    def snapshot(self) -> ExportStatus:
        """Its state for a page."""
        clock = job_clock(self.job)
        outcome = self.outcome
        if outcome is None:
            status = "queued" if self.job.started_at is None else "running"
            waiting = (self.job.started_at or time.monotonic()) - self.job.submitted_at
            return ExportStatus(
                self.kind,
                status,
                self.status_line(),
                self.fraction,
                estimate=self.estimate.note(),
                total_s=time.monotonic() - self.job.submitted_at,
                waiting_s=waiting,
                cancel_requested=self.cancel_requested,
            )
        return ExportStatus(
            self.kind,
            outcome.status,
            "",
            1.0 if outcome.ok else self.fraction,
            outcome.message,
            outcome.traceback,
            self.files,
            dict(self.info),
            clock[0] if clock else None,
            clock[1] if clock else None,
            self.estimate.note(),
        )


def export_target(run_dir: Path, kind: str) -> Path:
    """Where an export of ``kind`` of the run in ``run_dir`` lands (folder or file)."""
    return Path(run_dir) / records.EXPORTS_DIR / EXPORT_TARGETS[kind]


def _record_path(run_dir: Path, kind: str) -> Path:
    return Path(run_dir) / records.EXPORTS_DIR / EXPORT_RECORD.format(kind=kind)


def read_export_record(run_dir: Path, kind: str) -> dict[str, Any] | None:
    """The record of the last export of ``kind`` in the run folder, or None (none, unreadable)."""
    try:
        data = json.loads(_record_path(run_dir, kind).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write_export_record(run_dir: Path, kind: str, record: dict[str, Any]) -> None:
    path = _record_path(run_dir, kind)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=2))
    os.replace(tmp, path)


def _status_from_record(kind: str, record: dict[str, Any]) -> ExportStatus:
    status = str(record.get("status", "failed"))
    return ExportStatus(
        kind,
        "failed" if status == "pending" else status,
        message=str(record.get("message", "")),
        traceback=str(record.get("traceback") or ""),
        files=tuple(str(f) for f in record.get("files") or ()),
        info=dict(record.get("info") or {}),
        total_s=record.get("total_s"),
        waiting_s=record.get("waiting_s"),
        estimate=str(record.get("estimate", "")),
        fraction=1.0 if status == "done" else 0.0,
    )


def _export_files(run_dir: Path, value: Any) -> tuple[tuple[str, ...], dict[str, Any]]:
    """(files relative to exports/, other figures) from an export task's return value: a
    list of paths (COLMAP), a path (3DGS PLY) or a dict with ``path`` (the video) or
    ``paths`` (the meshes)."""
    info: dict[str, Any] = {}
    if isinstance(value, dict):
        info = {k: v for k, v in value.items() if k not in ("path", "paths")}
        paths = list(value.get("paths") or ()) + ([value["path"]] if value.get("path") else [])
    elif isinstance(value, (list, tuple)):
        paths = list(value)
    else:
        paths = [value]
    exports = (Path(run_dir) / records.EXPORTS_DIR).resolve()
    files = []
    for p in paths:
        path = Path(str(p)).resolve()
        files.append(str(path.relative_to(exports)) if path.is_relative_to(exports) else path.name)
    return tuple(files), info


def _land_export(ej: ExportJob, value: Any) -> Any:
    """What the parent writes itself from a task's value: feature maps (`FeatureMaps`, float16
    numpy that crossed the contract) go to exports/features.npz, written atomically; the
    value becomes ``{"path", "layers", "views", "mb"}``. Other values pass unchanged."""
    from da3_core.contract import FeatureMaps

    if not isinstance(value, FeatureMaps):
        return value
    from da3_core.atomic import atomic_file
    from da3_core.scene.features import features_npz_bytes

    target = export_target(ej.run_dir, "features")
    data = features_npz_bytes(value)
    with atomic_file(target) as partial:
        partial.write_bytes(data)
    return {
        "path": str(target),
        "layers": list(value.layers),
        "views": value.n_views,
        "grid": list(value.maps[0].shape[1:3]) if value.maps else [],
        "channels": int(value.maps[0].shape[3]) if value.maps else 0,
        "mb": round(len(data) / 2**20, 2),
        "preset": value.preset,
    }


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=lambda o: o.item() if hasattr(o, "item") else str(o)))
