"""The in-page 3D Gaussian viewer: DA3's Gaussians, packed compactly, drawn by the browser.

Renderer: Spark (``@sparkjsdev/spark``, on three.js): maintained, draws in WebGL2 (so it
runs in headless Chromium on SwiftShader, as the browser tests check), reads SPZ natively,
and its build already inlines its sort worker (a Blob URL) and WASM (base64), so the
bundle fetches nothing at run time.

The Gaussians travel as SPZ (Niantic's compressed splat format, version 3, gzip inside):
24-bit fixed-point positions, u8 alpha, colour (SH DC), log-scales and smallest-three
quaternions, about 9 bytes per Gaussian after gzip. The viewer script
(``static/splat_viewer.js``, built from ``viewer/``) and the data are inlined into one HTML
page (for ``st.iframe``/``components.html``), as `da3_core.app.viewer` does for the GLB: no
request leaves the page.

Coordinates stay in DA3's world frame (OpenCV axes, ``docs/CONVENTIONS.md``); the viewer
starts at the reference camera (DA3's world frame is its reference view's camera).

Pure functions only (numpy, no torch): the page calls `splat_viewer_html`.
"""

from __future__ import annotations

import base64
import functools
import gzip
import json
import math
import re
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from da3_core.app.text import md
from da3_core.contract import Gaussians, Reconstruction
from da3_core.scene import geometry

SPLAT_JS = Path(__file__).resolve().parents[1] / "static" / "splat_viewer.js"

SH_C0 = 0.28209479177387814
"""Degree-0 spherical-harmonic constant: ``rgb = 0.5 + SH_C0 * dc``."""

SPZ_MAGIC = 0x5053474E  # "NGSP"
SPZ_VERSION = 3
SPZ_COLOR_SCALE = 0.15
"""SPZ stores ``dc * 0.15 * 255 + 127.5`` (a wider range than 0..1 RGB)."""

MIN_OPACITY = 1.0 / 255.0
"""Gaussians less opaque than this draw nothing and are not sent."""

PAYLOAD_GOAL_MB_117K = 8.0
"""The issue's budget: the page for DA3-GIANT's 117,600 Gaussians stays within this (MB)."""

_SQRT1_2 = math.sqrt(0.5)


@functools.lru_cache(maxsize=1)
def viewer_script() -> str:
    """The bundled viewer (three.js, Spark, OrbitControls), read once."""
    return SPLAT_JS.read_text(encoding="utf-8")


# --------------------------------------------------------------------------------------
# Gaussians -> activated numpy arrays
# --------------------------------------------------------------------------------------


def opacities_1d(g: Gaussians) -> np.ndarray:
    """(G,) float32 opacities in 0..1: ``(G,)`` as is, ``(G, 1, D)`` by its first (DC) term."""
    op = np.asarray(g.opacities, dtype=np.float32)
    if op.ndim == 1:
        return op
    return op.reshape(op.shape[0], -1)[:, 0]


def rgb_dc(g: Gaussians) -> np.ndarray:
    """(G, 3) float32 base colour from the SH DC term (``0.5 + SH_C0 * dc``), unclipped."""
    return (0.5 + SH_C0 * np.asarray(g.harmonics, dtype=np.float32)[:, :, 0]).astype(np.float32)


def _check(g: Gaussians) -> int:
    n = int(np.asarray(g.means).shape[0])
    shapes = {"means": (n, 3), "scales": (n, 3), "rotations": (n, 4)}
    for name, shape in shapes.items():
        if np.asarray(getattr(g, name)).shape != shape:
            raise ValueError(f"Gaussians.{name} must be {shape}, got {np.asarray(getattr(g, name)).shape}")
    h = np.asarray(g.harmonics)
    if h.ndim != 3 or h.shape[:2] != (n, 3) or h.shape[2] < 1:
        raise ValueError(f"Gaussians.harmonics must be ({n}, 3, D), got {h.shape}")
    if opacities_1d(g).shape != (n,):
        raise ValueError(f"Gaussians.opacities must be ({n},) or ({n}, 1, D), got {np.asarray(g.opacities).shape}")
    return n


