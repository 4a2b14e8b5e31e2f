"""The mesh export job inside the worker: `da3_core.scene.mesh_build.build_meshes` written into
a hidden folder beside ``exports/mesh`` and renamed when complete (`da3_core.atomic`), so the
run folder only ever holds a whole set of mesh files. Numpy, scikit-image and trimesh only."""

from __future__ import annotations

import logging
import resource
from pathlib import Path
from typing import Any

from da3_core.atomic import atomic_dir
from da3_core.contract import Reconstruction
from da3_core.runner.context import report_progress
from da3_core.scene import mesh_build

log = logging.getLogger(__name__)


def export_mesh(
    rec: Reconstruction,
    out_dir: str,
    conf_percentile: float = 40.0,
    fov_deg: float = 60.0,
    view_stride: int = mesh_build.DEFAULT_VIEW_STRIDE,
) -> dict[str, Any]:
    """Build the fused TSDF mesh and the per-view meshes of ``rec`` into ``out_dir``.

    Returns:
        `build_meshes`'s figures with ``paths`` in the final folder, plus ``peak_rss_mb``
        (the worker's peak resident memory so far, from ``getrusage``).
    """
    out = Path(out_dir)
    report_progress("building meshes", 0.01, f"{rec.n_views} views of {rec.hw[1]}x{rec.hw[0]}")
    try:
        with atomic_dir(out) as partial:
            info = mesh_build.build_meshes(
                rec, partial, conf_percentile=conf_percentile, fov_deg=fov_deg, view_stride=view_stride
            )
            report_progress("renaming the finished meshes into place", 0.97)
    except Exception:
        log.debug("mesh export of %d view(s) to %s failed", rec.n_views, out, exc_info=True)
        raise
    info["paths"] = [str(out / Path(p).name) for p in info["paths"]]
    info["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return info
