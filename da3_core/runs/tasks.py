"""The tasks the app runs in the worker, each a `gpu`-decorated function.

This module is imported by the parent, so it imports nothing heavy at the top: each task
imports its worker-side module (which imports torch and DA3) inside its body, which runs
only in the worker.
"""

from __future__ import annotations

from typing import Any

from da3_core.config import load_settings
from da3_core.contract import ChunkRequest, ChunkResult, FeatureMaps, FeatureRequest, Reconstruction, ReconstructRequest
from da3_core.runner import Runner, gpu, set_default_runner_factory


def _runner_from_settings() -> Runner:
    return Runner(**load_settings().runner_options())


# A task called without ``runner=`` before the app made its runner (a script) runs on one
# made from the settings (DA3_ISOLATION, DA3_WORKERS, DA3_RAY_ADDRESS, DA3_CANCEL_GRACE_S).
set_default_runner_factory(_runner_from_settings)


def reconstruct_budget(request: ReconstructRequest, *args: Any, **kwargs: Any) -> float:
    """Seconds a reconstruction may run: ``DA3_DURATION_S + DA3_DURATION_PER_FRAME_S * frames``."""
    settings = load_settings()
    return settings.duration_base_s + settings.duration_per_frame_s * request.n_frames


@gpu(duration=reconstruct_budget)
def reconstruct(
    request: ReconstructRequest, demo_root: str, cpu_threads: int = 0, cpu_precision: str = "auto"
) -> Reconstruction:
    """Run DA3 on ``request`` in the worker. See `da3_core.worker.reconstruct.reconstruct`.

    ``cpu_precision`` is ``auto`` (``DA3_CPU_PRECISION`` if set, else bfloat16 where the CPU
    has it in hardware, else float32), ``fp32`` or ``bf16``; it matters only on CPU.
    """
    from da3_core.worker.reconstruct import reconstruct as run

    return run(request, demo_root, cpu_threads, cpu_precision)


@gpu(duration=600)
def build_demo_weights(preset: str, demo_root: str) -> str:
    """Build untrained weights for ``preset`` under ``demo_root`` (once); return the folder."""
    from pathlib import Path

    from da3_core.runner.context import report_progress
    from da3_core.worker.model import ensure_demo_weights

    report_progress("building demo weights", 0.1, preset)
    return str(ensure_demo_weights(preset, Path(demo_root)))


@gpu(duration=120)
def worker_info() -> dict[str, Any]:
    """Device, torch version, cached models and memory of the worker."""
    import importlib.util

    from da3_core.runner.inside.calls import worker_state
    from da3_core.worker.gs_video import unavailable_reason
    from da3_core.worker.model import resolve_device

    state = worker_state()
    state["device"] = resolve_device("auto")
    state["gsplat"] = importlib.util.find_spec("gsplat") is not None
    state["gs_video_unavailable"] = unavailable_reason()
    return state


@gpu(duration=600)
def export_colmap(
    rec: Reconstruction, image_paths: list[str], out_dir: str, conf_percentile: float = 40.0
) -> list[str]:
    """Write a COLMAP sparse model with DA3's exporter into ``out_dir`` (a hidden folder
    renamed to ``out_dir`` when complete); return the files written.

    Queued by `da3_core.runs.service.RunService.submit_export` (kind ``colmap``)."""
    from da3_core.worker.exports import export_colmap as run

    return run(rec, image_paths, out_dir, conf_percentile)


@gpu(duration=600)
def export_gs_ply(rec: Reconstruction, out_dir: str) -> str:
    """Write the Gaussians as a 3DGS PLY with DA3's writer (``out_dir/gs_ply/0000.ply``,
    renamed into place when complete); return the file path.

    Queued by `da3_core.runs.service.RunService.submit_export` (kind ``gs_ply``)."""
    from da3_core.worker.exports import export_gs_ply as run

    return run(rec, out_dir)


@gpu(duration=900)
def render_gs_video(
    rec: Reconstruction,
    out_path: str,
    trajectory: str = "interpolate_smooth",
    fps: int = 24,
    crf: int = 18,
    depth_panel: bool = False,
) -> dict[str, Any]:
    """DA3's novel-view video of the Gaussians (CUDA + gsplat); see `da3_core.worker.gs_video`.

    The budget covers gsplat's one-time kernel compile (69.5 s and 86 s measured on H100s,
    ``../shared/design/GPU_NOTES.md``) plus the rendering. The mp4 is written under a hidden
    name and renamed to ``out_path`` when complete. Queued by
    `da3_core.runs.service.RunService.submit_export` (kind ``gs_video``).
    """
    from da3_core.worker.gs_video import render_gs_video as run

    return run(rec, out_path, trajectory, fps, crf, depth_panel)


def mesh_budget(rec: Reconstruction, *args: Any, **kwargs: Any) -> float:
    """Seconds a mesh export may run: 120 s plus ten times its estimate (a busy shared CPU)."""
    from da3_core.scene.mesh_build import estimate_seconds

    return 120.0 + 10.0 * estimate_seconds(rec)


@gpu(duration=mesh_budget)
def export_mesh(
    rec: Reconstruction, out_dir: str, conf_percentile: float = 40.0, fov_deg: float = 60.0, view_stride: int = 2
) -> dict[str, Any]:
    """Build the fused TSDF mesh (GLB, PLY, OBJ) and the per-view meshes (one GLB) into
    ``out_dir`` (a hidden folder renamed when complete); return the files and figures.

    Pure numpy, scikit-image and trimesh, but in the worker all the same: its memory (the
    TSDF grid) stays out of the Streamlit process and the job is queued and cancellable.
    Queued by `da3_core.runs.service.RunService.submit_export` (kind ``mesh``)."""
    from da3_core.worker.mesh import export_mesh as run

    return run(rec, out_dir, conf_percentile, fov_deg, view_stride)


def features_budget(req: FeatureRequest, *args: Any, **kwargs: Any) -> float:
    """Seconds a feature-map job may run: the run budget's rule for its frames."""
    return reconstruct_budget(req.request)


@gpu(duration=features_budget)
def export_features(
    req: FeatureRequest, demo_root: str, cpu_threads: int = 0, cpu_precision: str = "auto"
) -> FeatureMaps:
    """DA3's backbone features of ``req.layers`` for the run's frames, as float16 CPU numpy
    (`da3_core.worker.features.feature_maps`). The parent writes them to the run's
    exports/features.npz. Queued by `da3_core.runs.service.RunService.submit_export` (kind ``features``)."""
    from da3_core.worker.features import feature_maps as run

    return run(req, demo_root, cpu_threads, cpu_precision)


def chunk_budget(chunk: ChunkRequest, *args: Any, **kwargs: Any) -> float:
    """Seconds one chunk may run: the run budget's rule applied to the chunk's frames."""
    return reconstruct_budget(chunk.request)


@gpu(duration=chunk_budget)
def reconstruct_chunk(
    chunk: ChunkRequest, demo_root: str, cpu_threads: int = 0, cpu_precision: str = "auto"
) -> ChunkResult:
    """One chunk of a chunked run (`da3_core.chunks`): DA3 on its frames, in the chunk's own
    frame, plus a descriptor per frame. See `da3_core.worker.chunk.reconstruct_chunk`."""
    from da3_core.worker.chunk import reconstruct_chunk as run

    return run(chunk, demo_root, cpu_threads, cpu_precision)