def visible_mask(g: Gaussians, min_opacity: float = MIN_OPACITY) -> np.ndarray:
    """(G,) bool: finite Gaussians with positive scales that are at least ``min_opacity`` opaque."""
    _check(g)
    finite = np.isfinite(g.means).all(1) & np.isfinite(g.scales).all(1) & np.isfinite(g.rotations).all(1)
    finite &= np.isfinite(np.asarray(g.harmonics)[:, :, 0]).all(1)
    op = opacities_1d(g)
    norms = np.linalg.norm(np.asarray(g.rotations, dtype=np.float64), axis=1)
    return finite & np.isfinite(op) & (op >= min_opacity) & (np.asarray(g.scales) > 0).all(1) & (norms > 1e-12)


# --------------------------------------------------------------------------------------
# SPZ (version 3) writer and reader
# --------------------------------------------------------------------------------------


def _fractional_bits(means: np.ndarray) -> int:
    """Most fractional bits (at most 16) such that every coordinate fits 24-bit fixed point."""
    extent = float(np.abs(means).max()) if means.size else 0.0
    if extent <= 0:
        return 16
    # |x| * 2**fb must stay below 2**23 - 1.
    fb = 22 - math.ceil(math.log2(extent))
    if fb < 0:
        raise ValueError(f"Gaussians span up to {extent:.3g} units from the origin: too far for SPZ's 24-bit positions")
    return min(16, fb)


def _pack_quaternions(wxyz: np.ndarray) -> np.ndarray:
    """(G, 4) uint8: SPZ v3 smallest-three quaternions (xyzw order, 9 bits + sign each)."""
    q = np.asarray(wxyz, dtype=np.float64)
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    xyzw = np.stack([q[:, 1], q[:, 2], q[:, 3], q[:, 0]], axis=1)
    largest = np.abs(xyzw).argmax(axis=1)
    negate = xyzw[np.arange(len(xyzw)), largest] < 0
    comp = largest.astype(np.uint32)
    for i in range(4):
        take = largest != i
        v = xyzw[:, i]
        negbit = ((v < 0) ^ negate).astype(np.uint32)
        mag = np.floor(511.0 * (np.abs(v) / _SQRT1_2) + 0.5).clip(0, 511).astype(np.uint32)
        comp = np.where(take, (comp << np.uint32(10)) | (negbit << np.uint32(9)) | mag, comp)
    return comp.astype("<u4").view(np.uint8).reshape(-1, 4)


def _unpack_quaternions(packed: np.ndarray) -> np.ndarray:
    """(G, 4) uint8 smallest-three -> (G, 4) float32 quaternions, wxyz."""
    comp = np.ascontiguousarray(packed, dtype=np.uint8).view("<u4").reshape(-1).astype(np.uint64)
    largest = (comp >> 30).astype(np.int64)
    xyzw = np.zeros((len(comp), 4), dtype=np.float64)
    rest = comp.copy()
    for i in (3, 2, 1, 0):
        take = largest != i
        mag = (rest & 511).astype(np.float64)
        neg = ((rest >> 9) & 1).astype(bool)
        val = _SQRT1_2 * mag / 511.0
        xyzw[:, i] = np.where(take, np.where(neg, -val, val), 0.0)
        rest = np.where(take, rest >> 10, rest)
    big = np.sqrt(np.clip(1.0 - (xyzw**2).sum(1), 0.0, None))
    xyzw[np.arange(len(comp)), largest] = big
    return np.stack([xyzw[:, 3], xyzw[:, 0], xyzw[:, 1], xyzw[:, 2]], axis=1).astype(np.float32)


