"""Surface normals from a depth map and its intrinsics, their colours and a 16-bit PNG (numpy).

Normals are unit vectors in the view's camera frame (OpenCV axes: x right, y down, z
forward), pointing towards the camera (``n . X < 0`` for the point X they belong to).

Method: the 3D points of pixel (u, v) and its neighbours along u and along v span the
surface; the normal is the cross product of the two difference vectors, which is exact for a
plane. With ``X = d K^-1 [u, v, 1]`` it has a closed form that needs only depth differences
(no 3D point arrays): with ``Du = d(u +- 1, v) - d(u, v)`` (per unit step in +u) and ``du`` the
neighbour's depth (likewise ``Dv``, ``dv`` along v),

    n ~ -( -fx Du dv,  -fy Dv du,  (u - cx) Du dv + (v - cy) Dv du + du dv ).

Robust at depth edges: per pixel and per axis the one-sided difference with the smaller
absolute depth change is used (forward or backward), so a pixel next to an occluding edge
takes its slope from its own surface. A pixel is invalid when its depth is invalid, when no
neighbour along an axis is valid, or when even the smaller step changes depth by more than
``max_rel_jump`` times the depth (it is then on a one-pixel-wide sliver or a grazing surface).

Conventions: ``docs/CONVENTIONS.md`` (z-depth, pixel (u, v) at the integer coordinate, K in
pixels of the depth map).
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

DEFAULT_MAX_REL_JUMP = 0.1
"""A neighbour step that changes depth by more than 10 % of the depth is a discontinuity."""
PNG16_TEXT = "normal = value / 65535 * 2 - 1 per channel (R, G, B = x, y, z; OpenCV camera axes); (0, 0, 0): invalid"


def _one_sided(d: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Per pixel along ``axis``: the depth change per unit step in + direction with the smaller
    magnitude (forward or backward), and the depth of that neighbour. NaN where no
    neighbour is valid (``d`` holds NaN at invalid pixels)."""
    h, w = d.shape
    # Padded with NaN on both ends: forward and backward differences are views of one array.
    if axis == 1:
        dp = np.full((h, w + 2), np.nan, dtype=d.dtype)
        dp[:, 1:-1] = d
        diff = dp[:, 1:] - dp[:, :-1]  # diff[:, u + 1] = d[u + 1] - d[u]
        lo, hi, nb_lo, nb_hi = (
            (slice(None), slice(None, -1)),
            (slice(None), slice(1, None)),
            (slice(None), slice(None, -2)),
            (slice(None), slice(2, None)),
        )
    else:
        dp = np.full((h + 2, w), np.nan, dtype=d.dtype)
        dp[1:-1] = d
        diff = dp[1:] - dp[:-1]
        lo, hi, nb_lo, nb_hi = (
            (slice(None, -1), slice(None)),
            (slice(1, None), slice(None)),
            (slice(None, -2), slice(None)),
            (slice(2, None), slice(None)),
        )
    mag = np.abs(diff)
    mag[np.isnan(mag)] = np.inf
    use_b = mag[lo] < mag[hi]
    step = np.where(use_b, diff[lo], diff[hi])
    nb = np.where(use_b, dp[nb_lo], dp[nb_hi])
    return step, nb


