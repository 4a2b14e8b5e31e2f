"""Runs on disk: each run in its own folder, its inputs saved before the model runs and its
result saved after, so nothing is lost on a rerun, a page switch, a crash or a reload.

Layout of ``<workspace>/sessions/<session>/run-.../``::

    input/0000.jpg ...   the frames as the model received them (generated names)
    cameras.npz          known cameras given with the frames, if any (`save_cameras`)
    result.npz           arrays by DA3's field names (`da3_core.scene.export.npz_arrays`) + gaussians
    run.json             `RunMeta`: names, model, parameters, timings, status, error
    exports/             files made on the Exports page

Everything is read back with ``allow_pickle=False``.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
from PIL import Image

from da3_core.contract import Gaussians, ModelKind, ModelSpec, Reconstruction
from da3_core.runs import workspace
from da3_core.scene import export

RESULT_FILE = "result.npz"
META_FILE = "run.json"
CAMERAS_FILE = "cameras.npz"
EXPORTS_DIR = "exports"
_GS_FIELDS = ("means", "scales", "rotations", "harmonics", "opacities")


@dataclass(frozen=True)
class RunMeta:
    """What a run folder says about its run (``run.json``).

    Attributes:
        run_id: The folder name (``run-YYYYmmdd-HHMMSS-xxxxxx``).
        created: Unix time the run was created.
        names: Display names of the frames, input order.
        source: Where the frames came from (``"upload"``, ``"video"``, ``"example:<key>"``).
        model_kind / model_ref: The `ModelSpec`.
        params: Run parameters (process_res, method, reference view, ...).
        status: ``"pending"``, ``"done"``, ``"failed"`` or ``"cancelled"``.
        error: The error message when failed.
        preset / device / is_metric / scale_factor / timings: Copied from the result.
        input_files: Saved frames, relative to the run folder.
        cameras_file: Known cameras saved with the frames (relative), or "" (none were
            given; also every run saved before known cameras existed).
    """

    run_id: str
    created: float
    names: list[str]
    source: str
    model_kind: str
    model_ref: str
    params: dict[str, Any] = field(default_factory=dict)
    status: str = "pending"
    error: str = ""
    preset: str = ""
    device: str = ""
    is_metric: bool = False
    scale_factor: float | None = None
    timings: dict[str, float] = field(default_factory=dict)
    input_files: list[str] = field(default_factory=list)
    cameras_file: str = ""

    @property
    def model(self) -> ModelSpec:
        # run.json holds text: ModelSpec refuses a kind other than the three.
        return ModelSpec(cast(ModelKind, self.model_kind), self.model_ref)

    def label(self) -> str:
        """Short text for run pickers, e.g. ``14:02:11 · 4 views · da3-small`` (``· untrained``,
        ``· failed`` when so)."""
        when = time.strftime("%H:%M:%S", time.localtime(self.created))
        what = self.preset or self.model_ref.rsplit("/", 1)[-1]
        extra = (" · untrained" if self.model_kind == "demo" else "") + (
            "" if self.status == "done" else f" · {self.status}"
        )
        return f"{when} · {len(self.names)} views · {what}{extra}"


def write_meta(run_dir: Path, meta: RunMeta) -> None:
    tmp = run_dir / (META_FILE + ".tmp")
    tmp.write_text(json.dumps(asdict(meta), indent=2))
    tmp.replace(run_dir / META_FILE)


def read_meta(run_dir: Path) -> RunMeta:
    """Read ``run.json``.

    Raises:
        FileNotFoundError / ValueError: Missing or unreadable metadata.
    """
    data = json.loads((run_dir / META_FILE).read_text())
    known = {k: v for k, v in data.items() if k in RunMeta.__dataclass_fields__}
    return RunMeta(**known)


def start_run(
    session_dir: Path,
    images: Sequence[np.ndarray],
    names: Sequence[str],
    source: str,
    model: ModelSpec,
    params: dict[str, Any],
    cameras: tuple[np.ndarray, np.ndarray, str] | None = None,
) -> tuple[Path, RunMeta]:
    """Create a run folder and save its frames and metadata before anything runs.

    Args:
        session_dir: The session's folder.
        images: Frames, (H, W, 3) uint8 RGB each.
        names: Their display names.
        source: Where they came from.
        model: The weights asked for.
        params: The run parameters.
        cameras: Known cameras given with the frames: (extrinsics (N, 4, 4), intrinsics
            (N, 3, 3) in frame pixels, source), saved to ``cameras.npz``; or None.

    Returns:
        The run folder and its metadata (status ``"pending"``).
    """
    run_dir = workspace.new_run(session_dir)
    files = []
    for i, img in enumerate(images):
        # JPEG q95: a twentieth of PNG's size for photos; the model got the exact arrays.
        buf = io.BytesIO()
        Image.fromarray(np.asarray(img)).save(buf, format="JPEG", quality=95, subsampling=0)
        files.append(str(workspace.save_upload(run_dir, i, buf.getvalue(), "jpg").relative_to(run_dir)))
    cameras_file = ""
    if cameras is not None:
        ext, ixt, camera_source = cameras
        np.savez(
            run_dir / CAMERAS_FILE,
            extrinsics=np.asarray(ext, np.float64),
            intrinsics=np.asarray(ixt, np.float64),
            names=np.asarray(list(names), dtype=str),
            source=np.asarray(camera_source),
        )
        cameras_file = CAMERAS_FILE
    meta = RunMeta(
        run_id=run_dir.name,
        created=time.time(),
        names=list(names),
        source=source,
        model_kind=model.kind,
        model_ref=model.ref,
        params=dict(params),
        input_files=files,
        cameras_file=cameras_file,
    )
    write_meta(run_dir, meta)
    return run_dir, meta


def load_cameras(run_dir: Path, meta: RunMeta) -> tuple[np.ndarray, np.ndarray, str] | None:
    """The known cameras a run was started with (extrinsics, intrinsics, source), or None."""
    if not meta.cameras_file:
        return None
    with np.load(workspace.safe_join(run_dir, meta.cameras_file), allow_pickle=False) as z:
        return z["extrinsics"], z["intrinsics"], str(z["source"])


def finish_run(run_dir: Path, meta: RunMeta, rec: Reconstruction) -> RunMeta:
    """Save the result and mark the run done."""
    arrays = export.npz_arrays(rec)
    if rec.gaussians is not None:
        arrays.update({f"gaussians_{k}": getattr(rec.gaussians, k) for k in _GS_FIELDS})
    tmp = run_dir / (RESULT_FILE + ".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    tmp.replace(run_dir / RESULT_FILE)
    done = RunMeta(
        **{
            **asdict(meta),
            "status": "done",
            "error": "",
            "preset": rec.preset,
            "device": rec.device,
            "is_metric": bool(rec.is_metric),
            "scale_factor": rec.scale_factor,
            "timings": {k: float(v) for k, v in rec.timings.items()},
            "params": {**meta.params, **_jsonable(rec.params)},
        }
    )
    write_meta(run_dir, done)
    return done


def finish_chunked(run_dir: Path, meta: RunMeta, summary: dict[str, Any]) -> RunMeta:
    """Mark a chunked run done: its result is ``result/`` (`da3_core.chunks.store`), already
    written; ``summary`` gives preset, device, is_metric, scale_factor, timings and the
    ``chunked`` figures (saved in ``params["chunked"]``)."""
    done = RunMeta(
        **{
            **asdict(meta),
            "status": "done",
            "error": "",
            "preset": str(summary.get("preset", "")),
            "device": str(summary.get("device", "")),
            "is_metric": bool(summary.get("is_metric", False)),
            "scale_factor": summary.get("scale_factor"),
            "timings": {k: float(v) for k, v in (summary.get("timings") or {}).items()},
            "params": {**meta.params, "chunked": _jsonable(summary.get("chunked") or {})},
        }
    )
    write_meta(run_dir, done)
    return done


def is_chunked(run_dir: Path) -> bool:
    """True for the folder of a chunked run (`da3_core.chunks`)."""
    from da3_core.chunks import store

    return store.is_chunked(run_dir)


def fail_run(run_dir: Path, meta: RunMeta, error: str, status: str = "failed") -> RunMeta:
    """Mark the run ``failed`` (or ``cancelled``) with the reason ``error``; its inputs stay."""
    if status not in ("failed", "cancelled"):
        raise ValueError(f"a run that did not finish is 'failed' or 'cancelled', not {status!r}")
    failed = RunMeta(**{**asdict(meta), "status": status, "error": error})
    write_meta(run_dir, failed)
    return failed


def load_result(run_dir: Path, meta: RunMeta | None = None) -> Reconstruction:
    """Read a finished run back into a `Reconstruction` (``allow_pickle=False``).

    Raises:
        FileNotFoundError: The run has no result (pending or failed).
    """
    meta = meta or read_meta(run_dir)
    if is_chunked(run_dir):
        from da3_core.chunks import store

        # Memory-mapped, read-only: the server's memory does not grow with the frames.
        return store.load_result(
            run_dir,
            list(meta.names),
            meta.model,
            params=dict(meta.params),
            timings=dict(meta.timings),
            ready_only=meta.status != "done",
        )
    with np.load(run_dir / RESULT_FILE, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    gaussians = None
    if all(f"gaussians_{k}" in arrays for k in _GS_FIELDS):
        gaussians = Gaussians(*(arrays[f"gaussians_{k}"] for k in _GS_FIELDS))
    return Reconstruction(
        depth=arrays["depth"],
        conf=arrays.get("conf"),
        extrinsics=arrays.get("extrinsics"),
        intrinsics=arrays.get("intrinsics"),
        images=arrays["image"],
        sky=arrays.get("sky"),
        is_metric=bool(arrays["is_metric"]) if "is_metric" in arrays else meta.is_metric,
        scale_factor=meta.scale_factor,
        gaussians=gaussians,
        names=tuple(str(n) for n in arrays["names"]) if "names" in arrays else tuple(meta.names),
        model=meta.model,
        preset=meta.preset,
        device=meta.device,
        timings=dict(meta.timings),
        params=dict(meta.params),
    )


def list_session_runs(session_dir: Path) -> list[RunMeta]:
    """The session's runs with readable metadata, newest first."""
    out = []
    for run_dir in workspace.list_runs(session_dir):
        try:
            out.append(read_meta(run_dir))
        except (OSError, ValueError, TypeError):
            continue  # a half-created folder; clean-up removes it in time
    return sorted(out, key=lambda m: m.created, reverse=True)


def input_paths(run_dir: Path, meta: RunMeta) -> list[str]:
    """Absolute paths of the saved frames, input order."""
    return [str(workspace.safe_join(run_dir, rel)) for rel in meta.input_files]


def exports_dir(run_dir: Path) -> Path:
    path = run_dir / EXPORTS_DIR
    path.mkdir(exist_ok=True)
    return path


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=lambda o: o.item() if hasattr(o, "item") else str(o)))