def _u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def pack_spz(g: Gaussians, *, min_opacity: float = MIN_OPACITY, compresslevel: int = 6) -> bytes:
    """The Gaussians as an SPZ file (version 3, degree-0 colour, gzip), for the viewer.

    Gaussians that draw nothing (non-finite, zero scale, opacity below ``min_opacity``) are
    left out. Only the SH DC term is kept (view-independent colour), as DA3's PLY writer does.

    Args:
        g: Gaussians in world space (activated: scales are standard deviations, opacity 0..1).
        min_opacity: Gaussians less opaque than this are dropped.
        compresslevel: gzip level.

    Returns:
        The SPZ bytes (gzip stream).

    Raises:
        ValueError: Bad shapes, or positions too far from the origin for 24-bit fixed point.
    """
    keep = visible_mask(g, min_opacity)
    means = np.asarray(g.means, dtype=np.float64)[keep]
    n = int(keep.sum())
    fb = _fractional_bits(means)
    fixed = np.round(means * (1 << fb)).astype("<i4").reshape(-1)
    positions = fixed.view(np.uint8).reshape(-1, 4)[:, :3]  # little-endian low 3 bytes (two's complement)
    alphas = _u8(opacities_1d(g)[keep].astype(np.float64) * 255.0)
    dc = np.asarray(g.harmonics, dtype=np.float64)[keep][:, :, 0]
    colors = _u8(dc * (SPZ_COLOR_SCALE * 255.0) + 127.5)
    scales = _u8((np.log(np.asarray(g.scales, dtype=np.float64)[keep]) + 10.0) * 16.0)
    rotations = _pack_quaternions(np.asarray(g.rotations)[keep])
    header = struct.pack("<IIIBBBB", SPZ_MAGIC, SPZ_VERSION, n, 0, fb, 0, 0)
    body = b"".join(
        [header, positions.tobytes(), alphas.tobytes(), colors.tobytes(), scales.tobytes(), rotations.tobytes()]
    )
    return gzip.compress(body, compresslevel=compresslevel, mtime=0)


@dataclass(frozen=True)
class SpzContents:
    """What an SPZ file holds, decoded (for checks; the browser decodes it for drawing).

    Attributes:
        means: (G, 3) float32.
        scales: (G, 3) float32 standard deviations.
        rotations: (G, 4) float32 unit quaternions, wxyz.
        rgb: (G, 3) float32 base colour (``0.5 + SH_C0 * dc``).
        opacities: (G,) float32, 0..1.
        fractional_bits: The fixed-point precision of the positions.
    """

    means: np.ndarray
    scales: np.ndarray
    rotations: np.ndarray
    rgb: np.ndarray
    opacities: np.ndarray
    fractional_bits: int

    def __len__(self) -> int:
        return int(self.means.shape[0])


def read_spz(data: bytes) -> SpzContents:
    """Decode an SPZ file (version 3, degree-0 colour) as `pack_spz` writes it."""
    raw = gzip.decompress(data)
    magic, version, n, sh_degree, fb, _flags, _ = struct.unpack_from("<IIIBBBB", raw)
    if magic != SPZ_MAGIC or version != SPZ_VERSION:
        raise ValueError(f"not an SPZ v3 file (magic {magic:#x}, version {version})")
    if sh_degree != 0:
        raise ValueError(f"SPZ with SH degree {sh_degree} is not read here")
    off = 16
    pos = np.frombuffer(raw, np.uint8, n * 9, off).reshape(-1, 3)
    off += n * 9
    fixed = pos[:, 0].astype(np.int32) | (pos[:, 1].astype(np.int32) << 8) | (pos[:, 2].astype(np.int32) << 16)
    fixed = np.where(fixed & 0x800000, fixed - (1 << 24), fixed)
    means = (fixed.astype(np.float64) / (1 << fb)).reshape(n, 3)
    alphas = np.frombuffer(raw, np.uint8, n, off)
    off += n
    colors = np.frombuffer(raw, np.uint8, n * 3, off).reshape(n, 3)
    off += n * 3
    scales = np.frombuffer(raw, np.uint8, n * 3, off).reshape(n, 3)
    off += n * 3
    rot = _unpack_quaternions(np.frombuffer(raw, np.uint8, n * 4, off).reshape(n, 4))
    dc = (colors.astype(np.float64) / 255.0 - 0.5) / SPZ_COLOR_SCALE
    return SpzContents(
        means=means.astype(np.float32),
        scales=np.exp(scales.astype(np.float64) / 16.0 - 10.0).astype(np.float32),
        rotations=rot,
        rgb=(0.5 + SH_C0 * dc).astype(np.float32),
        opacities=(alphas.astype(np.float32) / 255.0),
        fractional_bits=int(fb),
    )


# --------------------------------------------------------------------------------------
# 3DGS PLY (DA3's writer) -> Gaussians
# --------------------------------------------------------------------------------------

