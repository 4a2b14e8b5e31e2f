"""Exports that need DA3's own code (COLMAP, 3DGS PLY), so they run in the worker.

Both DA3 exporters take a ``Prediction`` and edit some of its arrays in place; they get a
fresh Prediction built from copies, so the caller's `Reconstruction` is never touched.
Both write under a hidden temporary name and rename when complete (`da3_core.atomic`), so
the final path only ever holds a whole model or file.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from da3_core.atomic import atomic_dir, partial_name
from da3_core.contract import Reconstruction
from da3_core.runner.context import report_progress

log = logging.getLogger(__name__)


def _prediction(rec: Reconstruction):  # -> depth_anything_3.specs.Prediction
    from depth_anything_3.specs import Gaussians as DAGaussians
    from depth_anything_3.specs import Prediction

    gaussians = None
    if rec.gaussians is not None:
        g = rec.gaussians
        t = lambda a: torch.from_numpy(np.array(a, dtype=np.float32, copy=True))[None]  # noqa: E731 - batch of 1
        gaussians = DAGaussians(t(g.means), t(g.scales), t(g.rotations), t(g.harmonics), t(g.opacities))
    return Prediction(
        depth=rec.depth.copy(),
        is_metric=int(rec.is_metric),
        sky=None if rec.sky is None else rec.sky.copy(),
        conf=None if rec.conf is None else rec.conf.copy(),
        extrinsics=None if rec.extrinsics is None else rec.extrinsics.copy(),
        intrinsics=None if rec.intrinsics is None else rec.intrinsics.copy(),
        processed_images=rec.images.copy(),
        gaussians=gaussians,
        scale_factor=rec.scale_factor,
    )


def colmap_image_names(rec: Reconstruction, image_paths: list[str]) -> list[str]:
    """The image names the COLMAP model gets: the frames' names (the user's file names, so
    the model lines up with the user's own images and reads back as known cameras), or the
    saved files' names when those names cannot be file names (duplicates, separators)."""
    names = list(rec.names)
    usable = len(set(names)) == len(names) and all(
        n and n not in (".", "..") and "/" not in n and "\\" not in n and "\0" not in n for n in names
    )
    return names if usable else [os.path.basename(p) for p in image_paths]


def export_colmap(
    rec: Reconstruction, image_paths: list[str], out_dir: str, conf_percentile: float = 40.0
) -> list[str]:
    """Write a COLMAP sparse model (cameras.bin, images.bin, points3D.bin...) with DA3's exporter.

    The images are named after the frames (`colmap_image_names`): DA3's exporter takes the
    names from the paths it is given, so it gets links named so to the saved frames.

    Args:
        rec: The reconstruction (needs poses and confidence: multi-view presets).
        image_paths: The original frames saved on disk, input order (COLMAP stores their
            sizes; intrinsics are rescaled to them).
        out_dir: Folder to write into (created).
        conf_percentile: Points below this confidence percentile are left out.

    Returns:
        The files written.

    Raises:
        ValueError: The run used a crop resize method (DA3's exporter cannot map crops back
            to the original images), or the preset predicted no poses or confidence.
    """
    method = rec.params.get("process_res_method", "upper_bound_resize")
    if not str(method).endswith("resize"):
        raise ValueError(
            f"COLMAP export needs a resize method, but this run used process_res_method={method!r} "
            "(DA3's exporter cannot map crops back to the original images). Re-run with "
            "upper_bound_resize or lower_bound_resize to export COLMAP."
        )
    if rec.extrinsics is None or rec.conf is None:
        raise ValueError(
            f"COLMAP export needs predicted camera poses and confidence; preset {rec.preset} predicts none"
        )
    if len(image_paths) != rec.n_views:
        raise ValueError(f"COLMAP export got {len(image_paths)} image paths for {rec.n_views} views")
    from depth_anything_3.utils.export.colmap import export_to_colmap

    report_progress("writing the COLMAP model", 0.2, f"{rec.n_views} views")
    out = Path(out_dir)
    try:
        # Written into a hidden folder beside ``out`` and renamed when complete: ``out`` is
        # never a half-written model (the page offered a partial points3D.bin before).
        with tempfile.TemporaryDirectory(prefix="da3-colmap-names-") as tmp, atomic_dir(out) as partial:
            named = []
            for i, (path, name) in enumerate(zip(image_paths, colmap_image_names(rec, list(image_paths)))):
                folder = Path(tmp) / str(i)  # one folder per link: names stay exactly the frames'
                folder.mkdir()
                (folder / name).symlink_to(Path(path).resolve())
                named.append(str(folder / name))
            export_to_colmap(_prediction(rec), str(partial), named, conf_percentile, method)
            report_progress("renaming the finished model into place", 0.95)
    except Exception:
        log.debug(
            "COLMAP export of %d view(s) to %s failed", rec.n_views, out, exc_info=True
        )  # the server logs the error
        raise
    return sorted(str(p) for p in out.iterdir() if p.is_file())


def export_gs_ply(rec: Reconstruction, out_dir: str) -> str:
    """Write the 3D Gaussians as a standard 3DGS PLY with DA3's writer; return its path.

    Raises:
        ValueError: The run has no Gaussians (only presets with a GS head, with 'Infer 3D Gaussians').
    """
    if rec.gaussians is None:
        raise ValueError(
            "This run has no 3D Gaussians: run a preset with a GS head (giant, nested) with 'Infer 3D Gaussians' on"
        )
    from depth_anything_3.utils.export.gs import export_to_gs_ply

    report_progress("writing the 3DGS PLY", 0.2, f"{len(rec.gaussians.means):,} Gaussians")
    out = Path(out_dir)
    final = out / "gs_ply" / "0000.ply"
    # DA3's writer names the file itself (<folder>/gs_ply/0000.ply): it writes into a hidden
    # folder beside, and the finished file is renamed into place (same file system).
    scratch = partial_name(out / "gs_ply")
    try:
        scratch.mkdir(parents=True)
        export_to_gs_ply(_prediction(rec), str(scratch))
        report_progress("renaming the finished file into place", 0.95)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(scratch / "gs_ply" / "0000.ply", final)
    except Exception:
        log.debug("3DGS PLY export of %s to %s failed", rec.preset, out, exc_info=True)  # the server logs the error
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return str(final)
