"""The mesh export of a run: what goes in (depth masked by the confidence and sky filters,
the cameras), the files it writes (a fused TSDF mesh as GLB/PLY/OBJ, the per-view meshes
as one GLB, the grid's parameters as JSON) and how much it costs. Numpy only: the worker's
export task (`da3_core.worker.mesh`) calls `build_meshes`; the parent calls `mesh_inputs`
and `tsdf_params` to show the grid before anything is built.

Memory (bounded): the TSDF grid is at most `mesh.MAX_VOXELS` voxels x 5 bytes (120 MB),
integrated 2^20 voxels at a time; per-view meshes are built, written into the GLB scene and
dropped one view at a time at ``view_stride`` (2: a quarter of the pixels).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from da3_core.contract import Reconstruction
from da3_core.scene import geometry, mesh

MESH_DIR = "mesh"
FUSED_FILES = {"glb": "fused.glb", "ply": "fused.ply", "obj": "fused.obj"}
VIEWS_FILE = "views.glb"
PARAMS_FILE = "tsdf.json"
DEFAULT_VIEW_STRIDE = 2
VIEWER_MAX_FACES = 1_500_000
"""Above this the page does not draw the fused mesh in the browser (the files are still there)."""
# Measured in the worker on a 2-core shared Intel Xeon (16 synthetic views at 504 x 378, 3.05
# Mpx): TSDF fusion 15.6 s (5.1 s per million pixels); per-view meshes at stride 2 plus writing
# GLB, PLY and OBJ of the 1.0 M-triangle fused mesh and the per-view GLB: about 11 s.
FUSE_S_PER_MPX = 5.0
VIEW_S_PER_MPX = 3.5


@dataclass(frozen=True)
class MeshInputs:
    """What the meshes are built from: the run's depth with filtered pixels set to NaN.

    Attributes:
        depth: (N, H, W) float32, NaN where a filter removed the pixel.
        intrinsics: (N, 3, 3) K in pixels.
        extrinsics: (N, 3, 4) world-to-camera.
        conf_threshold: The confidence threshold applied, or None.
        kept: Fraction of valid pixels kept.
    """

    depth: np.ndarray
    intrinsics: np.ndarray
    extrinsics: np.ndarray
    conf_threshold: float | None
    kept: float


def mesh_inputs(
    rec: Reconstruction, conf_percentile: float = 40.0, fov_deg: float = geometry.DEFAULT_FOV_DEG
) -> MeshInputs:
    """The run's depth masked by DA3's confidence rule (``min(max(1.05, P_pct), P_90)``, as the
    Point cloud page) and its sky mask, with its cameras (assumed ones for mono presets)."""
    cams = geometry.resolve_cameras(rec, fov_deg=fov_deg)
    depth = np.array(rec.depth, dtype=np.float32, copy=True)
    valid = np.isfinite(depth) & (depth > 0)
    n_valid = int(valid.sum())
    thr = None
    if rec.conf is not None and conf_percentile > 0:
        params = geometry.FilterParams(conf_percentile=float(conf_percentile))
        pop = np.sort(rec.conf[valid].astype(np.float32))
        if pop.size:
            lower = geometry.percentile_sorted(pop, params.conf_percentile)
            upper = geometry.percentile_sorted(pop, params.conf_ceiling_percentile)
            thr = float(min(max(params.conf_floor, lower), upper))
            valid &= rec.conf >= thr
    if rec.sky is not None:
        valid &= ~rec.sky
    depth[~valid] = np.nan
    return MeshInputs(
        depth,
        np.asarray(cams.intrinsics, dtype=np.float64),
        np.asarray(cams.extrinsics, dtype=np.float64)[:, :3, :4],
        thr,
        float(valid.sum()) / max(n_valid, 1),
    )


def tsdf_params(inputs: MeshInputs) -> mesh.TSDFParams:
    """The grid the fused mesh will use (voxel and truncation from the scene's scale)."""
    return mesh.tsdf_params(inputs.depth, inputs.intrinsics, inputs.extrinsics)


def estimate_seconds(rec: Reconstruction) -> float:
    """Expected seconds of `build_meshes` for the run's size (see the constants' basis)."""
    mpx = rec.depth.size / 1e6
    return 1.0 + mpx * (FUSE_S_PER_MPX + VIEW_S_PER_MPX)


def estimate_mb(rec: Reconstruction) -> float:
    """Expected worker memory (MB): the grid (at most 120 MB), the run's arrays twice, the
    fused mesh and the per-view scene (about 60 bytes per vertex and face at stride 2), and
    the worker process itself."""
    arrays = rec.depth.nbytes * 3 + rec.images.nbytes
    per_view = rec.depth.size / DEFAULT_VIEW_STRIDE**2 * 3 * 60
    return (
        mesh.MAX_VOXELS * 5 + 2 * arrays + per_view
    ) / 2**20 + 150  # + the worker itself (529 MB measured at 16 x 504)


def _report(stage: str, fraction: float, detail: str = "") -> None:
    try:
        from da3_core.runner.context import report_progress

        report_progress(stage, fraction, detail)
    except Exception:  # noqa: BLE001 - outside a worker there is no one to report to
        pass


def _check_cancelled() -> None:
    from da3_core.runner.context import check_cancelled

    check_cancelled()


def views_glb(rec: Reconstruction, inputs: MeshInputs, stride: int = DEFAULT_VIEW_STRIDE) -> tuple[bytes, int, int]:
    """One GLB with one mesh per view (named after the view), y up as the app's other GLBs.

    Returns:
        (bytes, vertices, faces) over all views.
    """
    import trimesh

    scene = trimesh.Scene()
    nv = nf = 0
    for i in range(rec.n_views):
        _check_cancelled()
        m = mesh.view_mesh(
            inputs.depth[i], inputs.intrinsics[i], inputs.extrinsics[i], rec.images[i], stride=int(stride)
        )
        if m.n_faces == 0:
            continue
        colors = (
            np.concatenate([m.colors, np.full((m.n_vertices, 1), 255, np.uint8)], axis=1)
            if m.colors is not None
            else None
        )
        tm = trimesh.Trimesh(
            vertices=m.vertices.astype(np.float64) @ mesh.GLB_FROM_WORLD.T,
            faces=m.faces,
            vertex_colors=colors,
            process=False,
        )
        scene.add_geometry(tm, node_name=f"view_{i:03d}", geom_name=f"view_{i:03d}")
        nv, nf = nv + m.n_vertices, nf + m.n_faces
        _report("per-view meshes", 0.7 + 0.2 * (i + 1) / rec.n_views, f"view {i + 1} of {rec.n_views}")
    data = scene.export(file_type="glb") if nf else b""
    return bytes(data), nv, nf


def build_meshes(
    rec: Reconstruction,
    out_dir: Path,
    *,
    conf_percentile: float = 40.0,
    fov_deg: float = geometry.DEFAULT_FOV_DEG,
    view_stride: int = DEFAULT_VIEW_STRIDE,
) -> dict[str, Any]:
    """Write the fused mesh (`FUSED_FILES`), the per-view meshes (`VIEWS_FILE`) and the grid
    (`PARAMS_FILE`) into ``out_dir`` (which must exist; the caller makes it atomic).

    Returns:
        ``{"paths": [...], "tsdf": {...}, "fused_vertices", "fused_faces", "view_vertices",
        "view_faces", "fuse_s", "views_s", "conf_threshold", "kept"}``.

    Raises:
        ValueError: No pixel passes the filters (nothing to mesh).
    """
    out_dir = Path(out_dir)
    _report("preparing depth", 0.02, f"{rec.n_views} views, confidence percentile {conf_percentile:g}")
    inputs = mesh_inputs(rec, conf_percentile, fov_deg)
    if not np.isfinite(inputs.depth).any():
        raise ValueError(
            f"no pixel passes the filters (confidence percentile {conf_percentile:g}, sky): nothing to mesh; "
            "lower the confidence percentile on the Point cloud page"
        )
    params = tsdf_params(inputs)
    _report("TSDF fusion", 0.05, params.describe())
    t = time.perf_counter()
    images = rec.images
    fused = mesh.fuse_tsdf(inputs.depth, inputs.intrinsics, inputs.extrinsics, images, params=params)
    fuse_s = time.perf_counter() - t
    _check_cancelled()
    paths = []
    for i, (fmt, name) in enumerate(FUSED_FILES.items()):
        _report("writing the fused mesh", 0.55 + 0.05 * i, name)
        path = out_dir / name
        path.write_bytes(mesh.mesh_bytes(fused.mesh, fmt))  # type: ignore[arg-type]
        paths.append(str(path))
    t = time.perf_counter()
    data, view_v, view_f = views_glb(rec, inputs, view_stride)
    views_s = time.perf_counter() - t
    if data:
        (out_dir / VIEWS_FILE).write_bytes(data)
        paths.append(str(out_dir / VIEWS_FILE))
    tsdf = {
        "voxel_size": params.voxel_size,
        "trunc": params.trunc,
        "origin": list(params.origin),
        "dims": list(params.dims),
        "scene_scale": params.scene_scale,
        "voxel_from_scale": params.voxel_from_scale,
        "describe": params.describe(),
        "unit": rec.depth_unit,
    }
    info = {
        "tsdf": tsdf,
        "fused_vertices": fused.mesh.n_vertices,
        "fused_faces": fused.mesh.n_faces,
        "view_vertices": view_v,
        "view_faces": view_f,
        "view_stride": int(view_stride),
        "fuse_s": round(fuse_s, 3),
        "views_s": round(views_s, 3),
        "conf_threshold": inputs.conf_threshold,
        "kept": round(inputs.kept, 4),
    }
    (out_dir / PARAMS_FILE).write_text(json.dumps(info, indent=2))
    paths.append(str(out_dir / PARAMS_FILE))
    return {"paths": paths, **info}


__all__ = [
    "FUSED_FILES",
    "MESH_DIR",
    "PARAMS_FILE",
    "VIEWER_MAX_FACES",
    "VIEWS_FILE",
    "MeshInputs",
    "build_meshes",
    "estimate_mb",
    "estimate_seconds",
    "mesh_inputs",
    "tsdf_params",
]