_PLY_TYPES = {
    "float": "f4",
    "float32": "f4",
    "double": "f8",
    "float64": "f8",
    "uchar": "u1",
    "uint8": "u1",
    "char": "i1",
    "int8": "i1",
    "ushort": "u2",
    "uint16": "u2",
    "short": "i2",
    "int16": "i2",
    "uint": "u4",
    "uint32": "u4",
    "int": "i4",
    "int32": "i4",
}


def read_gs_ply(data: bytes) -> Gaussians:
    """Parse a standard 3DGS PLY (as DA3's ``export_to_gs_ply`` writes it) into `Gaussians`.

    The file stores raw parameters (``scale_*`` as log, ``opacity`` as a logit, ``rot_*`` as
    wxyz, ``f_dc_*`` and optional ``f_rest_*`` SH coefficients); they come back activated, as
    the contract has them: scales ``exp``, opacity ``sigmoid``, rotations normalised.

    Raises:
        ValueError: Not a binary little-endian PLY with the 3DGS vertex properties.
    """
    end = data.find(b"end_header")
    if not data.startswith(b"ply") or end < 0:
        raise ValueError("not a PLY file (no 'ply' magic or no end_header)")
    body_start = data.index(b"\n", end) + 1
    lines = data[:end].decode("ascii", "replace").splitlines()
    if "format binary_little_endian 1.0" not in (ln.strip() for ln in lines):
        raise ValueError("only binary little-endian PLY is read")
    count, in_vertex = 0, False
    fields: list[tuple[str, str]] = []  # (name, numpy type) of each vertex property
    for ln in lines:
        parts = ln.split()
        if parts[:1] == ["element"]:
            if in_vertex:
                break  # only the vertex element, which comes first in 3DGS files
            in_vertex = parts[1] == "vertex"
            if in_vertex:
                count = int(parts[2])
            elif count == 0 and not fields:
                raise ValueError("the first PLY element must be 'vertex'")
        elif parts[:1] == ["property"] and in_vertex:
            if parts[1] == "list":
                raise ValueError("list properties are not expected in a 3DGS PLY")
            fields.append((parts[2], "<" + _PLY_TYPES[parts[1]]))
    names = [f for f, _ in fields]
    need = [
        "x",
        "y",
        "z",
        "f_dc_0",
        "f_dc_1",
        "f_dc_2",
        "opacity",
        "scale_0",
        "scale_1",
        "scale_2",
        "rot_0",
        "rot_1",
        "rot_2",
        "rot_3",
    ]
    missing = [f for f in need if f not in names]
    if missing:
        raise ValueError(f"not a 3DGS PLY: missing vertex properties {missing}")
    v = np.frombuffer(data, dtype=np.dtype(fields), count=count, offset=body_start)

    def col(*ks: str) -> np.ndarray:
        return np.stack([v[k].astype(np.float32) for k in ks], axis=1)

    rest = sorted((f for f in names if re.fullmatch(r"f_rest_\d+", f)), key=lambda f: int(f[7:]))
    dc = col("f_dc_0", "f_dc_1", "f_dc_2")[:, :, None]
    if rest:  # 3DGS order: all R coefficients, then G, then B
        harmonics = np.concatenate([dc, col(*rest).reshape(count, 3, -1)], axis=2)
    else:
        harmonics = dc
    rot = col("rot_0", "rot_1", "rot_2", "rot_3")
    norm = np.linalg.norm(rot, axis=1, keepdims=True)
    return Gaussians(
        means=col("x", "y", "z"),
        scales=np.exp(col("scale_0", "scale_1", "scale_2")),
        rotations=(rot / np.where(norm > 0, norm, 1.0)).astype(np.float32),
        harmonics=harmonics.astype(np.float32),
        opacities=(1.0 / (1.0 + np.exp(-v["opacity"].astype(np.float64)))).astype(np.float32),
    )


# --------------------------------------------------------------------------------------
# Cameras
# --------------------------------------------------------------------------------------


