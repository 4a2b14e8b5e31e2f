"""Depth maps to world points, filters, deterministic capping and measuring (pure numpy).

Conventions (``docs/CONVENTIONS.md``): OpenCV camera axes (x right, y down, z forward);
``extrinsics`` (N, 3, 4) are world-to-camera ``[R|t]``; ``intrinsics`` (N, 3, 3) are in
processed-image pixels; depth is z-depth; pixel ``(u, v)`` is (column, row) and is
unprojected at the integer coordinate, as DA3's ``glb.py`` does.

The intended flow keeps re-filtering cheap::

    cams = resolve_cameras(rec, fov_deg)         # once per (rec, fov)
    world = unproject_all(rec, cams)             # once per (rec, cams); the caller caches it
    cloud = apply_filters(world, FilterParams(...))  # every widget change: boolean masks only
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from da3_core.contract import Reconstruction
from da3_core.presets import DEFAULT_FOV_DEG  # noqa: F401 - re-exported: the assumed FOV of mono presets

BLACK_BG_BELOW = 16
"""A pixel is black background when all of R, G, B are below this (DA3's rule)."""

WHITE_BG_FROM = 240
"""A pixel is white background when all of R, G, B are at least this (DA3's rule)."""

CONF_FLOOR = 1.05
"""DA3's base confidence threshold (``conf_thresh`` in ``export_to_glb``)."""


# --------------------------------------------------------------------------------------
# Cameras
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cameras:
    """The cameras used to unproject a reconstruction.

    Attributes:
        extrinsics: (N, 3, 4) float64 world-to-camera ``[R|t]``, OpenCV axes.
        intrinsics: (N, 3, 3) float64 pinhole K in processed-image pixels.
        assumed: True when the preset predicted no cameras and these are made up
            (identity poses, intrinsics from ``fov_deg``); geometry is then approximate.
        fov_deg: The assumed horizontal field of view in degrees, or None when predicted.
    """

    extrinsics: np.ndarray
    intrinsics: np.ndarray
    assumed: bool
    fov_deg: float | None

    def __post_init__(self) -> None:
        ext, k = self.extrinsics, self.intrinsics
        if ext.ndim != 3 or ext.shape[1:] != (3, 4):
            raise ValueError(f"Cameras.extrinsics must be (N, 3, 4), got {ext.shape}")
        if k.shape != (ext.shape[0], 3, 3):
            raise ValueError(f"Cameras.intrinsics must be ({ext.shape[0]}, 3, 3), got {k.shape}")

    @property
    def n_views(self) -> int:
        return int(self.extrinsics.shape[0])

    def cam_to_world(self) -> np.ndarray:
        """(N, 4, 4) float64 camera-to-world matrices (general inverse, as DA3 does)."""
        return np.linalg.inv(_homogeneous(self.extrinsics))

    def centers(self) -> np.ndarray:
        """(N, 3) float64 camera centres in world coordinates."""
        return self.cam_to_world()[:, :3, 3]


def intrinsics_from_fov(height: int, width: int, fov_deg: float = DEFAULT_FOV_DEG) -> np.ndarray:
    """Pinhole K for an assumed horizontal field of view, principal point at the image centre.

    The centre is ``(W/2, H/2)``, the value DA3's camera head gives for a centred principal
    point (``model/da3.py``: ``cx = pp_x * W * 0.5``), so assumed and predicted cameras agree.

    Args:
        height: Image height H in pixels.
        width: Image width W in pixels.
        fov_deg: Horizontal field of view in degrees, in (0, 180).

    Returns:
        (3, 3) float64 K with ``fx = fy = (W / 2) / tan(fov / 2)`` (square pixels).
    """
    if not 0.0 < float(fov_deg) < 180.0:
        raise ValueError(f"fov_deg must be in (0, 180) degrees, got {fov_deg}")
    f = (width / 2.0) / math.tan(math.radians(fov_deg) / 2.0)
    return np.array([[f, 0.0, width / 2.0], [0.0, f, height / 2.0], [0.0, 0.0, 1.0]], dtype=np.float64)


def resolve_cameras(rec: Reconstruction, fov_deg: float = DEFAULT_FOV_DEG) -> Cameras:
    """The cameras of ``rec``: predicted ones, or assumed ones for presets without poses.

    Args:
        rec: The reconstruction.
        fov_deg: Horizontal field of view in degrees assumed when ``rec`` has no cameras
            (mono and metric presets); ignored otherwise.

    Returns:
        Predicted cameras (``assumed=False``), or identity poses with intrinsics from
        ``fov_deg`` for every view (``assumed=True``).
    """
    if rec.has_poses:
        return Cameras(
            extrinsics=np.asarray(rec.extrinsics, dtype=np.float64),
            intrinsics=np.asarray(rec.intrinsics, dtype=np.float64),
            assumed=False,
            fov_deg=None,
        )
    n = rec.n_views
    h, w = rec.hw
    ext = np.tile(np.eye(3, 4, dtype=np.float64), (n, 1, 1))
    k = np.tile(intrinsics_from_fov(h, w, fov_deg), (n, 1, 1))
    return Cameras(extrinsics=ext, intrinsics=k, assumed=True, fov_deg=float(fov_deg))


def _homogeneous(ext: np.ndarray) -> np.ndarray:
    out = np.zeros(ext.shape[:-2] + (4, 4), dtype=np.float64)
    out[..., :3, :4] = ext
    out[..., 3, 3] = 1.0
    return out


# --------------------------------------------------------------------------------------
# Unprojection (computed once, cached by the caller)
# --------------------------------------------------------------------------------------


def unproject_depth(depth: np.ndarray, intrinsics: np.ndarray, extrinsics: np.ndarray) -> np.ndarray:
    """World points of every pixel of one depth map.

    Args:
        depth: (H, W) z-depth, any float dtype.
        intrinsics: (3, 3) K in pixels.
        extrinsics: (3, 4) world-to-camera ``[R|t]``.

    Returns:
        (H, W, 3) float32 world points; pixel (u, v) = (column, row) unprojected at the
        integer coordinate. Entries where depth is not finite are not finite either.
    """
    h, w = depth.shape
    us, vs = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    pix = np.stack([us, vs, np.ones_like(us)], axis=-1).reshape(-1, 3)
    rays = pix @ np.linalg.inv(np.asarray(intrinsics, dtype=np.float64)).T
    c2w = np.linalg.inv(_homogeneous(np.asarray(extrinsics, dtype=np.float64)))
    # Invalid depth (nan, inf) gives non-finite points on purpose; callers mask them.
    with np.errstate(invalid="ignore", over="ignore"):
        cam = rays * np.asarray(depth, dtype=np.float64).reshape(-1, 1)
        world = cam @ c2w[:3, :3].T + c2w[:3, 3]
    return world.astype(np.float32).reshape(h, w, 3)


@dataclass(frozen=True, eq=False)
class WorldPoints:
    """Every pixel of a reconstruction as a world point, plus the per-pixel facts filters use.

    Built once per (reconstruction, cameras) by `unproject_all`; `apply_filters` then only
    combines boolean masks, so re-filtering never repeats the unprojection. Pixels are
    laid out view by view, row-major: flat index ``p = view * H * W + v * W + u``.
    Arrays may be views of the reconstruction's arrays: treat them as read-only.

    Attributes:
        points: (P, 3) float32 world points, P = N * H * W; NaN where ``valid`` is False.
        colors: (P, 3) uint8 RGB of each pixel.
        valid: (P,) bool, depth finite and > 0 and the world point finite.
        conf: (P,) float32 confidence, or None when the preset predicts none.
        sky: (P,) bool, True on predicted sky, or None.
        black: (P,) bool, all channels < ``BLACK_BG_BELOW``.
        white: (P,) bool, all channels >= ``WHITE_BG_FROM``.
        conf_population: Sorted float64 finite confidences over which DA3's percentile
            threshold is taken (non-sky pixels when a sky mask exists and more than 10
            pixels are non-sky, else all), or None without confidence.
        shape: (N, H, W).
        cameras: The cameras used.
        unit: ``"m"`` for metric presets, ``"relative units"`` otherwise.
    """

    points: np.ndarray
    colors: np.ndarray
    valid: np.ndarray
    conf: np.ndarray | None
    sky: np.ndarray | None
    black: np.ndarray
    white: np.ndarray
    conf_population: np.ndarray | None
    shape: tuple[int, int, int]
    cameras: Cameras
    unit: str

    @property
    def n_pixels(self) -> int:
        return int(self.points.shape[0])


MAX_WORLD_PIXELS = 4_000_000
"""Pixels the figures unproject at most (a long chunked run has far more): beyond it every
s-th pixel of each view is taken (`pixel_stride`), so the server's memory stays bounded."""


def pixel_stride(rec: Reconstruction, max_pixels: int = MAX_WORLD_PIXELS) -> int:
    """The smallest stride s with N * ceil(H/s) * ceil(W/s) <= ``max_pixels``."""
    n, h, w = rec.depth.shape
    s = 1
    while n * (-(-h // s)) * (-(-w // s)) > max_pixels and s < max(h, w):
        s += 1
    return s


def strided(rec: Reconstruction, stride: int) -> Reconstruction:
    """Every ``stride``-th pixel of each view (rows and columns), with intrinsics to match:
    pixel (u, v) of the result is pixel (s*u, s*v) of ``rec``, so K' = diag(1/s, 1/s, 1) K.
    Copies only the kept pixels (``rec`` may be memory-mapped)."""
    if stride <= 1:
        return rec
    s = int(stride)

    def take(a: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(a[:, ::s, ::s])

    def take_optional(a: np.ndarray | None) -> np.ndarray | None:
        return None if a is None else take(a)

    ixt = None
    if rec.intrinsics is not None:
        ixt = np.array(rec.intrinsics, dtype=np.float32)
        ixt[:, :2, :] /= np.float32(s)
    return Reconstruction(
        depth=take(rec.depth),
        conf=take_optional(rec.conf),
        extrinsics=None if rec.extrinsics is None else np.asarray(rec.extrinsics, dtype=np.float32),
        intrinsics=ixt,
        images=take(rec.images),
        sky=take_optional(rec.sky),
        is_metric=rec.is_metric,
        scale_factor=rec.scale_factor,
        gaussians=rec.gaussians,
        names=rec.names,
        model=rec.model,
        preset=rec.preset,
        device=rec.device,
        timings=dict(rec.timings),
        params={**rec.params, "pixel_stride": s},
    )


def unproject_all(rec: Reconstruction, cameras: Cameras | None = None) -> WorldPoints:
    """Unproject every pixel of every view once, for cheap re-filtering later.

    Args:
        rec: The reconstruction (not modified).
        cameras: From `resolve_cameras`; None resolves them with the default field of view.

    Returns:
        The cached per-pixel world points and masks.
    """
    cams = cameras if cameras is not None else resolve_cameras(rec)
    n, h, w = rec.depth.shape
    if cams.n_views != n:
        raise ValueError(f"cameras has {cams.n_views} views for a reconstruction of {n}: resolve them from this rec")
    points = np.empty((n, h, w, 3), dtype=np.float32)
    for i in range(n):
        points[i] = unproject_depth(rec.depth[i], cams.intrinsics[i], cams.extrinsics[i])
    points = points.reshape(-1, 3)
    depth = rec.depth.reshape(-1)
    valid = np.isfinite(depth) & (depth > 0) & np.isfinite(points).all(axis=1)
    points[~valid] = np.nan

    colors = rec.images.reshape(-1, 3)
    black = (colors < BLACK_BG_BELOW).all(axis=1)
    white = (colors >= WHITE_BG_FROM).all(axis=1)
    sky = rec.sky.reshape(-1) if rec.sky is not None else None
    conf = None
    population = None
    if rec.conf is not None:
        conf = np.asarray(rec.conf, dtype=np.float32).reshape(-1)
        # DA3's get_conf_thresh: the percentile is taken over non-sky pixels when possible.
        use = ~sky if sky is not None and int((~sky).sum()) > 10 else np.ones_like(valid)
        population = np.sort(conf[use & np.isfinite(conf)].astype(np.float64))
    return WorldPoints(
        points=points,
        colors=colors,
        valid=valid,
        conf=conf,
        sky=sky,
        black=black,
        white=white,
        conf_population=population,
        shape=(n, h, w),
        cameras=cams,
        unit=rec.depth_unit,
    )


# --------------------------------------------------------------------------------------
# Filters and the deterministic cap
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FilterParams:
    """What to drop from the point cloud, and how many points to keep.

    Attributes:
        conf_percentile: DA3's "filter percentage" (app default 10): drop points below the ``conf_percentile``
            percentile of confidence (threshold = min(max(``conf_floor``, P_pct), P_ceiling)).
            No effect when the preset predicts no confidence. 0..100.
        conf_floor: DA3's base threshold ``conf_thresh`` (1.05).
        conf_ceiling_percentile: DA3's ``ensure_thresh_percentile`` (90): the threshold never
            exceeds this percentile, so at least ~10% of points survive. 0..100.
        filter_black_bg: Drop pixels whose R, G and B are all < 16.
        filter_white_bg: Drop pixels whose R, G and B are all >= 240.
        filter_sky: Drop predicted sky (no effect when the preset predicts none).
        views: Indices of the views to keep, or None for all.
        max_points: Most points returned (seeded, deterministic subsample), or None for all.
        seed: Seed of the subsample; same inputs and seed give the same points.
    """

    conf_percentile: float = 10.0
    conf_floor: float = CONF_FLOOR
    conf_ceiling_percentile: float = 90.0
    filter_black_bg: bool = False
    filter_white_bg: bool = False
    filter_sky: bool = True
    views: tuple[int, ...] | None = None
    max_points: int | None = 200_000
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("conf_percentile", "conf_ceiling_percentile"):
            if not 0.0 <= float(getattr(self, name)) <= 100.0:
                raise ValueError(f"FilterParams.{name} must be in 0..100, got {getattr(self, name)}")
        if self.max_points is not None and int(self.max_points) < 1:
            raise ValueError(f"FilterParams.max_points must be >= 1 or None, got {self.max_points}")
        if self.views is not None:
            object.__setattr__(self, "views", tuple(int(v) for v in self.views))


@dataclass(frozen=True, eq=False)
class PointCloud:
    """A filtered, capped point cloud.

    Attributes:
        points: (M, 3) float32 world points (frame of the extrinsics), in ``unit``.
        colors: (M, 3) uint8 RGB.
        view_index: (M,) int32 view each point came from.
        pixel_index: (M,) int32 flat pixel index within its view, ``v * W + u``.
        n_candidates: Points that passed every filter, before the cap.
        conf_threshold: The confidence threshold applied, or None when none was.
        unit: ``"m"`` for metric presets, ``"relative units"`` otherwise.
    """

    points: np.ndarray
    colors: np.ndarray
    view_index: np.ndarray
    pixel_index: np.ndarray
    n_candidates: int
    conf_threshold: float | None
    unit: str

    def __len__(self) -> int:
        return int(self.points.shape[0])


def percentile_sorted(sorted_values: np.ndarray, q: float) -> float:
    """``np.percentile(values, q)`` (linear method) from already sorted values, in O(1).

    Args:
        sorted_values: (K,) ascending, K >= 1.
        q: Percentile in 0..100.
    """
    n = sorted_values.shape[0]
    pos = (q / 100.0) * (n - 1)
    lo = int(math.floor(pos))
    hi = min(lo + 1, n - 1)
    frac = pos - lo
    return float(sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * frac)


def conf_threshold(world: WorldPoints, params: FilterParams) -> float | None:
    """DA3's confidence threshold: ``min(max(conf_floor, P_pct), P_ceiling)``, or None.

    The percentiles are over every view (not only the selected ones), so showing or
    hiding a view never moves another view's threshold.
    """
    pop = world.conf_population
    if pop is None or pop.size == 0:
        return None
    lower = percentile_sorted(pop, params.conf_percentile)
    upper = percentile_sorted(pop, params.conf_ceiling_percentile)
    return min(max(params.conf_floor, lower), upper)


def filter_mask(world: WorldPoints, params: FilterParams) -> tuple[np.ndarray, float | None]:
    """Which pixels pass every filter (before the cap).

    Returns:
        (P,) bool keep-mask, and the confidence threshold used (None when none applies).
    """
    n, h, w = world.shape
    keep = world.valid.copy()
    if params.views is not None:
        bad = [v for v in params.views if not 0 <= v < n]
        if bad:
            raise ValueError(f"FilterParams.views {bad} are outside 0..{n - 1}: pick existing views")
        chosen = np.zeros(n, dtype=bool)
        chosen[list(params.views)] = True
        # Views are contiguous blocks of H*W pixels: a broadcast beats a per-pixel gather.
        keep.reshape(n, h * w)[~chosen] = False
    thr = conf_threshold(world, params)
    if thr is not None and world.conf is not None:  # a threshold exists only with confidence
        keep &= world.conf >= thr
    if params.filter_black_bg:
        keep &= ~world.black
    if params.filter_white_bg:
        keep &= ~world.white
    if params.filter_sky and world.sky is not None:
        keep &= ~world.sky
    return keep, thr


@lru_cache(maxsize=4)
def _ranks(n: int, seed: int) -> np.ndarray:
    # One seeded permutation per (pixel count, seed): a fixed random order of pixels, so
    # the subsample is deterministic and stays stable as filters change.
    order = np.random.default_rng(seed).permutation(n).astype(np.int64 if n > 2**31 - 1 else np.int32)
    order.flags.writeable = False
    return order


def cap_indices(keep: np.ndarray, max_points: int | None, seed: int = 0) -> np.ndarray:
    """Flat indices of the kept pixels, at most ``max_points`` of them, deterministically.

    Every pixel has a fixed seeded random rank; the ``max_points`` kept pixels of lowest
    rank are chosen. Same mask and seed give the same indices; loosening a filter keeps
    most earlier choices.

    Args:
        keep: (P,) bool.
        max_points: Cap, or None for no cap.
        seed: Seed of the ranks.

    Returns:
        (M,) int64 ascending flat pixel indices.
    """
    if max_points is None or int(np.count_nonzero(keep)) <= max_points:
        return np.flatnonzero(keep)
    order = _ranks(keep.shape[0], int(seed))
    chosen = order[np.flatnonzero(keep[order])[: int(max_points)]]
    # A mask (not a sort) restores pixel order in O(P).
    sel = np.zeros(keep.shape[0], dtype=bool)
    sel[chosen] = True
    return np.flatnonzero(sel)


def apply_filters(world: WorldPoints, params: FilterParams) -> PointCloud:
    """Filter and cap the cached world points. Cheap: boolean masks and one gather.

    Args:
        world: From `unproject_all` (not modified).
        params: The filters.

    Returns:
        The point cloud, points in pixel order (view, row, column).
    """
    keep, thr = filter_mask(world, params)
    n_candidates = int(np.count_nonzero(keep))
    idx = cap_indices(keep, params.max_points, params.seed)
    hw = world.shape[1] * world.shape[2]
    return PointCloud(
        points=world.points[idx],
        colors=world.colors[idx],
        view_index=(idx // hw).astype(np.int32),
        pixel_index=(idx % hw).astype(np.int32),
        n_candidates=n_candidates,
        conf_threshold=thr,
        unit=world.unit,
    )


# --------------------------------------------------------------------------------------
# Scene scale, frustums, depth range
# --------------------------------------------------------------------------------------


def scene_scale(points: np.ndarray, fallback: float = 1.0, sample: int = 20_000) -> float:
    """Robust scene size: diagonal of the 5..95 percentile box of ``points`` (as DA3).

    Args:
        points: (M, 3) world points.
        fallback: Returned for fewer than 2 points or a degenerate box.
        sample: At most this many points are used (an even stride, deterministic).
    """
    if points.shape[0] < 2:
        return fallback
    pts = points[:: max(1, points.shape[0] // sample)]
    lo, hi = np.percentile(pts, [5, 95], axis=0)
    diag = float(np.linalg.norm(hi - lo))
    return diag if math.isfinite(diag) and diag > 0 else fallback


def frustum_segments(cameras: Cameras, hw: tuple[int, int], size: float) -> np.ndarray:
    """Camera wireframes as line segments in world coordinates (DA3's pyramid).

    Each camera gives 8 segments: centre to the 4 image corners on the plane ``z = size``
    (camera frame), then the 4 edges of that rectangle.

    Args:
        cameras: The cameras.
        hw: (H, W) image size in pixels.
        size: Pyramid depth in world units.

    Returns:
        (N, 8, 2, 3) float64 segment end points, world frame.
    """
    h, w = hw
    corners = np.array([[0, 0, 1.0], [w - 1, 0, 1.0], [w - 1, h - 1, 1.0], [0, h - 1, 1.0]])
    c2w = cameras.cam_to_world()
    out = np.empty((cameras.n_views, 8, 2, 3), dtype=np.float64)
    for i in range(cameras.n_views):
        rays = corners @ np.linalg.inv(cameras.intrinsics[i]).T
        plane = rays / np.where(rays[:, 2:3] == 0, 1.0, rays[:, 2:3]) * size
        plane_w = plane @ c2w[i, :3, :3].T + c2w[i, :3, 3]
        centre = c2w[i, :3, 3]
        for k in range(4):
            out[i, k] = (centre, plane_w[k])
            out[i, 4 + k] = (plane_w[k], plane_w[(k + 1) % 4])
    return out


def camera_rgb(i: int, n: int) -> tuple[int, int, int]:
    """Distinct uint8 RGB of camera ``i`` of ``n`` (DA3's hue wheel, as in its GLB)."""
    r, g, b = colorsys.hsv_to_rgb((i + 0.5) / max(n, 1), 0.85, 0.95)
    return int(r * 255), int(g * 255), int(b * 255)


@dataclass(frozen=True)
class DepthRange:
    """Depth statistics of one view for the readout.

    Attributes:
        min: Smallest valid depth, in ``unit`` (NaN when no pixel is valid).
        max: Largest valid depth.
        p_low: ``low`` percentile of valid depth (robust minimum).
        p_high: ``high`` percentile of valid depth (robust maximum).
        percentiles: The (low, high) percentiles used.
        n_valid: Pixels with finite depth > 0.
        n_total: Pixels in the view.
        unit: ``"m"`` or ``"relative units"``.
    """

    min: float
    max: float
    p_low: float
    p_high: float
    percentiles: tuple[float, float]
    n_valid: int
    n_total: int
    unit: str


def depth_range(
    depth: np.ndarray, unit: str, percentiles: tuple[float, float] = (2.0, 98.0), mask: np.ndarray | None = None
) -> DepthRange:
    """Min, max and robust percentiles of the valid (finite, > 0) depth of one view.

    Args:
        depth: (H, W) z-depth.
        unit: ``"m"`` or ``"relative units"`` (``Reconstruction.depth_unit``).
        percentiles: (low, high) in 0..100.
        mask: Optional (H, W) bool; only True pixels count.
    """
    valid = np.isfinite(depth) & (depth > 0)
    if mask is not None:
        valid &= mask
    vals = depth[valid]
    pct = (percentiles[0], percentiles[1])  # a copy, as a pair
    if vals.size == 0:
        nan = float("nan")
        return DepthRange(nan, nan, nan, nan, pct, 0, int(depth.size), unit)
    lo, hi = np.percentile(vals, percentiles)
    return DepthRange(
        min=float(vals.min()),
        max=float(vals.max()),
        p_low=float(lo),
        p_high=float(hi),
        percentiles=pct,
        n_valid=int(vals.size),
        n_total=int(depth.size),
        unit=unit,
    )


# --------------------------------------------------------------------------------------
# Measuring
# --------------------------------------------------------------------------------------


class MeasureError(ValueError):
    """A measurement pixel is outside the view or has no valid depth."""


@dataclass(frozen=True)
class Measurement:
    """Two pixels of one view measured in 3D.

    Attributes:
        view: View index.
        pixels: ((u1, v1), (u2, v2)) column, row.
        depths: (2,) float z-depths at the pixels, in ``unit``.
        points: (2, 3) float64 world points, in ``unit``.
        distance: Euclidean distance between the two world points, in ``unit``.
        unit: ``"m"`` for metric presets, ``"relative units"`` otherwise.
        assumed_cameras: True when the cameras were assumed (mono presets): lateral
            distances then depend on the assumed field of view.
    """

    view: int
    pixels: tuple[tuple[int, int], tuple[int, int]]
    depths: tuple[float, float]
    points: np.ndarray
    distance: float
    unit: str
    assumed_cameras: bool

    def describe(self) -> str:
        """One line for the UI, e.g. ``distance 1.234 m (depths 2.000 m, 2.500 m)``."""
        u = self.unit
        note = " (assumed camera field of view)" if self.assumed_cameras else ""
        return f"distance {self.distance:.3f} {u} (depths {self.depths[0]:.3f} {u}, {self.depths[1]:.3f} {u}){note}"


def pixel_to_world(
    rec: Reconstruction, cameras: Cameras, view: int, pixel: tuple[int, int]
) -> tuple[float, np.ndarray]:
    """Depth and world point of one pixel.

    Args:
        rec: The reconstruction.
        cameras: From `resolve_cameras(rec, ...)`.
        view: View index.
        pixel: (u, v) = (column, row), integers.

    Returns:
        (depth in ``rec.depth_unit``, (3,) float64 world point).

    Raises:
        MeasureError: The view or pixel is out of range, or the depth there is not valid.
    """
    n, h, w = rec.depth.shape
    if not 0 <= int(view) < n:
        raise MeasureError(f"view {view} is outside 0..{n - 1}: pick an existing view")
    u, v = int(pixel[0]), int(pixel[1])
    if not (0 <= u < w and 0 <= v < h):
        raise MeasureError(
            f"pixel (u={u}, v={v}) is outside view {view} ({w} x {h}): pick u in 0..{w - 1} and v in 0..{h - 1}"
        )
    d = float(rec.depth[view, v, u])
    if not (math.isfinite(d) and d > 0):
        raise MeasureError(
            f"depth at pixel (u={u}, v={v}) of view {view} is {d}, not a valid depth: pick another pixel"
        )
    ray = np.linalg.inv(cameras.intrinsics[view]) @ np.array([u, v, 1.0])
    c2w = np.linalg.inv(_homogeneous(cameras.extrinsics[view]))
    point = c2w[:3, :3] @ (ray * d) + c2w[:3, 3]
    return d, point


def measure(rec: Reconstruction, cameras: Cameras, view: int, p1: tuple[int, int], p2: tuple[int, int]) -> Measurement:
    """Depths, world points and 3D distance of two pixels of one view.

    Args:
        rec: The reconstruction.
        cameras: From `resolve_cameras(rec, ...)`.
        view: View index.
        p1: First pixel (u, v).
        p2: Second pixel (u, v).

    Raises:
        MeasureError: A pixel is out of range or has no valid depth (the message says which).
    """
    d1, x1 = pixel_to_world(rec, cameras, view, p1)
    d2, x2 = pixel_to_world(rec, cameras, view, p2)
    return Measurement(
        view=int(view),
        pixels=((int(p1[0]), int(p1[1])), (int(p2[0]), int(p2[1]))),
        depths=(d1, d2),
        points=np.stack([x1, x2]),
        distance=float(np.linalg.norm(x1 - x2)),
        unit=rec.depth_unit,
        assumed_cameras=cameras.assumed,
    )
