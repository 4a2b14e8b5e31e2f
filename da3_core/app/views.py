"""Derived views of a run for the pages: normals (computed here: numpy, cheap, cached per
run and view), the meshes and the feature maps (built by worker export jobs; read here
from the run folder, their PCA images cached per run and layer). The pages stay thin.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import streamlit as st

from da3_core.contract import FeatureMaps, Reconstruction
from da3_core.runs import exports
from da3_core.scene import features, geometry, mesh_build, normals

_NORMALS = "views_normals"
_PCA = "views_pca"
_MESH_PREVIEW = "views_mesh_preview"
_MAX_NORMALS = 64  # views' normal images kept per browser session (about 0.6 MB each at 504)
_MAX_PCA = 4  # layers' PCA images kept per browser session


def _cache(name: str) -> MutableMapping[Any, Any]:
    cache: MutableMapping[Any, Any] = st.session_state.setdefault(name, {})
    return cache


@dataclass(frozen=True)
class NormalsView:
    """One view's normals for display: the colour image and what share of pixels has one."""

    rgb: np.ndarray
    valid_fraction: float
    assumed_intrinsics: bool


def view_normals(run_id: str, rec: Reconstruction, view: int, fov_deg: float = geometry.DEFAULT_FOV_DEG) -> NormalsView:
    """The colour-coded normals of one view (OpenGL look: x right, y up, z towards the
    viewer), computed once per (run, view, assumed field of view) and kept in the session."""
    cache = _cache(_NORMALS)
    key = (run_id, rec.n_views, int(view), round(float(fov_deg), 3) if not rec.has_poses else 0.0)
    if key not in cache:
        if rec.intrinsics is not None:
            k = np.asarray(rec.intrinsics[view], dtype=np.float64)
            assumed = False
        else:
            h, w = rec.hw
            k = geometry.intrinsics_from_fov(h, w, fov_deg)
            assumed = True
        n, valid = normals.normals_from_depth(rec.depth[view], k)
        cache[key] = NormalsView(normals.normals_to_rgb(n, valid), float(valid.mean()), assumed)
        while len(cache) > _MAX_NORMALS:
            cache.pop(next(iter(cache)))
    out: NormalsView = cache[key]
    return out


# -- meshes ---------------------------------------------------------------------------------


def mesh_files(run_dir: Path) -> dict[str, Path]:
    """The finished mesh files of the run (``glb``, ``ply``, ``obj``, ``views``, ``params``) that exist."""
    folder = exports.export_target(run_dir, "mesh")
    names = {**mesh_build.FUSED_FILES, "views": mesh_build.VIEWS_FILE, "params": mesh_build.PARAMS_FILE}
    return {k: folder / n for k, n in names.items() if (folder / n).is_file()}


def mesh_preview_text(run_id: str, rec: Reconstruction, conf_percentile: float, fov_deg: float) -> str:
    """The grid the fused mesh would use, before it is built (voxel and truncation from the
    scene's scale), in one line for the page; computed once per (run, filters) and kept in
    the session (0.4 s for 16 views at 504 on a 2-core CPU)."""
    cache = _cache(_MESH_PREVIEW)
    key = (run_id, rec.n_views, round(float(conf_percentile), 3), round(float(fov_deg), 3))
    if key not in cache:
        cache[key] = _mesh_preview_text(rec, conf_percentile, fov_deg)
        while len(cache) > 8:
            cache.pop(next(iter(cache)))
    text: str = cache[key]
    return text


def _mesh_preview_text(rec: Reconstruction, conf_percentile: float, fov_deg: float) -> str:
    try:
        inputs = mesh_build.mesh_inputs(rec, conf_percentile, fov_deg)
        p = mesh_build.tsdf_params(inputs)
    except ValueError as exc:
        return f"No fused mesh possible with these filters: {exc}"
    return (
        f"TSDF grid from the scene's scale: voxel {p.voxel_size:.4g} {rec.depth_unit}, truncation "
        f"{p.trunc:.4g} {rec.depth_unit} ({p.trunc / p.voxel_size:.3g} voxels), {p.dims[0]} x {p.dims[1]} x "
        f"{p.dims[2]} voxels, from the median depth {p.scene_scale:.4g}"
        + (
            ""
            if p.voxel_size <= p.voxel_from_scale * 1.0001
            else f" (voxel raised from {p.voxel_from_scale:.4g} to fit the grid)"
        )
        + f"; {inputs.kept:.0%} of the valid pixels pass the confidence and sky filters."
    )


# -- feature maps ---------------------------------------------------------------------------


def feature_maps(run_dir: Path) -> FeatureMaps | None:
    """The run's saved feature maps (exports/features.npz), or None when there are none."""
    path = exports.export_target(run_dir, "features")
    if not path.is_file():
        return None
    return features.read_features_npz(str(path))


def feature_pca(run_id: str, run_dir: Path, layer: int) -> tuple[np.ndarray, tuple[int, int]] | None:
    """(N, h, w, 3) uint8 PCA images of one layer and the processed image size, cached per
    (run, layer, file time); None when the run has no feature maps or not this layer."""
    path = exports.export_target(run_dir, "features")
    try:
        stamp = path.stat().st_mtime_ns
    except OSError:
        return None
    cache = _cache(_PCA)
    key = (run_id, int(layer), stamp)
    if key not in cache:
        fm = feature_maps(run_dir)
        if fm is None or layer not in fm.layers:
            return None
        cache[key] = (features.pca_rgb(fm.layer(layer)), fm.image_hw)
        while len(cache) > _MAX_PCA:
            cache.pop(next(iter(cache)))
    out: tuple[np.ndarray, tuple[int, int]] = cache[key]
    return out


__all__ = [
    "NormalsView",
    "feature_maps",
    "feature_pca",
    "mesh_files",
    "mesh_preview_text",
    "view_normals",
]
