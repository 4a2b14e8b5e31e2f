"""Camera maths for the Gaussian viewer: which cameras the Gaussians were made in, the reference
view, and the viewer's start camera and frustum lines in three.js axes.
"""

from __future__ import annotations

import math

import numpy as np

from da3_core.contract import Reconstruction
from da3_core.scene import geometry


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
