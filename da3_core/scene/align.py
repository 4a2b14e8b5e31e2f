"""Aligning overlapping chunks of a long video: Sim(3), weighted Umeyama, robust IRLS (numpy).

A long video is reconstructed as overlapping chunks of frames, each in its own world frame
and scale. Chunk b is aligned to chunk a with the frames both contain, as DA3-Streaming and
VGGT-Long do: the same pixel of a shared frame is one 3D point in both chunks, so every
pixel valid in both gives a correspondence. The similarity is a Huber-weighted IRLS Umeyama
fit (weights ``sqrt(conf_a * conf_b)``, confident pixels only, at most ``max_pairs`` pairs);
metric presets fit SE(3) (scale fixed at 1).

Conventions (``docs/CONVENTIONS.md``): OpenCV camera axes; extrinsics (N, 3, 4) world-to-camera
``[R|t]`` (inverted as general 4x4 matrices, as DA3 and `da3_core.scene.geometry` do); intrinsics in
pixels; z-depth; pixel (u, v) = (column, row) unprojected at the integer coordinate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation

_ROTATION_TOL = 1e-6
"""How far from orthonormal (max abs entry of R^T R - I) a `Sim3` rotation may be."""

_RANK_TOL = 1e-12
"""Relative size below which a covariance eigenvalue / singular value counts as zero."""


# --------------------------------------------------------------------------------------
# Sim(3)
# --------------------------------------------------------------------------------------


def _frozen(a: np.ndarray) -> np.ndarray:
    a = np.array(a, dtype=np.float64, copy=True)
    a.flags.writeable = False
    return a


@dataclass(frozen=True, eq=False)
class Sim3:
    """A similarity transform ``x' = scale * rotation @ x + translation``.

    Immutable: the arrays are float64 read-only copies. ``eq=False`` (identity comparison)
    because element-wise array comparison has no single truth value; use `allclose`.

    Attributes:
        scale: Positive finite scale factor.
        rotation: (3, 3) float64 proper rotation (orthonormal, det +1).
        translation: (3,) float64 translation, in the target frame's units.
    """

    scale: float
    rotation: np.ndarray
    translation: np.ndarray

    def __post_init__(self) -> None:
        s = float(self.scale)
        if not (math.isfinite(s) and s > 0.0):
            raise ValueError(f"Sim3.scale must be finite and > 0, got {self.scale}")
        r = np.asarray(self.rotation, dtype=np.float64)
        t = np.asarray(self.translation, dtype=np.float64)
        if r.shape != (3, 3) or not np.isfinite(r).all():
            raise ValueError(f"Sim3.rotation must be a finite (3, 3) matrix, got shape {r.shape}")
        if np.abs(r.T @ r - np.eye(3)).max() > _ROTATION_TOL or np.linalg.det(r) <= 0.0:
            raise ValueError("Sim3.rotation must be a proper rotation (orthonormal, det +1)")
        if t.shape != (3,) or not np.isfinite(t).all():
            raise ValueError(f"Sim3.translation must be a finite (3,) vector, got shape {t.shape}")
        object.__setattr__(self, "scale", s)
        object.__setattr__(self, "rotation", _frozen(r))
        object.__setattr__(self, "translation", _frozen(t))

    @staticmethod
    def identity() -> Sim3:
        """The identity transform (scale 1, no rotation, no translation)."""
        return Sim3(1.0, np.eye(3), np.zeros(3))

    def apply(self, points: np.ndarray) -> np.ndarray:
        """Transform points.

        Args:
            points: (..., 3) points in the source frame, any float dtype.

        Returns:
            (..., 3) float64 points in the target frame.
        """
        p = np.asarray(points, dtype=np.float64)
        if p.shape[-1:] != (3,):
            raise ValueError(f"Sim3.apply needs points of shape (..., 3), got {p.shape}")
        return self.scale * (p @ self.rotation.T) + self.translation

    def inverse(self) -> Sim3:
        """The inverse: ``x = (1/s) R^T (x' - t)``."""
        rt = self.rotation.T
        return Sim3(1.0 / self.scale, rt, -(rt @ self.translation) / self.scale)

    def compose(self, other: Sim3) -> Sim3:
        """``self ∘ other``: ``(self ∘ other)(x) == self.apply(other.apply(x))``."""
        return Sim3(
            self.scale * other.scale,
            self.rotation @ other.rotation,
            self.scale * (self.rotation @ other.translation) + self.translation,
        )

    def matrix(self) -> np.ndarray:
        """(4, 4) float64 homogeneous matrix ``[[s R, t], [0, 1]]``."""
        m = np.eye(4)
        m[:3, :3] = self.scale * self.rotation
        m[:3, 3] = self.translation
        return m

    def log(self) -> np.ndarray:
        """(7,) float64 ``[rotvec (3), translation (3), log(scale)]``.

        A simple parameterisation, not the true Lie-algebra log of sim(3) (whose
        translation part is coupled to rotation and scale): rotation as its axis-angle
        vector (radians, norm <= pi), translation as is, scale by its logarithm.
        `from_log` inverts it exactly (up to rounding).
        """
        rv = Rotation.from_matrix(self.rotation).as_rotvec()
        return np.concatenate([rv, self.translation, [math.log(self.scale)]])

    @staticmethod
    def from_log(v: np.ndarray) -> Sim3:
        """Inverse of `log`: (7,) ``[rotvec, translation, log(scale)]`` to a `Sim3`."""
        v = np.asarray(v, dtype=np.float64)
        if v.shape != (7,):
            raise ValueError(f"Sim3.from_log needs a (7,) vector, got shape {v.shape}")
        return Sim3(math.exp(v[6]), Rotation.from_rotvec(v[:3]).as_matrix(), v[3:6])

    def to_json(self) -> dict:
        """Plain JSON-able dict ``{"scale", "rotation" (3x3 lists), "translation"}``.

        Python floats are float64 and JSON writes them with ``repr``, so
        ``Sim3.from_json(json.loads(json.dumps(s.to_json())))`` is bit-exact.
        """
        return {
            "scale": float(self.scale),
            "rotation": [[float(x) for x in row] for row in self.rotation],
            "translation": [float(x) for x in self.translation],
        }

    @staticmethod
    def from_json(d: dict) -> Sim3:
        """Inverse of `to_json`."""
        try:
            return Sim3(
                float(d["scale"]),
                np.array(d["rotation"], dtype=np.float64),
                np.array(d["translation"], dtype=np.float64),
            )
        except KeyError as exc:
            raise ValueError(f"Sim3 JSON needs 'scale', 'rotation' and 'translation'; missing {exc}") from None

    def allclose(self, other: Sim3, rtol: float = 1e-9, atol: float = 1e-12) -> bool:
        """True when scale, rotation and translation agree within ``np.allclose`` tolerances."""
        return (
            math.isclose(self.scale, other.scale, rel_tol=rtol, abs_tol=atol)
            and np.allclose(self.rotation, other.rotation, rtol=rtol, atol=atol)
            and np.allclose(self.translation, other.translation, rtol=rtol, atol=atol)
        )


# --------------------------------------------------------------------------------------
# Umeyama
# --------------------------------------------------------------------------------------


def _check_pairs(
    src: np.ndarray, dst: np.ndarray, weights: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.ndim != 2 or src.shape[1] != 3 or dst.shape != src.shape:
        raise ValueError(f"src and dst must both be (M, 3), got {src.shape} and {dst.shape}")
    if not (np.isfinite(src).all() and np.isfinite(dst).all()):
        raise ValueError("src and dst must be finite (drop invalid points first)")
    if weights is None:
        w = np.ones(src.shape[0])
    else:
        w = np.asarray(weights, dtype=np.float64)
        if w.shape != (src.shape[0],):
            raise ValueError(f"weights must be ({src.shape[0]},), got {w.shape}")
        if not np.isfinite(w).all() or (w < 0).any():
            raise ValueError("weights must be finite and >= 0")
    return src, dst, w


def _fit(
    src: np.ndarray, dst: np.ndarray, w: np.ndarray, with_scale: bool, strict: bool
) -> tuple[float, np.ndarray, np.ndarray]:
    """Weighted Umeyama on checked arrays: (scale, R, t) minimising sum w |dst - (s R src + t)|^2.

    strict: raise ValueError on degenerate input (the transform is not unique). Not strict
    (for trajectory errors): return one minimiser anyway; the scale may then be 0.
    """
    wsum = float(w.sum())
    n_pos = int(np.count_nonzero(w > 0))
    if strict and n_pos < 3:
        raise ValueError(f"umeyama needs at least 3 point pairs with positive weight, got {n_pos}")
    if wsum <= 0.0:
        raise ValueError("umeyama needs at least one positive weight (all weights are 0)")
    wn = w / wsum
    mu_s = wn @ src
    mu_d = wn @ dst
    cs = src - mu_s
    cd = dst - mu_d
    # Cross-covariance dst x src, normalised by the total weight.
    sigma = (cd * wn[:, None]).T @ cs
    var_s = float(wn @ np.einsum("ij,ij->i", cs, cs))
    if strict:
        for name, c, mu in (("src", cs, mu_s), ("dst", cd, mu_d)):
            ev = np.linalg.eigvalsh((c * wn[:, None]).T @ c)  # ascending
            # Spread at rounding level of the coordinates counts as none.
            if ev[2] <= (1e-13 * float(np.abs(mu).max())) ** 2:
                raise ValueError(f"umeyama: all {name} points coincide; the transform is undetermined")
            if ev[1] <= _RANK_TOL * ev[2]:
                raise ValueError(
                    f"umeyama: the {name} points are collinear; the rotation about their line is undetermined"
                )
    u, d, vt = np.linalg.svd(sigma)
    if strict and d[1] <= _RANK_TOL * d[0]:
        raise ValueError("umeyama: src and dst cross-covariance has rank < 2; the rotation is undetermined")
    # Reflection guard: flip the weakest axis so R is a proper rotation (Umeyama 1991).
    sgn = np.ones(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sgn[2] = -1.0
    r = (u * sgn) @ vt
    if with_scale:
        scale = float((d * sgn).sum() / var_s) if var_s > 0 else 1.0
        if strict and not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"umeyama: the fitted scale is {scale}, not positive; src and dst do not match")
    else:
        scale = 1.0
    t = mu_d - scale * (r @ mu_s)
    return scale, r, t


def umeyama(src: np.ndarray, dst: np.ndarray, weights: np.ndarray | None = None, with_scale: bool = True) -> Sim3:
    """Weighted closed-form similarity: the S minimising ``sum_i w_i |dst_i - S(src_i)|^2``.

    Umeyama (1991) with weights: weighted centroids, weighted cross-covariance, SVD with a
    reflection guard; the scale is ``trace(D S) / var(src)``.

    Args:
        src: (M, 3) points in the source frame.
        dst: (M, 3) corresponding points in the target frame.
        weights: (M,) non-negative weights, or None for all 1.
        with_scale: False fits SE(3) (scale exactly 1), as for metric reconstructions.

    Returns:
        The `Sim3` mapping src to dst.

    Raises:
        ValueError: Shapes differ, values are not finite, weights are negative, fewer than 3
            pairs have positive weight, or the points are degenerate (coincident or collinear
            src or dst), so the transform is not unique.
    """
    src, dst, w = _check_pairs(src, dst, weights)
    scale, r, t = _fit(src, dst, w, with_scale, strict=True)
    return Sim3(scale, r, t)


@dataclass(frozen=True)
class FitInfo:
    """How well a robust fit went.

    Attributes:
        n_pairs: Point pairs with positive input weight.
        iterations: Reweighted refits done after the first plain fit (0..``iterations``).
        rmse: ``sqrt(sum w_i r_i^2 / sum w_i)`` with the input weights and the final
            residuals ``r_i = |dst_i - S(src_i)|``, in dst units. Outliers count in full here;
            read it with ``inlier_fraction``.
        inlier_fraction: Share of the pairs (positive weight) with residual <= ``delta``.
        delta: The Huber threshold (dst units): the one given, or (``delta=None``) its
            estimate from the final residuals.
    """

    n_pairs: int
    iterations: int
    rmse: float
    inlier_fraction: float
    delta: float = float("nan")


def _residuals(sim: Sim3, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    return np.linalg.norm(dst - sim.apply(src), axis=1)


def _spread(points: np.ndarray, w: np.ndarray) -> float:
    """Weighted RMS distance of points to their weighted centroid (a scene size)."""
    wn = w / w.sum()
    c = points - wn @ points
    return float(math.sqrt(max(float(wn @ np.einsum("ij,ij->i", c, c)), 0.0)))


def robust_umeyama(
    src: np.ndarray,
    dst: np.ndarray,
    weights: np.ndarray | None = None,
    with_scale: bool = True,
    delta: float | None = None,
    iterations: int = 10,
) -> tuple[Sim3, FitInfo]:
    """Huber IRLS Umeyama: robust to a share of wrong correspondences.

    Starts from `umeyama`, then repeatedly refits with weights ``w_i * min(1, delta / r_i)``
    (``r_i`` the residual of the previous fit), so a pair's pull on the fit is capped at
    ``delta``. Stops early when the transform stops changing (the transformed src points move
    by less than 1e-10 of the scene size, RMS).

    Huber caps an outlier's pull but does not remove it: outliers displaced coherently (a
    whole region with depth too far) bias the fit by about ``outlier share x delta`` and slow
    the convergence, so raise ``iterations`` when that matters.

    Args:
        src: (M, 3) points in the source frame.
        dst: (M, 3) corresponding points in the target frame.
        weights: (M,) non-negative prior weights (e.g. confidences), or None for all 1.
        with_scale: False fits SE(3) (scale exactly 1).
        delta: Huber threshold in dst units, fixed. None: ``1.345 * 1.4826 * median(r)``
            (1.345 sigma of Gaussian noise, sigma from the median absolute residual),
            computed from the first fit and re-estimated from each refit's residuals, floored
            at 1e-12 of the dst scene size so an exact fit keeps a positive delta.
        iterations: Most reweighted refits (>= 0).

    Returns:
        The fitted `Sim3` (src to dst) and its `FitInfo`.

    Raises:
        ValueError: As `umeyama`, or for a non-positive ``delta`` / negative ``iterations``.
    """
    src, dst, w = _check_pairs(src, dst, weights)
    if int(iterations) < 0:
        raise ValueError(f"iterations must be >= 0, got {iterations}")
    sim = Sim3(*_fit(src, dst, w, with_scale, strict=True))
    pos = w > 0
    scene = _spread(dst, w)
    floor = 1e-12 * scene if scene > 0 else 1e-300
    r = _residuals(sim, src, dst)
    adaptive = delta is None
    if delta is None:
        delta = max(1.345 * 1.4826 * float(np.median(r[pos])), floor)
    else:
        delta = float(delta)
        if not (math.isfinite(delta) and delta > 0):
            raise ValueError(f"delta must be finite and > 0, got {delta}")
    tiny = float(np.finfo(np.float64).tiny)
    done = 0
    for _ in range(int(iterations)):
        if adaptive:
            # Re-estimated from the current fit: the first fit is pulled by the outliers, and
            # a delta from its residuals lets them keep pulling (30 % gross outliers: ~10 %
            # scale error with a fixed delta, ~0.05 % re-estimated).
            delta = max(1.345 * 1.4826 * float(np.median(r[pos])), floor)
        hw = w * np.minimum(1.0, delta / np.maximum(r, tiny))
        new = Sim3(*_fit(src, dst, hw, with_scale, strict=True))
        # Change measured where it matters: how far the fitted src points move.
        moved = math.sqrt(float(np.mean(np.sum((new.apply(src[pos]) - sim.apply(src[pos])) ** 2, axis=1))))
        sim = new
        r = _residuals(sim, src, dst)
        done += 1
        if moved <= 1e-10 * max(scene, tiny):
            break
    if adaptive:
        delta = max(1.345 * 1.4826 * float(np.median(r[pos])), floor)
    rmse = math.sqrt(float(w @ (r * r)) / float(w.sum()))
    info = FitInfo(
        n_pairs=int(np.count_nonzero(pos)),
        iterations=done,
        rmse=rmse,
        inlier_fraction=float(np.mean(r[pos] <= delta)),
        delta=float(delta),
    )
    return sim, info


# --------------------------------------------------------------------------------------
# Chunk overlap
# --------------------------------------------------------------------------------------


def _homogeneous(ext: np.ndarray) -> np.ndarray:
    out = np.zeros(ext.shape[:-2] + (4, 4), dtype=np.float64)
    out[..., :3, :4] = ext
    out[..., 3, 3] = 1.0
    return out


def _check_chunk(name: str, depth: np.ndarray, conf: np.ndarray | None, ext: np.ndarray, ixt: np.ndarray) -> None:
    if depth.ndim != 3:
        raise ValueError(f"depth_{name} must be (K, H, W), got {depth.shape}")
    k = depth.shape[0]
    if conf is not None and conf.shape != depth.shape:
        raise ValueError(f"conf_{name} must have depth_{name}'s shape {depth.shape}, got {conf.shape}")
    if ext.shape != (k, 3, 4):
        raise ValueError(f"ext_{name} must be ({k}, 3, 4) world-to-camera, got {ext.shape}")
    if ixt.shape != (k, 3, 3):
        raise ValueError(f"ixt_{name} must be ({k}, 3, 3), got {ixt.shape}")


def _valid(depth: np.ndarray, conf: np.ndarray | None) -> np.ndarray:
    ok = np.isfinite(depth) & (depth > 0)
    if conf is not None:
        # Weights are sqrt(conf_a * conf_b): a pixel without a positive confidence adds nothing.
        ok &= np.isfinite(conf) & (conf > 0)
    return ok


def _unproject_pixels(
    depth_flat: np.ndarray, idx: np.ndarray, width: int, ixt: np.ndarray, ext: np.ndarray
) -> np.ndarray:
    """(m, 3) float64 world points of flat pixel indices ``idx`` of one view (integer (u, v))."""
    u = (idx % width).astype(np.float64)
    v = (idx // width).astype(np.float64)
    pix = np.stack([u, v, np.ones_like(u)], axis=1)
    rays = pix @ np.linalg.inv(np.asarray(ixt, dtype=np.float64)).T
    cam = rays * depth_flat[idx].astype(np.float64)[:, None]
    # General inverse of [R|t], as DA3 and geometry.unproject_depth do.
    c2w = np.linalg.inv(_homogeneous(np.asarray(ext, dtype=np.float64)))
    return cam @ c2w[:3, :3].T + c2w[:3, 3]


def overlap_pairs(
    depth_a: np.ndarray,
    conf_a: np.ndarray | None,
    ext_a: np.ndarray,
    ixt_a: np.ndarray,
    depth_b: np.ndarray,
    conf_b: np.ndarray | None,
    ext_b: np.ndarray,
    ixt_b: np.ndarray,
    *,
    max_pairs: int = 100_000,
    conf_quantile: float = 0.3,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixel-wise 3D correspondences between two chunks over the frames both contain.

    Frame k of chunk a and frame k of chunk b are the same image, so pixel (u, v) is the
    same scene point; it is unprojected in each chunk's world.

    A pixel is kept when it is valid in both chunks (depth finite and > 0; confidence, when
    given, finite and > 0) and its confidence is >= the ``conf_quantile`` quantile of that
    chunk's confidence, both chunks (quantiles per chunk over the pixels valid in both, all
    frames). Then at most ``max_pairs`` are drawn without replacement, frame by frame: frame
    k gets ``remaining budget // frames left`` (so about ``max_pairs / K`` each; a frame with
    fewer candidates leaves its share to later frames), drawn with one
    ``numpy.random.default_rng(seed)`` in frame order. Same inputs and seed, same pairs.

    Memory: only the (K, H, W) bool validity mask and the valid confidences (in their own
    dtype, for the quantile) live across frames; float64 work is per frame and per drawn pixel.

    Args:
        depth_a: (K, H, W) z-depth of chunk a's copy of the shared frames.
        conf_a: (K, H, W) confidence of chunk a, or None.
        ext_a: (K, 3, 4) world-to-camera extrinsics in chunk a's world.
        ixt_a: (K, 3, 3) intrinsics in pixels.
        depth_b: (K, H, W) z-depth of the same frames in chunk b (same pixel grid).
        conf_b: (K, H, W) confidence of chunk b, or None.
        ext_b: (K, 3, 4) world-to-camera extrinsics in chunk b's world.
        ixt_b: (K, 3, 3) intrinsics in pixels.
        max_pairs: Most pairs returned (>= 1).
        conf_quantile: Quantile in [0, 1]; 0 keeps every valid pixel. Ignored for a chunk
            without confidence.
        seed: Seed of the subsample.

    Returns:
        ``(pts_a, pts_b, w)``: (M, 3) float64 points in chunk a's world, (M, 3) float64 the
        same pixels in chunk b's world, (M,) float64 weights ``sqrt(conf_a * conf_b)`` (a
        missing confidence counts as 1; all 1 without either). Pairs are in frame order,
        then pixel order within a frame. M may be 0.
    """
    depth_a, depth_b = np.asarray(depth_a), np.asarray(depth_b)
    conf_a = None if conf_a is None else np.asarray(conf_a)
    conf_b = None if conf_b is None else np.asarray(conf_b)
    ext_a, ext_b = np.asarray(ext_a), np.asarray(ext_b)
    ixt_a, ixt_b = np.asarray(ixt_a), np.asarray(ixt_b)
    _check_chunk("a", depth_a, conf_a, ext_a, ixt_a)
    _check_chunk("b", depth_b, conf_b, ext_b, ixt_b)
    if depth_a.shape != depth_b.shape:
        raise ValueError(
            f"the two chunks must hold the same frames at the same size: depth_a {depth_a.shape}, depth_b {depth_b.shape}"
        )
    if int(max_pairs) < 1:
        raise ValueError(f"max_pairs must be >= 1, got {max_pairs}")
    if not 0.0 <= float(conf_quantile) <= 1.0:
        raise ValueError(f"conf_quantile must be in [0, 1], got {conf_quantile}")
    n_frames, _, width = depth_a.shape

    # Pass 1: validity in both chunks, one frame at a time (only bools kept).
    valid = np.empty(depth_a.shape, dtype=bool)
    for k in range(n_frames):
        valid[k] = _valid(depth_a[k], None if conf_a is None else conf_a[k]) & _valid(
            depth_b[k], None if conf_b is None else conf_b[k]
        )
    n_valid = int(np.count_nonzero(valid))

    # Per-chunk confidence thresholds over the pixels valid in both.
    thresholds: list[float | None] = []
    for conf in (conf_a, conf_b):
        if conf is None or n_valid == 0 or float(conf_quantile) == 0.0:
            thresholds.append(None)
            continue
        vals = np.empty(n_valid, dtype=conf.dtype)
        pos = 0
        for k in range(n_frames):
            v = conf[k][valid[k]]
            vals[pos : pos + v.size] = v
            pos += v.size
        thresholds.append(float(np.quantile(vals, float(conf_quantile), overwrite_input=True)))
        del vals

    # Pass 2: per frame, filter by confidence, draw this frame's share, unproject only those.
    rng = np.random.default_rng(int(seed))
    budget = int(max_pairs)
    out_a: list[np.ndarray] = []
    out_b: list[np.ndarray] = []
    out_w: list[np.ndarray] = []
    for k in range(n_frames):
        keep = valid[k].copy()
        for conf, thr in ((conf_a, thresholds[0]), (conf_b, thresholds[1])):
            if conf is not None and thr is not None:  # a threshold exists only for a chunk with confidence
                keep &= conf[k] >= thr
        idx = np.flatnonzero(keep)
        quota = budget // (n_frames - k)
        if idx.size > quota:
            idx = idx[np.sort(rng.choice(idx.size, size=quota, replace=False))]
        budget -= idx.size
        if idx.size == 0:
            continue
        out_a.append(_unproject_pixels(depth_a[k].reshape(-1), idx, width, ixt_a[k], ext_a[k]))
        out_b.append(_unproject_pixels(depth_b[k].reshape(-1), idx, width, ixt_b[k], ext_b[k]))
        w = np.ones(idx.size)
        for conf in (conf_a, conf_b):
            if conf is not None:
                w *= conf[k].reshape(-1)[idx].astype(np.float64)
        out_w.append(np.sqrt(w))
    if not out_a:
        return np.zeros((0, 3)), np.zeros((0, 3)), np.zeros(0)
    return np.concatenate(out_a), np.concatenate(out_b), np.concatenate(out_w)


def align_overlap(
    depth_a: np.ndarray,
    conf_a: np.ndarray | None,
    ext_a: np.ndarray,
    ixt_a: np.ndarray,
    depth_b: np.ndarray,
    conf_b: np.ndarray | None,
    ext_b: np.ndarray,
    ixt_b: np.ndarray,
    *,
    with_scale: bool = True,
    max_pairs: int = 100_000,
    seed: int = 0,
) -> tuple[Sim3, FitInfo]:
    """The similarity S mapping chunk b's world into chunk a's world (``pts_a ≈ S(pts_b)``).

    `overlap_pairs` (default confidence quantile) then `robust_umeyama` (default Huber delta)
    from b's points to a's. Arguments as `overlap_pairs`; ``with_scale=False`` for metric
    presets (SE(3), scale exactly 1).

    Returns:
        S and its `FitInfo` (rmse in chunk a's units).

    Raises:
        ValueError: Fewer than 3 usable pairs, or degenerate geometry (see `umeyama`).
    """
    pts_a, pts_b, w = overlap_pairs(
        depth_a, conf_a, ext_a, ixt_a, depth_b, conf_b, ext_b, ixt_b, max_pairs=max_pairs, seed=seed
    )
    if pts_a.shape[0] < 3:
        raise ValueError(
            f"align_overlap found {pts_a.shape[0]} usable pixel pairs in the shared frames; "
            "at least 3 with valid depth in both chunks are needed"
        )
    return robust_umeyama(pts_b, pts_a, w, with_scale=with_scale)


# --------------------------------------------------------------------------------------
# Moving cameras, trajectory error
# --------------------------------------------------------------------------------------


def transform_views(extrinsics: np.ndarray, sim: Sim3) -> tuple[np.ndarray, float]:
    """Re-express a chunk's cameras in the world that ``sim`` maps the chunk's world into.

    With ``X' = s R_s X + t_s`` and a camera ``X_c = R X + t``, keeping the camera rigid
    means its depth scales by s: ``s X_c = R R_s^T X' + (s t - R R_s^T t_s)``. So
    ``R' = R R_s^T`` and ``t' = s t - R R_s^T t_s`` (no orthonormality of R is assumed), and
    unprojecting ``depth * s`` with the new extrinsics gives ``sim.apply`` of the old points.

    Args:
        extrinsics: (K, 3, 4) world-to-camera ``[R|t]`` in the chunk's world.
        sim: Maps the chunk's world into the target world.

    Returns:
        ((K, 3, 4) float64 world-to-camera extrinsics in the target world, depth_scale = s).
    """
    ext = np.asarray(extrinsics, dtype=np.float64)
    if ext.ndim != 3 or ext.shape[1:] != (3, 4):
        raise ValueError(f"extrinsics must be (K, 3, 4) world-to-camera, got {ext.shape}")
    r, t = ext[:, :, :3], ext[:, :, 3]
    r_new = r @ sim.rotation.T
    t_new = sim.scale * t - r_new @ sim.translation
    return np.concatenate([r_new, t_new[:, :, None]], axis=2), float(sim.scale)


def camera_centres(extrinsics: np.ndarray) -> np.ndarray:
    """Camera centres ``-R^-1 t`` of (N, 3, 4) world-to-camera extrinsics: (N, 3) float64, world frame."""
    ext = np.asarray(extrinsics, dtype=np.float64)
    if ext.ndim != 3 or ext.shape[1:] != (3, 4):
        raise ValueError(f"extrinsics must be (N, 3, 4) world-to-camera, got {ext.shape}")
    return -np.linalg.solve(ext[:, :, :3], ext[:, :, 3:4])[:, :, 0]


def ate_rmse(est_centres: np.ndarray, gt_centres: np.ndarray, with_scale: bool = True) -> tuple[float, float]:
    """Absolute trajectory error after the best (weighted-equal) Umeyama alignment of est to gt.

    Degenerate trajectories (one or two centres, all on a line) are fine here: the
    alignment is not unique then, but the residual of every minimiser is the same.

    Args:
        est_centres: (M, 3) estimated camera centres, M >= 1.
        gt_centres: (M, 3) ground-truth centres, same order.
        with_scale: Also fit a scale (for relative-scale reconstructions); False for metric.

    Returns:
        ``(rmse, path_length)``: RMS distance of the aligned est centres to gt, and the gt
        path length (sum of consecutive distances), both in gt units. Callers report
        ``rmse / path_length * 100`` as a percentage.
    """
    est, gt, w = _check_pairs(est_centres, gt_centres, None)
    if est.shape[0] < 1:
        raise ValueError("ate_rmse needs at least one camera centre")
    scale, r, t = _fit(est, gt, w, with_scale, strict=False)
    aligned = scale * (est @ r.T) + t
    rmse = math.sqrt(float(np.mean(np.sum((aligned - gt) ** 2, axis=1))))
    path = float(np.linalg.norm(np.diff(gt, axis=0), axis=1).sum())
    return rmse, path
