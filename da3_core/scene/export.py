"""Exports of a reconstruction: GLB, PLY, NPZ and 16-bit depth PNGs, to bytes or to files.

Point exports (GLB, PLY) are built from an already filtered, deterministically capped
`PointCloud` (``geometry.apply_filters``), never by editing the reconstruction: DA3's own
GLB exporter edits ``conf`` in place and subsamples with an unseeded RNG.

COLMAP and Gaussian-splatting PLY need DA3 code and are written in the worker, not here.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import trimesh
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from da3_core.contract import Reconstruction
from da3_core.scene.geometry import Cameras, PointCloud, camera_rgb, frustum_segments, scene_scale

GLB_FROM_WORLD = np.diag([1.0, -1.0, -1.0, 1.0])
"""4x4 applied to world points for GLB: OpenCV (x right, y down, z forward) to glTF
(x right, y up, z backward), a 180 degree turn about x. Undo with the same matrix."""

EXPORT_FORMATS: tuple[str, ...] = ("glb", "ply", "npz", "depth_png", "normals_png")
"""Formats `export_bytes` makes, in display order (the Exports page lists them so)."""

FILENAMES: dict[str, str] = {
    "glb": "scene.glb",
    "ply": "points.ply",
    "npz": "results.npz",
    "depth_png": "depth_png.zip",
    "normals_png": "normals_png.zip",
}
"""File name of each format inside a run folder."""

DEPTH_PNG_MAX = 65535
"""uint16 code of the largest depth of a view; 0 is reserved for "no valid depth"."""

DEPTH_SCALE_FILE = "depth_scale.json"


# --------------------------------------------------------------------------------------
# GLB and PLY (point clouds)
# --------------------------------------------------------------------------------------


def _rgba(colors: np.ndarray) -> np.ndarray:
    colors = np.asarray(colors, dtype=np.uint8).reshape(-1, 3)
    return np.concatenate([colors, np.full((colors.shape[0], 1), 255, dtype=np.uint8)], axis=1)


def _camera_rgba(i: int, n: int) -> np.ndarray:
    return np.array([*camera_rgb(i, n), 255], dtype=np.uint8)


def glb_scene(
    cloud: PointCloud,
    cameras: Cameras | None = None,
    hw: tuple[int, int] | None = None,
    *,
    show_cameras: bool = True,
    camera_size: float = 0.03,
) -> trimesh.Scene:
    """A trimesh scene: the coloured point cloud plus camera wireframes, glTF axes.

    Every coordinate is multiplied by `GLB_FROM_WORLD` (y and z negated); nothing is
    centred or rescaled, so world point p is stored as ``(p.x, -p.y, -p.z)``.

    Args:
        cloud: Filtered, capped points (world frame).
        cameras: Cameras for the wireframes (DA3's pyramids, one colour per camera).
        hw: (H, W) image size, needed for the wireframes.
        show_cameras: Add the wireframes (needs ``cameras`` and ``hw``).
        camera_size: Pyramid depth as a fraction of the scene size (DA3's 0.03).
    """
    scene = trimesh.Scene()
    pts = np.asarray(cloud.points, dtype=np.float64)
    if len(cloud) > 0:
        scene.add_geometry(
            trimesh.PointCloud(vertices=trimesh.transform_points(pts, GLB_FROM_WORLD), colors=_rgba(cloud.colors)),
            geom_name="points",
        )
    if show_cameras and cameras is not None and hw is not None:
        segs = frustum_segments(cameras, hw, camera_size * scene_scale(pts))
        for i in range(cameras.n_views):
            seg = trimesh.transform_points(segs[i].reshape(-1, 3), GLB_FROM_WORLD).reshape(-1, 2, 3)
            path = trimesh.load_path(seg)
            path.colors = np.tile(_camera_rgba(i, cameras.n_views), (len(path.entities), 1))
            scene.add_geometry(path, geom_name=f"camera_{i:04d}")
    return scene


def glb_bytes(
    cloud: PointCloud,
    cameras: Cameras | None = None,
    hw: tuple[int, int] | None = None,
    *,
    show_cameras: bool = True,
    camera_size: float = 0.03,
) -> bytes:
    """Binary glTF (``.glb``) of `glb_scene`; see it for the arguments and axes."""
    scene = glb_scene(cloud, cameras, hw, show_cameras=show_cameras, camera_size=camera_size)
    if not scene.geometry:
        raise ValueError("Nothing to export: the point cloud is empty and no cameras are drawn; loosen the filters")
    return scene.export(file_type="glb")


def ply_bytes(cloud: PointCloud) -> bytes:
    """Binary little-endian PLY of the points (world frame, float32 x y z) with colours.

    Vertex properties: ``float x, y, z`` and ``uchar red, green, blue, alpha`` (alpha 255),
    as trimesh writes them.
    """
    pc = trimesh.PointCloud(vertices=np.asarray(cloud.points, dtype=np.float64), colors=_rgba(cloud.colors))
    return pc.export(file_type="ply", encoding="binary")


# --------------------------------------------------------------------------------------
# NPZ
# --------------------------------------------------------------------------------------


def npz_arrays(rec: Reconstruction) -> dict[str, np.ndarray]:
    """The arrays `npz_bytes` stores, by DA3's field names (``utils/export/npz.py``).

    ``image`` (N, H, W, 3) uint8, ``depth`` (N, H, W) float32, and where present ``conf``
    (N, H, W), ``extrinsics`` (N, 3, 4) world-to-camera, ``intrinsics`` (N, 3, 3), ``sky``
    (N, H, W) bool; plus ``is_metric`` (0-d bool) and ``names`` (N,) unicode. Fields that
    are None are left out. Unlike DA3, depth and conf are not rounded.
    """
    out: dict[str, np.ndarray] = {"image": rec.images, "depth": rec.depth}
    optional = {"conf": rec.conf, "extrinsics": rec.extrinsics, "intrinsics": rec.intrinsics, "sky": rec.sky}
    out.update({key: value for key, value in optional.items() if value is not None})
    out["is_metric"] = np.asarray(bool(rec.is_metric))
    out["names"] = np.asarray(list(rec.names), dtype=np.str_)
    return out


def npz_bytes(rec: Reconstruction) -> bytes:
    """Compressed NPZ of `npz_arrays`; reads back exactly with ``np.load(..., allow_pickle=False)``."""
    buf = io.BytesIO()
    np.savez_compressed(buf, **npz_arrays(rec))
    return buf.getvalue()


# --------------------------------------------------------------------------------------
# 16-bit depth PNGs
# --------------------------------------------------------------------------------------


def encode_depth_u16(depth: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
    """Quantise one depth map to uint16, linearly over its own valid range.

    Valid depth (finite, > 0) maps to 1..65535; 0 means "no valid depth". Decode with
    ``depth = value * scale + offset`` for value > 0. The error is at most ``scale / 2``
    (plus float32 rounding).

    Args:
        depth: (H, W) z-depth.

    Returns:
        (H, W) uint16 codes, and ``{"min", "max", "scale", "offset"}`` (floats; min/max
        None and scale 0 when no pixel is valid).
    """
    d = np.asarray(depth, dtype=np.float64)
    valid = np.isfinite(d) & (d > 0)
    codes = np.zeros(d.shape, dtype=np.uint16)
    if not valid.any():
        return codes, {"min": None, "max": None, "scale": 0.0, "offset": 0.0}
    lo, hi = float(d[valid].min()), float(d[valid].max())
    scale = (hi - lo) / (DEPTH_PNG_MAX - 1) if hi > lo else 1.0
    offset = lo - scale
    codes[valid] = np.clip(np.rint((d[valid] - offset) / scale), 1, DEPTH_PNG_MAX).astype(np.uint16)
    return codes, {"min": lo, "max": hi, "scale": scale, "offset": offset}


def decode_depth_u16(codes: np.ndarray, scale: float, offset: float) -> np.ndarray:
    """Inverse of `encode_depth_u16`: (H, W) float32 depth, NaN where the code is 0."""
    c = np.asarray(codes).astype(np.float64)
    return np.where(c > 0, c * scale + offset, np.nan).astype(np.float32)


def _png_bytes(img: Image.Image, pnginfo: PngInfo | None = None) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", pnginfo=pnginfo)
    return buf.getvalue()


def depth_png_zip_bytes(rec: Reconstruction, *, colorized: bool = False, colormap: str = "Spectral") -> bytes:
    """A zip of one 16-bit grayscale PNG per view, with the scales to recover depth.

    Layout: ``depth/0000.png``, ... and ``depth_scale.json`` holding, per view, ``file``,
    ``name``, ``min``, ``max``, ``scale``, ``offset`` (and ``unit``, ``encoding``). Each PNG
    also carries ``depth_scale``, ``depth_offset`` and ``depth_unit`` text chunks. Decode:
    ``depth = value * scale + offset`` where value > 0; 0 = no valid depth (see
    `read_depth_png_zip`). With ``colorized``, ``depth_vis/0000.jpg``, ... show inverse
    depth as DA3 does (2..98 percentiles, near = start of ``colormap``).

    Args:
        rec: The reconstruction.
        colorized: Also add colourised JPGs.
        colormap: Plotly colour scale name for the JPGs.
    """
    views = []
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for i in range(rec.n_views):
            codes, meta = encode_depth_u16(rec.depth[i])
            info = PngInfo()
            info.add_text("depth_scale", repr(meta["scale"]))
            info.add_text("depth_offset", repr(meta["offset"]))
            info.add_text("depth_unit", rec.depth_unit)
            name = f"depth/{i:04d}.png"
            # PNG is already deflated: storing avoids compressing twice.
            zf.writestr(name, _png_bytes(Image.fromarray(codes), info))
            views.append({"file": name, "name": rec.names[i], **meta})
            if colorized:
                jpg = io.BytesIO()
                Image.fromarray(colorize_depth(rec.depth[i], colormap)).save(jpg, format="JPEG", quality=95)
                zf.writestr(f"depth_vis/{i:04d}.jpg", jpg.getvalue())
        doc = {
            "format": "da3-depth-png-v1",
            "encoding": "depth = value * scale + offset for value > 0; value 0 = no valid depth",
            "unit": rec.depth_unit,
            "views": views,
        }
        zf.writestr(DEPTH_SCALE_FILE, json.dumps(doc, indent=2), compress_type=zipfile.ZIP_DEFLATED)
    return buf.getvalue()


NORMALS_FILE = "normals.json"


def normals_png_zip_bytes(rec: Reconstruction, cameras: Cameras | None = None) -> bytes:
    """A zip of one 16-bit RGB normal PNG per view (`da3_core.scene.normals.normals_png16_bytes`).

    Layout: ``normals/0000.png``, ... and ``normals.json`` (the decoding, the axes and, per
    view, ``file``, ``name``, ``valid`` fraction). Normals are in each view's camera frame
    (OpenCV axes), from the depth and the intrinsics of ``cameras`` (or `resolve_cameras` of
    ``rec``: assumed ones for mono presets); they must be at ``rec``'s full size.
    """
    from da3_core.scene import geometry, normals

    cams = cameras if cameras is not None else geometry.resolve_cameras(rec)
    if np.shape(cams.intrinsics) != (rec.n_views, 3, 3):
        raise ValueError(f"normals need ({rec.n_views}, 3, 3) intrinsics, got {np.shape(cams.intrinsics)}")
    views = []
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for i in range(rec.n_views):
            n, valid = normals.normals_from_depth(rec.depth[i], cams.intrinsics[i])
            name = f"normals/{i:04d}.png"
            zf.writestr(name, normals.normals_png16_bytes(n, valid))
            views.append({"file": name, "name": rec.names[i], "valid": round(float(valid.mean()), 4)})
        doc = {
            "format": "da3-normals-png-v1",
            "encoding": normals.PNG16_TEXT,
            "frame": "each view's camera frame: x right, y down, z forward (OpenCV); normals face the camera",
            "intrinsics": "assumed (the preset predicts none)" if cams.assumed else "predicted",
            "views": views,
        }
        zf.writestr(NORMALS_FILE, json.dumps(doc, indent=2), compress_type=zipfile.ZIP_DEFLATED)
    return buf.getvalue()


def read_depth_png_zip(data: bytes) -> tuple[np.ndarray, dict[str, Any]]:
    """Decode a `depth_png_zip_bytes` archive.

    Returns:
        (N, H, W) float32 depth (NaN where no valid depth was stored), and the parsed
        ``depth_scale.json``.
    """
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        doc = json.loads(zf.read(DEPTH_SCALE_FILE))
        maps = []
        for view in doc["views"]:
            with Image.open(io.BytesIO(zf.read(view["file"]))) as img:
                codes = np.asarray(img)
            maps.append(decode_depth_u16(codes, view["scale"], view["offset"]))
    return np.stack(maps), doc


def colorize_depth(depth: np.ndarray, colormap: str = "Spectral", percentile: float = 2.0) -> np.ndarray:
    """DA3-style depth picture: inverse depth over its 2..98 percentiles, near first.

    Args:
        depth: (H, W) z-depth.
        colormap: Plotly colour scale name.
        percentile: Clip percentile at each end.

    Returns:
        (H, W, 3) uint8 RGB; invalid depth is black.
    """
    d = np.asarray(depth, dtype=np.float64)
    valid = np.isfinite(d) & (d > 0)
    inv = np.zeros_like(d)
    inv[valid] = 1.0 / d[valid]
    if valid.sum() > 10:
        lo, hi = np.percentile(inv[valid], [percentile, 100 - percentile])
    else:
        lo, hi = 0.0, 1.0
    if hi <= lo:
        lo, hi = lo - 1e-6, hi + 1e-6
    t = 1.0 - np.clip((inv - lo) / (hi - lo), 0.0, 1.0)
    out = _lut(colormap)[np.rint(t * 255).astype(np.int64)]
    out[~valid] = 0
    return out


def _lut(colormap: str) -> np.ndarray:
    import plotly.colors as pc

    samples = pc.sample_colorscale(pc.get_colorscale(colormap), list(np.linspace(0.0, 1.0, 256)), colortype="tuple")
    return np.clip(np.rint(np.asarray(samples, dtype=np.float64) * 255), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------


def write_bytes(run_dir: str | os.PathLike[str], filename: str, data: bytes) -> Path:
    """Write ``data`` to ``run_dir/filename`` atomically (a temporary file, then rename).

    ``filename`` must be a bare name: exports never write outside their run folder.
    """
    if Path(filename).name != filename or filename in ("", ".", ".."):
        raise ValueError(f"filename must be a bare file name inside the run folder, got {filename!r}")
    folder = Path(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{filename}.", dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, folder / filename)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return folder / filename


def export_bytes(
    fmt: str,
    rec: Reconstruction,
    cloud: PointCloud | None = None,
    cameras: Cameras | None = None,
    *,
    show_cameras: bool = True,
    colorized_depth: bool = False,
    hw: tuple[int, int] | None = None,
) -> bytes:
    """One export format as bytes (``fmt`` in `EXPORT_FORMATS`).

    ``glb`` and ``ply`` need ``cloud`` (the filtered, capped points); ``glb`` draws
    ``cameras`` when given and ``show_cameras``; ``npz`` and ``depth_png`` use ``rec``.
    ``hw``: the image size ``cameras``' intrinsics belong to, when not ``rec``'s (a long
    run's figures take every s-th pixel: `da3_core.scene.geometry.strided`).
    """
    if fmt in ("glb", "ply"):
        if cloud is None:
            raise ValueError(f"{fmt} export needs the filtered point cloud (cloud=apply_filters(...))")
        if fmt == "glb":
            return glb_bytes(cloud, cameras, hw or rec.hw, show_cameras=show_cameras)
        return ply_bytes(cloud)
    if fmt == "npz":
        return npz_bytes(rec)
    if fmt == "depth_png":
        return depth_png_zip_bytes(rec, colorized=colorized_depth)
    if fmt == "normals_png":
        full = cameras is not None and (hw is None or tuple(hw) == rec.hw)
        return normals_png_zip_bytes(rec, cameras if full else None)
    raise ValueError(f"unknown export format {fmt!r}: choose from {EXPORT_FORMATS}")