def normals_from_depth(
    depth: np.ndarray, intrinsics: np.ndarray, *, max_rel_jump: float = DEFAULT_MAX_REL_JUMP
) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel unit normals of one view, camera frame, facing the camera.

    Args:
        depth: (H, W) z-depth; valid where finite and > 0.
        intrinsics: (3, 3) pinhole K in pixels of ``depth``.
        max_rel_jump: Largest ``|depth step| / depth`` of the chosen one-sided difference
            still taken as one surface (> 0).

    Returns:
        ``(normals, valid)``: (H, W, 3) float32 unit vectors (0 where invalid) and (H, W) bool.
    """
    depth = np.asarray(depth)
    if depth.ndim != 2:
        raise ValueError(f"depth must be (H, W), got {depth.shape}")
    k = np.asarray(intrinsics, dtype=np.float64)
    if k.shape != (3, 3):
        raise ValueError(f"intrinsics must be (3, 3), got {k.shape}")
    if not (np.isfinite(max_rel_jump) and max_rel_jump > 0):
        raise ValueError(f"max_rel_jump must be finite and > 0, got {max_rel_jump}")
    h, w = depth.shape
    d = depth.astype(np.float32, copy=True)
    ok = np.isfinite(d) & (d > 0)
    d[~ok] = np.nan
    du_step, du_nb = _one_sided(d, 1)
    dv_step, dv_nb = _one_sided(d, 0)
    fx, fy, cx, cy = np.float32(k[0, 0]), np.float32(k[1, 1]), np.float32(k[0, 2]), np.float32(k[1, 2])
    u = np.arange(w, dtype=np.float32) - cx
    v = (np.arange(h, dtype=np.float32) - cy)[:, None]
    a = du_step * dv_nb  # Du dv
    b = dv_step * du_nb  # Dv du
    nz = u * a
    nz += v * b
    nz += du_nb * dv_nb
    n = np.empty((h, w, 3), dtype=np.float32)
    np.multiply(a, fx, out=n[..., 0])
    np.multiply(b, fy, out=n[..., 1])
    np.negative(nz, out=n[..., 2])
    norm = np.sqrt(np.einsum("hwc,hwc->hw", n, n))
    lim = np.float32(max_rel_jump) * d
    with np.errstate(invalid="ignore"):
        valid = ok & (np.abs(du_step) <= lim) & (np.abs(dv_step) <= lim) & (norm > 0)
    scale = np.zeros((h, w), dtype=np.float32)
    np.divide(1.0, norm, out=scale, where=valid)
    n *= scale[..., None]
    return n, valid


def normals_to_rgb(normals: np.ndarray, valid: np.ndarray | None = None, *, axes: str = "opengl") -> np.ndarray:
    """Colour-code normals as uint8 RGB: ``round((c + 1) / 2 * 255)`` per channel.

    ``axes="opengl"`` (default, the usual look of normal maps: a wall facing the camera is
    lilac-blue) codes ``(x, -y, -z)`` of the OpenCV normal, i.e. x right, y up, z towards the
    viewer; ``axes="opencv"`` codes ``(x, y, z)`` as they are. Invalid pixels are black.

    Args:
        normals: (H, W, 3) unit normals, OpenCV camera axes.
        valid: (H, W) bool, or None for all valid.
    """
    n = np.asarray(normals, dtype=np.float32)
    if n.ndim != 3 or n.shape[2] != 3:
        raise ValueError(f"normals must be (H, W, 3), got {n.shape}")
    if axes == "opengl":
        sign = np.array([1.0, -1.0, -1.0], dtype=np.float32)
    elif axes == "opencv":
        sign = np.ones(3, dtype=np.float32)
    else:
        raise ValueError(f"axes must be 'opengl' or 'opencv', got {axes!r}")
    rgb = np.clip((n * sign + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8)
    if valid is not None:
        rgb[~np.asarray(valid, dtype=bool)] = 0
    return rgb


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def normals_png16_bytes(normals: np.ndarray, valid: np.ndarray | None = None, *, compress_level: int = 6) -> bytes:
    """A 16-bit RGB PNG of the normals: ``value = round((n + 1) / 2 * 65535)`` per channel,
    R, G, B = x, y, z in OpenCV camera axes (no flip), invalid pixels (0, 0, 0).

    So ``n = value / 65535 * 2 - 1`` (error <= 1.6e-5 per component); a valid normal is
    never (0, 0, 0) since it has unit length. The mapping is also written into the file as a
    ``tEXt`` chunk (key ``normal_mapping``).

    Written with zlib, not Pillow: Pillow 13 saves RGB images at 8 bits per channel only (its
    16-bit modes are single-channel), so the PNG is assembled here (colour type 2, bit depth
    16, filter 0). Any PNG reader with 16-bit support (OpenCV, imageio's freeimage, libpng)
    reads it; Pillow opens it too, reduced to 8 bits.

    Args:
        normals: (H, W, 3) unit normals.
        valid: (H, W) bool, or None for all valid.
        compress_level: zlib level 0..9.
    """
    n = np.asarray(normals, dtype=np.float32)
    if n.ndim != 3 or n.shape[2] != 3:
        raise ValueError(f"normals must be (H, W, 3), got {n.shape}")
    h, w, _ = n.shape
    vals = np.clip(np.rint((n + 1.0) * 32767.5), 0, 65535).astype(">u2")
    if valid is not None:
        vals[~np.asarray(valid, dtype=bool)] = 0
    raw = np.zeros((h, 1 + w * 6), dtype=np.uint8)  # one filter byte (0: None) per row
    raw[:, 1:] = vals.reshape(h, w * 3).view(np.uint8)
    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    text = b"normal_mapping\x00" + PNG16_TEXT.encode("latin-1")
    return b"".join(
        [
            b"\x89PNG\r\n\x1a\n",
            _png_chunk(b"IHDR", ihdr),
            _png_chunk(b"tEXt", text),
            _png_chunk(b"IDAT", zlib.compress(raw.tobytes(), compress_level)),
            _png_chunk(b"IEND", b""),
        ]
    )


def read_normals_png16(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of `normals_png16_bytes` for the PNGs it writes (16-bit RGB, filter 0 rows).

    Returns:
        ``(normals, valid)``: (H, W, 3) float32 ``value / 65535 * 2 - 1`` (0 where invalid),
        (H, W) bool (not all three channels 0).

    Raises:
        ValueError: Not a PNG, not 16-bit RGB, interlaced, or rows with a filter other than
            0 (re-saved by another program: read it with a full PNG reader instead).
    """
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    pos = 8
    idat = []
    header = None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
    if header is None:
        raise ValueError("PNG without IHDR")
    w, h, depth, colour, _, _, interlace = header
    if depth != 16 or colour != 2 or interlace != 0:
        raise ValueError(f"expected a 16-bit RGB non-interlaced PNG, got bit depth {depth}, colour type {colour}")
    raw = np.frombuffer(zlib.decompress(b"".join(idat)), dtype=np.uint8).reshape(h, 1 + w * 6)
    if raw[:, 0].any():
        raise ValueError("PNG rows use filters other than 0; read it with a full PNG reader")
    vals = raw[:, 1:].copy().view(">u2").reshape(h, w, 3).astype(np.float32)
    valid = vals.any(axis=2)
    n = vals / np.float32(65535.0) * 2 - 1
    n[~valid] = 0
    return n, valid


__all__ = [
    "DEFAULT_MAX_REL_JUMP",
    "normals_from_depth",
    "normals_png16_bytes",
    "normals_to_rgb",
    "read_normals_png16",
]
