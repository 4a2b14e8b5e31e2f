"""DA3's novel-view video of the 3D Gaussians, rendered in the worker with gsplat (CUDA only).

Rendering uses DA3's own trajectory code and renderer (`run_renderer_in_chunk_w_trj_mode`,
the function its `export_to_gs_video` calls); the mp4 is written here with imageio-ffmpeg
because DA3's exporter fixes the frame rate at 24 and the quality to three presets, and the
page offers both as controls.

gsplat 1.5.3 is a pure-Python wheel that compiles its CUDA kernels the first time it
renders (86 s on an H100 on 2026-11-27, `docs/gpu/README.md`); that stage is reported to
the page as "compiling gsplat kernels".
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from da3_core.atomic import atomic_file
from da3_core.contract import Reconstruction
from da3_core.presets import GS_TRAJECTORIES
from da3_core.runner.context import report_progress

log = logging.getLogger(__name__)

TRAJECTORIES = GS_TRAJECTORIES
_COMPILED = False


def unavailable_reason() -> str | None:
    """Why the video cannot be rendered in this worker (one sentence), or None if it can."""
    if not torch.cuda.is_available():
        return "The novel-view video needs a CUDA GPU (gsplat renders only on CUDA); the 3D Gaussian viewer above works anywhere."
    if importlib.util.find_spec("gsplat") is None:
        return "The novel-view video needs gsplat: pip install -r requirements-gsplat.txt on this GPU server."
    if _nvcc() is None and not _kernels_built():
        return (
            "gsplat compiles its CUDA kernels on first use and needs nvcc (the CUDA toolkit), which this server lacks."
        )
    return None


def _nvcc() -> str | None:
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH") or "/usr/local/cuda"
    candidate = Path(home) / "bin" / "nvcc"
    return str(candidate) if candidate.is_file() else shutil.which("nvcc")


def _kernels_built() -> bool:
    return _COMPILED


def _ensure_kernels() -> float:
    """Compile (or load the cached) gsplat kernels; seconds it took."""
    global _COMPILED
    if _COMPILED:
        return 0.0
    report_progress("compiling gsplat kernels", 0.05, "first use on this server: about a minute")
    t = time.perf_counter()
    from gsplat.cuda._backend import _C  # noqa: F401 - importing compiles or loads the kernels

    _COMPILED = True
    return time.perf_counter() - t


def render_gs_video(
    rec: Reconstruction,
    out_path: str,
    trajectory: str = "interpolate_smooth",
    fps: int = 24,
    crf: int = 18,
    depth_panel: bool = False,
) -> dict[str, float | int | str]:
    """Render the run's Gaussians along a DA3 trajectory into an mp4 at ``out_path``.

    Args:
        rec: A run with Gaussians and cameras.
        out_path: The mp4 to write (its folder is created).
        trajectory: One of `TRAJECTORIES` (DA3's ``trj_mode``); one view allows only
            ``wander`` and ``dolly_zoom``.
        fps: Frames per second of the file.
        crf: x264 quality (lower is better; 18 is DA3's "high").
        depth_panel: Put the rendered depth beside the colour, as DA3's app does.

    Returns:
        ``frames``, ``width``, ``height``, ``compile_s``, ``render_s``, ``path``.

    Raises:
        ValueError: No Gaussians or cameras, or an unknown trajectory.
        RuntimeError: No CUDA or no gsplat (the message says which).
    """
    reason = unavailable_reason()
    if reason:
        raise RuntimeError(reason)
    if rec.gaussians is None or rec.extrinsics is None or rec.intrinsics is None:
        raise ValueError(
            "This run has no 3D Gaussians or cameras: run a preset with a GS head with 'Infer 3D Gaussians' on"
        )
    if trajectory not in TRAJECTORIES:
        raise ValueError(f"trajectory must be one of {', '.join(TRAJECTORIES)}, got {trajectory!r}")
    if rec.n_views < 2 and trajectory not in ("wander", "dolly_zoom"):
        trajectory = "wander"  # DA3's rule for a single view
    import imageio.v2 as imageio
    from depth_anything_3.model.utils.gs_renderer import run_renderer_in_chunk_w_trj_mode
    from depth_anything_3.specs import Gaussians as DAGaussians
    from depth_anything_3.utils.layout_helpers import hcat
    from depth_anything_3.utils.visualize import vis_depth_map_tensor

    compile_s = _ensure_kernels()
    report_progress("rendering the video", 0.3, trajectory)
    t = time.perf_counter()
    device = torch.device("cuda")
    g = rec.gaussians

    def tensor(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))[None].to(device)

    gaussians = DAGaussians(
        tensor(g.means), tensor(g.scales), tensor(g.rotations), tensor(g.harmonics), tensor(g.opacities)
    )
    extrinsics = torch.from_numpy(np.asarray(rec.extrinsics, np.float32))[None].to(device)
    if rec.is_metric and rec.scale_factor:
        extrinsics[:, :, :3, 3] /= rec.scale_factor  # as DA3's exporter: Gaussians are in model units
    intrinsics = torch.from_numpy(np.asarray(rec.intrinsics, np.float32))[None].to(device)
    h, w = rec.hw
    with torch.no_grad():
        color, depth = run_renderer_in_chunk_w_trj_mode(
            gaussians=gaussians,
            extrinsics=extrinsics,
            intrinsics=intrinsics,
            image_shape=(h, w),
            chunk_size=4,
            trj_mode=trajectory,
            use_sh=True,
            color_mode="RGB+ED",
            enable_tqdm=False,
        )
        frames_t = color[0]
        if depth_panel:
            depth_vis = vis_depth_map_tensor(depth[0])
            frames_t = torch.stack([hcat(c, d) for c, d in zip(frames_t, depth_vis)])
        frames = (frames_t.clamp(0, 1) * 255).byte().permute(0, 2, 3, 1).cpu().numpy()
    render_s = time.perf_counter() - t
    report_progress("writing the mp4", 0.9, f"{len(frames)} frames")
    out = Path(out_path)
    # x264 needs even sizes; yuv420p plays everywhere.
    even = frames[:, : frames.shape[1] // 2 * 2, : frames.shape[2] // 2 * 2]
    # Written under a hidden name and renamed when complete: the page never plays or offers
    # a half-written mp4 (`da3_core.atomic`).
    with atomic_file(out) as partial:
        # Bound before `with`: imageio's stubs type `__enter__` as returning the base class.
        writer = imageio.get_writer(
            partial,
            format="FFMPEG",
            fps=fps,
            codec="libx264",
            quality=None,
            macro_block_size=1,
            ffmpeg_params=["-crf", str(int(crf)), "-preset", "medium", "-pix_fmt", "yuv420p"],
        )
        with writer:
            for i, frame in enumerate(even):
                writer.append_data(frame)
                if i % 16 == 0:
                    report_progress("writing the mp4", 0.9 + 0.09 * i / max(1, len(even)), f"{i} of {len(even)} frames")
    del gaussians, color, depth, frames_t
    torch.cuda.empty_cache()
    log.debug(
        "novel-view video: %d frames %dx%d (%s) in %.1f s (+%.1f s compiling) -> %s",
        len(even),
        even.shape[2],
        even.shape[1],
        trajectory,
        render_s,
        compile_s,
        out,
    )
    return {
        "frames": int(len(even)),
        "width": int(even.shape[2]),
        "height": int(even.shape[1]),
        "compile_s": compile_s,
        "render_s": render_s,
        "path": str(out),
    }
