"""DA3's Gaussians for the in-page viewer: activated arrays, the SPZ codec and a 3DGS PLY reader.
The viewer's page is `da3_core.app.splat_view`; its camera maths `da3_core.scene.splat_cameras`.

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

Pure functions only (numpy, no torch).
"""

from __future__ import annotations

import gzip
import math
import re
import struct
from dataclasses import dataclass

import numpy as np

from da3_core.contract import Gaussians

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


"""The one line the page shows when the viewer cannot be offered."""
