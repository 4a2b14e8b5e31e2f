"""Synthetic scenes with analytic ground truth, as `Reconstruction` objects (no model).

The scene is the inside of an axis-aligned box ("a room") seen from a few pinhole
cameras. Depth maps are ray-cast analytically with numpy, so every pixel's world point is
known exactly. Conventions as in ``docs/CONVENTIONS.md``: OpenCV camera axes, extrinsics
world-to-camera, z-depth, pixel (u, v) = (column, row) at integer coordinates.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from da3_core.contract import ModelSpec, Reconstruction
from da3_core.scene.geometry import PointCloud

BOX_MIN = np.array([-2.0, -1.5, -1.0])
BOX_MAX = np.array([2.0, 1.5, 5.0])
H, W = 48, 64
FX = FY = 50.0
CX, CY = 32.0, 24.0


def rot_y(deg: float) -> np.ndarray:
    a = math.radians(deg)
    return np.array([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])


def rot_x(deg: float) -> np.ndarray:
    a = math.radians(deg)
    return np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])


def pinhole(fx: float = FX, fy: float = FY, cx: float = CX, cy: float = CY) -> np.ndarray:
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


def extrinsic_from_pose(r_c2w: np.ndarray, centre: Sequence[float]) -> np.ndarray:
    """(3, 4) world-to-camera [R|t] of a camera at ``centre`` with orientation ``r_c2w``."""
    r = np.asarray(r_c2w, dtype=np.float64).T
    return np.concatenate([r, (-r @ np.asarray(centre, dtype=np.float64))[:, None]], axis=1)


def box_depth(k: np.ndarray, ext: np.ndarray, hw: tuple[int, int] = (H, W)) -> np.ndarray:
    """Analytic z-depth of the inside of the box for one camera. (H, W) float64."""
    h, w = hw
    r, t = ext[:, :3], ext[:, 3]
    centre = -r.T @ t
    us, vs = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    rays_cam = np.stack([us, vs, np.ones_like(us)], -1) @ np.linalg.inv(k).T  # z = 1
    dirs = rays_cam @ r  # world direction per unit z-depth (R^T applied row-wise)
    with np.errstate(divide="ignore"):
        bound = np.where(dirs > 0, BOX_MAX, BOX_MIN)
        t_axes = np.where(dirs != 0, (bound - centre) / dirs, np.inf)
    return t_axes.min(axis=-1)


def box_world_points(k: np.ndarray, ext: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """(H, W, 3) world points o + depth * d computed independently of the code under test."""
    h, w = depth.shape
    r, t = ext[:, :3], ext[:, 3]
    centre = -r.T @ t
    us, vs = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    rays_cam = np.stack([us, vs, np.ones_like(us)], -1) @ np.linalg.inv(k).T
    return centre + (rays_cam * depth[..., None]) @ r


def on_box_surface(points: np.ndarray, tol: float = 1e-4) -> np.ndarray:
    """(M,) bool: inside the box (within ``tol``) and on at least one face."""
    p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    inside = ((p >= BOX_MIN - tol) & (p <= BOX_MAX + tol)).all(axis=1)
    on_face = ((np.abs(p - BOX_MIN) <= tol) | (np.abs(p - BOX_MAX) <= tol)).any(axis=1)
    return inside & on_face


def checker_images(n: int, hw: tuple[int, int] = (H, W)) -> np.ndarray:
    """(N, H, W, 3) uint8 images with varied, view-dependent colours."""
    h, w = hw
    vs, us = np.mgrid[0:h, 0:w]
    imgs = np.empty((n, h, w, 3), dtype=np.uint8)
    for i in range(n):
        imgs[i, ..., 0] = (us * 4 + 30 * i) % 256
        imgs[i, ..., 1] = (vs * 5 + 60 * i) % 256
        imgs[i, ..., 2] = ((us + vs) * 3 + 90 * i) % 256
    return imgs


def make_rec(
    depth: np.ndarray,
    *,
    conf: np.ndarray | None = None,
    extrinsics: np.ndarray | None = None,
    intrinsics: np.ndarray | None = None,
    images: np.ndarray | None = None,
    sky: np.ndarray | None = None,
    is_metric: bool = False,
    preset: str = "da3-small",
) -> Reconstruction:
    """A `Reconstruction` from numpy arrays, with test defaults for everything else."""
    depth = np.asarray(depth, dtype=np.float32)
    n, h, w = depth.shape
    return Reconstruction(
        depth=depth,
        conf=None if conf is None else np.asarray(conf, dtype=np.float32),
        extrinsics=None if extrinsics is None else np.asarray(extrinsics, dtype=np.float32),
        intrinsics=None if intrinsics is None else np.asarray(intrinsics, dtype=np.float32),
        images=checker_images(n, (h, w)) if images is None else images,
        sky=sky,
        is_metric=is_metric,
        scale_factor=None,
        gaussians=None,
        names=tuple(f"view_{i}.png" for i in range(n)),
        model=ModelSpec(kind="demo", ref=preset),
        preset=preset,
        device="cpu",
    )


def empty_cloud(unit: str = "m") -> PointCloud:
    """A `PointCloud` with no points (every filter removed everything)."""
    z = np.zeros(0, dtype=np.int32)
    return PointCloud(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8), z, z, 0, None, unit)


def box_cameras() -> tuple[np.ndarray, np.ndarray]:
    """Three cameras inside the box: (3, 3, 4) world-to-camera and (3, 3, 3) K.

    Camera 0 is the world frame (as DA3's reference view). Camera 2's principal point is
    chosen so that the world point seen by camera 0 at pixel (20, 30) projects exactly to
    integer pixel (40, 22) in camera 2 (see `shared_point`).
    """
    e0 = extrinsic_from_pose(np.eye(3), [0.0, 0.0, 0.0])
    e1 = extrinsic_from_pose(rot_y(20.0), [0.5, -0.2, 0.3])
    e2 = extrinsic_from_pose(rot_y(-25.0) @ rot_x(10.0), [-0.4, 0.1, -0.2])
    k0 = pinhole()
    k1 = pinhole(fx=45.0, fy=47.0, cx=31.5, cy=23.0)
    x = shared_point_world(k0, e0)
    xc = e2[:, :3] @ x + e2[:, 3]
    fx2, fy2 = 55.0, 55.0
    k2 = pinhole(fx=fx2, fy=fy2, cx=40 - fx2 * xc[0] / xc[2], cy=22 - fy2 * xc[1] / xc[2])
    return np.stack([e0, e1, e2]), np.stack([k0, k1, k2])


SHARED_PIXEL_VIEW0 = (20, 30)
SHARED_PIXEL_VIEW2 = (40, 22)


def shared_point_world(k0: np.ndarray, e0: np.ndarray) -> np.ndarray:
    """World point seen by camera 0 at `SHARED_PIXEL_VIEW0`. (3,) float64."""
    u, v = SHARED_PIXEL_VIEW0
    d = box_depth(k0, e0)[v, u]
    return box_world_points(k0, e0, box_depth(k0, e0))[v, u] if np.isfinite(d) else np.full(3, np.nan)


def box_scene(n_views: int = 3, *, is_metric: bool = False, with_conf: bool = True) -> Reconstruction:
    """The box seen from `box_cameras` (first ``n_views``), with poses and confidence."""
    ext, k = box_cameras()
    ext, k = ext[:n_views], k[:n_views]
    depth = np.stack([box_depth(k[i], ext[i]) for i in range(n_views)])
    conf = None
    if with_conf:
        rng = np.random.default_rng(7)
        conf = 1.0 + rng.random(depth.shape) * 4.0
    return make_rec(depth, conf=conf, extrinsics=ext, intrinsics=k, is_metric=is_metric)


def mono_box_scene(fov_deg: float = 60.0, *, is_metric: bool = False) -> Reconstruction:
    """One view of the box from the origin with intrinsics from ``fov_deg``, as a mono
    preset would give it: no poses, no intrinsics, no confidence."""
    f = (W / 2) / math.tan(math.radians(fov_deg) / 2)
    k = pinhole(fx=f, fy=f, cx=W / 2, cy=H / 2)
    depth = box_depth(k, extrinsic_from_pose(np.eye(3), [0, 0, 0]))[None]
    return make_rec(depth, is_metric=is_metric, preset="da3mono-large")


def write_finished_run(
    session_dir, rec: Reconstruction, *, source: str = "upload", params: dict | None = None, timings: dict | None = None
):
    """Save ``rec`` as a finished run of ``session_dir`` through `da3_core.runs.records` (as the app
    does after a real run): returns ``(run_dir, meta)``."""
    import dataclasses

    from da3_core.runs import records

    if timings is not None:
        rec = dataclasses.replace(rec, timings=dict(timings))
    run_params = {"process_res": 504, "process_res_method": "upper_bound_resize", **(params or {})}
    run_dir, meta = records.start_run(session_dir, list(rec.images), list(rec.names), source, rec.model, run_params)
    return run_dir, records.finish_run(run_dir, meta, rec)


def with_gaussians(rec: Reconstruction) -> Reconstruction:
    """``rec`` with one small Gaussian per pixel on its world points (as DA3's GS head gives
    them: views x pixels, world space, SH degree 0)."""
    import dataclasses

    from da3_core.contract import Gaussians

    n, h, w = rec.depth.shape
    means = np.concatenate(
        [
            box_world_points(
                rec.intrinsics[i].astype(np.float64),
                rec.extrinsics[i].astype(np.float64),
                rec.depth[i].astype(np.float64),
            ).reshape(-1, 3)
            for i in range(n)
        ]
    ).astype(np.float32)
    g = len(means)
    colours = rec.images.reshape(-1, 3).astype(np.float32) / 255.0
    gaussians = Gaussians(
        means=means,
        scales=np.full((g, 3), 0.01, np.float32),
        rotations=np.tile(np.array([1.0, 0.0, 0.0, 0.0], np.float32), (g, 1)),
        harmonics=((colours - 0.5) / 0.28209479)[..., None].astype(np.float32),
        opacities=np.full((g,), 0.8, np.float32),
    )
    return dataclasses.replace(rec, gaussians=gaussians)