def gaussian_cameras(rec: Reconstruction, cameras: geometry.Cameras) -> geometry.Cameras:
    """The cameras in the Gaussians' frame.

    For metric runs DA3 keeps the Gaussians unscaled: its video renderer divides the camera
    translations by ``scale_factor`` (``export_to_gs_video``); so do we.
    """
    if not (rec.is_metric and rec.scale_factor):
        return cameras
    ext = np.array(cameras.extrinsics, dtype=np.float64, copy=True)
    ext[:, :, 3] /= float(rec.scale_factor)
    return geometry.Cameras(ext, cameras.intrinsics, cameras.assumed, cameras.fov_deg)


def reference_index(cameras: geometry.Cameras) -> int:
    """The reference camera: the one whose pose is closest to identity (DA3's world frame is
    its reference view's camera); the first on a tie."""
    eye = np.eye(3, 4)
    return int(np.argmin(np.abs(cameras.extrinsics - eye).sum(axis=(1, 2))))


def _quat_xyzw(r: np.ndarray) -> list[float]:
    """Rotation matrix -> unit quaternion, xyzw (three.js order)."""
    m = np.asarray(r, dtype=np.float64)
    t = np.trace(m)
    if t > 0:
        s = math.sqrt(t + 1.0) * 2
        q = [(m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s, 0.25 * s]
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = math.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2]) * 2
        q = [0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s, (m[2, 1] - m[1, 2]) / s]
    elif m[1, 1] > m[2, 2]:
        s = math.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2]) * 2
        q = [(m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s, (m[0, 2] - m[2, 0]) / s]
    else:
        s = math.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1]) * 2
        q = [(m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s, (m[1, 0] - m[0, 1]) / s]
    qa = np.asarray(q)
    return [float(x) for x in qa / np.linalg.norm(qa)]


# OpenCV camera (x right, y down, z forward) -> three.js camera (x right, y up, looks along -z).
_CV_TO_GL = np.diag([1.0, -1.0, -1.0])


def viewer_camera(cameras: geometry.Cameras, hw: tuple[int, int], means: np.ndarray, index: int | None = None) -> dict:
    """The viewer's start (and reset) camera: the reference camera's pose and vertical field of
    view, orbiting about the point straight ahead at the Gaussians' median depth.

    Returns:
        ``{"index", "position", "quaternion" (xyzw, three.js camera), "up", "target", "fovY",
        "near", "far"}`` (plain floats, JSON-ready).
    """
    i = reference_index(cameras) if index is None else int(index)
    c2w = cameras.cam_to_world()[i]
    r, centre = c2w[:3, :3], c2w[:3, 3]
    h, _w = hw
    fy = float(cameras.intrinsics[i][1, 1])
    fov_y = math.degrees(2 * math.atan((h / 2) / fy)) if fy > 0 else 50.0
    ext = cameras.extrinsics[i]
    pts = np.asarray(means, dtype=np.float64)
    pts = pts[:: max(1, len(pts) // 50_000)]
    z = pts @ ext[:, :3].T[:, 2] + ext[2, 3] if len(pts) else np.zeros(0)
    z = z[np.isfinite(z) & (z > 0)]
    size = geometry.scene_scale(pts) if len(pts) else 1.0
    depth = float(np.median(z)) if len(z) else size
    return {
        "index": i,
        "position": [float(v) for v in centre],
        "quaternion": _quat_xyzw(r @ _CV_TO_GL),
        "up": [float(v) for v in -r[:, 1]],
        "target": [float(v) for v in centre + r[:, 2] * depth],
        "fovY": float(fov_y),
        "near": float(max(size, depth) / 1000.0),
        "far": float(max(size, depth) * 100.0),
    }


def frustum_lines(cameras: geometry.Cameras, hw: tuple[int, int], size: float) -> tuple[list[float], list[float]]:
    """Camera wireframes for the viewer: flat world segment end points and one RGB (0..1) per
    end point (each camera its colour, as in the GLB)."""
    segs = geometry.frustum_segments(cameras, hw, size)  # (N, 8, 2, 3)
    n = cameras.n_views
    colours = np.repeat(np.array([geometry.camera_rgb(i, n) for i in range(n)], dtype=np.float64) / 255.0, 16, axis=0)
    return [round(float(v), 6) for v in segs.reshape(-1)], [round(float(v), 4) for v in colours.reshape(-1)]


# --------------------------------------------------------------------------------------
# The page
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SplatPayload:
    """What the page embeds: the SPZ bytes and the viewer options."""

    spz: bytes
    options: dict
    n_sent: int
    n_total: int


def splat_payload(
    g: Gaussians,
    cameras: geometry.Cameras,
    hw: tuple[int, int],
    *,
    splat_scale: float = 1.0,
    show_cameras: bool = True,
    background: str = "#0e1117",
    mode: str = "orbit",
    camera_size: float = 0.03,
    reference: int | None = None,
) -> SplatPayload:
    """Pack ``g`` and the viewer's options (start camera, frustums, controls).

    Args:
        g: The Gaussians (world frame).
        cameras: Cameras in the Gaussians' frame (`gaussian_cameras`).
        hw: (H, W) processed image size (field of view, frustum shape).
        splat_scale: Initial multiplier of every Gaussian's size.
        show_cameras: Show the camera frustums at first.
        background: Hex colour behind the scene (``#rgb`` or ``#rrggbb``).
        mode: ``"orbit"`` or ``"fly"`` at first.
        camera_size: Frustum depth as a fraction of the scene size (DA3's 0.03).
        reference: Start at this camera instead of the reference camera.
    """
    if mode not in ("orbit", "fly"):
        raise ValueError(f"mode must be 'orbit' or 'fly', got {mode!r}")
    if not re.fullmatch(r"#[0-9a-fA-F]{6}|#[0-9a-fA-F]{3}", background):
        raise ValueError(f"background must be a hex colour such as '#0e1117', got {background!r}")
    keep = visible_mask(g)
    spz = pack_spz(g)
    means = np.asarray(g.means, dtype=np.float64)[keep]
    size = geometry.scene_scale(means) if len(means) else 1.0
    segments, colours = frustum_lines(cameras, hw, camera_size * size)
    options = {
        "count": int(keep.sum()),
        "camera": viewer_camera(cameras, hw, means, reference),
        "frustums": segments,
        "frustumColors": colours,
        "sceneSize": float(size),
        "splatScale": float(splat_scale),
        "showCameras": bool(show_cameras),
        "background": background,
        "mode": mode,
    }
    return SplatPayload(spz, options, int(keep.sum()), int(len(keep)))


def splat_viewer_html(
    g: Gaussians,
    cameras: geometry.Cameras,
    hw: tuple[int, int],
    *,
    height: int = 620,
    splat_scale: float = 1.0,
    show_cameras: bool = True,
    background: str = "#0e1117",
    mode: str = "orbit",
    reference: int | None = None,
) -> str:
    """A self-contained HTML page that renders ``g`` in the browser (for ``st.iframe``).

    Controls inside the page: orbit / fly, splat scale, cameras on/off, reset to the
    reference camera. The page sets ``data-state="ready"`` on ``#da3-splat`` (and logs
    ``DA3_SPLAT_READY <ms>``) once the first frame with the Gaussians is drawn.

    Args: see `splat_payload`; ``height`` is the viewer height in CSS pixels.

    Returns:
        HTML with the script and the data inlined; no external requests.
    """
    payload = splat_payload(
        g,
        cameras,
        hw,
        splat_scale=splat_scale,
        show_cameras=show_cameras,
        background=background,
        mode=mode,
        reference=reference,
    )
    return html_page(payload, height=height)


def html_page(payload: SplatPayload, *, height: int = 620) -> str:
    """The HTML page for a `SplatPayload` (see `splat_viewer_html`)."""
    opts = payload.options
    data = base64.b64encode(payload.spz).decode("ascii")
    options = json.dumps(opts, separators=(",", ":")).replace("</", "<\\/")
    script = viewer_script().replace("</script", "<\\/script")
    background = opts["background"]  # a hex colour (checked in `splat_payload`)
    scale = float(opts["splatScale"])
    fly = opts["mode"] == "fly"
    return f"""<!doctype html>
<html><head><meta charset="utf-8">
<style>
  html, body {{ margin: 0; padding: 0; background: {background}; overflow: hidden; font: 13px sans-serif; color: #ccd; }}
  #da3-splat {{ position: relative; width: 100%; height: {int(height)}px; }}
  #da3-splat canvas {{ display: block; outline: none; }}
  .da3-status {{ position: absolute; left: 8px; bottom: 6px; pointer-events: none; opacity: .85; }}
  #da3-bar {{ position: absolute; right: 8px; top: 6px; display: flex; gap: 10px; align-items: center; background: rgba(14,17,23,.6); padding: 3px 6px; border-radius: 4px; }}
  #da3-bar button, #da3-bar input, #da3-bar select {{ font: inherit; }}
</style></head>
<body>
<div id="da3-splat" data-state="loading">
  <div id="da3-bar">
    <label>mode <select id="da3-mode"><option value="orbit"{"" if fly else " selected"}>orbit</option><option value="fly"{" selected" if fly else ""}>fly (WASD)</option></select></label>
    <label>splat scale <input id="da3-scale" type="range" min="0.1" max="3" step="0.05" value="{scale:g}"></label>
    <label><input id="da3-cams" type="checkbox" {"checked" if opts["showCameras"] else ""}> cameras</label>
    <button id="da3-reset" type="button">reset view</button>
  </div>
</div>
<script>{script}</script>
<script>
  (function () {{
    var el = document.getElementById('da3-splat');
    var viewer = DA3SplatViewer.mount(el, "{data}", {options});
    window.da3SplatViewer = viewer;
    if (!viewer) return;
    document.getElementById('da3-mode').addEventListener('change', function (e) {{ viewer.setMode(e.target.value); }});
    document.getElementById('da3-scale').addEventListener('input', function (e) {{ viewer.setSplatScale(parseFloat(e.target.value)); }});
    document.getElementById('da3-cams').addEventListener('change', function (e) {{ viewer.setCamerasVisible(e.target.checked); }});
    document.getElementById('da3-reset').addEventListener('click', function () {{ viewer.resetView(); }});
  }})();
</script>
</body></html>"""


# --------------------------------------------------------------------------------------
# A run's viewer (what the Point cloud page shows)
# --------------------------------------------------------------------------------------

NO_GAUSSIANS = (
    "3D Gaussian viewer: this run has no Gaussians (they come from presets with a GS head, "
    "DA3 Giant or Nested Giant-Large, run with 'Infer 3D Gaussians')."
)
"""The one line the page shows when the viewer cannot be offered."""


@dataclass(frozen=True)
class RunViewer:
    """A run's Gaussian viewer, ready for ``st.iframe``.

    Attributes:
        html: The self-contained page.
        n_sent: Gaussians drawn (those that can be seen).
        n_total: Gaussians in the run.
        reference: Index of the view the viewer starts from.
        payload_mb: Size of ``html`` in MB (10^6 bytes): what travels to the browser.
    """

    html: str
    n_sent: int
    n_total: int
    reference: int
    payload_mb: float


def run_viewer(
    rec: Reconstruction, cameras: geometry.Cameras, *, show_cameras: bool = True, height: int = 620
) -> RunViewer:
    """The Gaussian viewer of a run: its Gaussians with its cameras (in the Gaussians' frame).

    Raises:
        ValueError: The run has no Gaussians.
    """
    if rec.gaussians is None:
        raise ValueError(NO_GAUSSIANS)
    payload = splat_payload(rec.gaussians, gaussian_cameras(rec, cameras), rec.hw, show_cameras=show_cameras)
    html = html_page(payload, height=height)
    return RunViewer(
        html, payload.n_sent, payload.n_total, int(payload.options["camera"]["index"]), len(html.encode("utf-8")) / 1e6
    )


def run_viewer_caption(view: RunViewer, names: tuple[str, ...] | list[str]) -> str:
    """One line of Markdown under the viewer: what is drawn, where it starts, how much was sent
    (the view name is escaped)."""
    hidden = view.n_total - view.n_sent
    left_out = f" ({hidden:,} fully transparent or invalid left out)" if hidden else ""
    ref = (
        f"view {view.reference}: {md(names[view.reference])}"
        if 0 <= view.reference < len(names)
        else f"view {view.reference}"
    )
    return (
        f"{view.n_sent:,} of {view.n_total:,} Gaussians{left_out}, drawn by your browser (WebGL2, Spark): nothing renders on the "
        f"server. Starts at the reference camera ({ref}); orbit or fly, splat scale, cameras and reset are in the viewer's bar. "
        f"Page size {view.payload_mb:.1f} MB."
    )
