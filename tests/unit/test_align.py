"""Chunk alignment (da3_core.scene.align) and the Sim(3) pose graph (da3_core.scene.posegraph).

Exact-theory checks on synthetic data: noiseless correspondences must give the transform to
rounding, the box room of `tests.unit.synthetic` gives analytic depth for the overlap tests.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from da3_core.scene import geometry as g
from da3_core.scene import posegraph as pg
from da3_core.scene.align import (
    FitInfo,
    Sim3,
    align_overlap,
    ate_rmse,
    camera_centres,
    overlap_pairs,
    robust_umeyama,
    transform_views,
    umeyama,
)
from da3_core.scene.posegraph import Edge, chain, loop_candidates, optimize
from tests.unit import synthetic as syn


def random_sim3(rng: np.random.Generator, scale: float | None = None) -> Sim3:
    s = float(rng.uniform(0.3, 3.0)) if scale is None else scale
    return Sim3(s, Rotation.random(random_state=rng.integers(1 << 31)).as_matrix(), rng.normal(size=3) * 2.0)


def rot_z(deg: float) -> np.ndarray:
    return Rotation.from_euler("z", deg, degrees=True).as_matrix()


def sim_errors(est: Sim3, truth: Sim3) -> tuple[float, float, float]:
    """(relative scale error, rotation error in degrees, translation error)."""
    return (
        abs(est.scale / truth.scale - 1.0),
        float(np.degrees(Rotation.from_matrix(est.rotation.T @ truth.rotation).magnitude())),
        float(np.linalg.norm(est.translation - truth.translation)),
    )


# ------------------------------------------------------------------------------ Sim3


def test_sim3_apply_compose_inverse_matrix_agree():
    rng = np.random.default_rng(1)
    a, b = random_sim3(rng), random_sim3(rng)
    x = rng.normal(size=(5, 4, 3))
    np.testing.assert_allclose(a.compose(b).apply(x), a.apply(b.apply(x)), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(a.inverse().apply(a.apply(x)), x, atol=1e-12)
    assert a.compose(a.inverse()).allclose(Sim3.identity(), atol=1e-12)
    xh = np.concatenate([x.reshape(-1, 3), np.ones((20, 1))], axis=1)
    np.testing.assert_allclose((xh @ a.matrix().T)[:, :3], a.apply(x).reshape(-1, 3), atol=1e-12)
    np.testing.assert_allclose(a.compose(b).matrix(), a.matrix() @ b.matrix(), atol=1e-12)
    assert a.apply(x).dtype == np.float64 and a.apply(x).shape == x.shape
    np.testing.assert_array_equal(Sim3.identity().apply(x), x)


def test_sim3_log_and_json_round_trips():
    rng = np.random.default_rng(2)
    for _ in range(5):
        s = random_sim3(rng)
        v = s.log()
        assert v.shape == (7,) and math.isclose(v[6], math.log(s.scale))
        np.testing.assert_array_equal(v[3:6], s.translation)
        assert Sim3.from_log(v).allclose(s, rtol=1e-12, atol=1e-13)
        back = Sim3.from_json(json.loads(json.dumps(s.to_json())))
        assert back.scale == s.scale
        np.testing.assert_array_equal(back.rotation, s.rotation)
        np.testing.assert_array_equal(back.translation, s.translation)
    np.testing.assert_array_equal(Sim3.identity().log(), np.zeros(7))


def test_sim3_is_immutable_and_validated():
    s = Sim3.identity()
    with pytest.raises(ValueError):
        s.rotation[0, 0] = 2.0
    with pytest.raises(ValueError, match="scale"):
        Sim3(0.0, np.eye(3), np.zeros(3))
    with pytest.raises(ValueError, match="proper rotation"):
        Sim3(1.0, np.diag([1.0, 1.0, -1.0]), np.zeros(3))
    with pytest.raises(ValueError, match="translation"):
        Sim3(1.0, np.eye(3), np.zeros(4))
    with pytest.raises(ValueError, match="missing"):
        Sim3.from_json({"scale": 1.0})


# ------------------------------------------------------------------------------ Umeyama


def test_umeyama_recovers_a_random_sim3_exactly():
    rng = np.random.default_rng(3)
    for _ in range(5):
        truth = random_sim3(rng)
        src = rng.normal(size=(200, 3)) * 3.0 + rng.normal(size=3)
        fit = umeyama(src, truth.apply(src))
        assert fit.allclose(truth, rtol=1e-9, atol=1e-9)
        # Weights do not change a noiseless answer.
        assert umeyama(src, truth.apply(src), rng.random(200) + 0.1).allclose(truth, rtol=1e-9, atol=1e-9)


def test_umeyama_planar_points_and_minimal_three():
    rng = np.random.default_rng(4)
    truth = random_sim3(rng)
    plane = np.concatenate([rng.normal(size=(50, 2)), np.zeros((50, 1))], axis=1)
    assert umeyama(plane, truth.apply(plane)).allclose(truth, rtol=1e-9, atol=1e-9)
    tri = np.array([[0.0, 0, 0], [1, 0, 0], [0, 2, 0]])
    assert umeyama(tri, truth.apply(tri)).allclose(truth, rtol=1e-9, atol=1e-9)


def test_umeyama_weights_select_the_points_that_count():
    rng = np.random.default_rng(5)
    truth = random_sim3(rng)
    src = rng.normal(size=(60, 3))
    dst = truth.apply(src)
    dst[:10] += 5.0  # wrong pairs with weight 0 must not matter
    w = np.ones(60)
    w[:10] = 0.0
    assert umeyama(src, dst, w).allclose(truth, rtol=1e-9, atol=1e-9)


def test_umeyama_without_scale_is_se3_with_the_right_rotation():
    rng = np.random.default_rng(6)
    truth = random_sim3(rng, scale=1.0)
    src = rng.normal(size=(100, 3))
    fit = umeyama(src, truth.apply(src), with_scale=False)
    assert fit.scale == 1.0 and fit.allclose(truth, rtol=1e-9, atol=1e-9)
    # A scaled copy: SE(3) keeps scale 1 and still finds the rotation (the rotation does
    # not depend on the scale), translation = centroid difference.
    scaled = Sim3(2.5, truth.rotation, truth.translation)
    fit = umeyama(src, scaled.apply(src), with_scale=False)
    assert fit.scale == 1.0
    np.testing.assert_allclose(fit.rotation, truth.rotation, atol=1e-9)
    np.testing.assert_allclose(fit.translation, scaled.apply(src).mean(0) - truth.rotation @ src.mean(0), atol=1e-9)


def test_umeyama_refuses_degenerate_input():
    src = np.random.default_rng(7).normal(size=(10, 3))
    with pytest.raises(ValueError, match="at least 3"):
        umeyama(src[:2], src[:2])
    with pytest.raises(ValueError, match="at least 3"):
        umeyama(src, src, np.zeros(10))
    line = np.outer(np.arange(10.0), [1.0, 2.0, 3.0]) + 1.0
    with pytest.raises(ValueError, match="collinear"):
        umeyama(line, line + 1.0)
    with pytest.raises(ValueError, match="coincide"):
        umeyama(np.ones((5, 3)), src[:5])
    with pytest.raises(ValueError, match="finite"):
        umeyama(np.full((5, 3), np.nan), src[:5])
    with pytest.raises(ValueError, match=r"\(M, 3\)"):
        umeyama(src, src[:, :2])
    with pytest.raises(ValueError, match=">= 0"):
        umeyama(src, src, -np.ones(10))


def test_robust_umeyama_survives_30_percent_gross_outliers():
    rng = np.random.default_rng(8)
    truth = Sim3(2.3, Rotation.from_rotvec([0.3, -0.5, 0.8]).as_matrix(), np.array([1.0, -2.0, 3.0]))
    src = rng.normal(size=(1000, 3))
    dst = truth.apply(src) + rng.normal(scale=0.01, size=src.shape)
    bad = rng.random(1000) < 0.3
    dst[bad] = rng.uniform(-20.0, 20.0, size=(int(bad.sum()), 3))
    plain = sim_errors(umeyama(src, dst), truth)
    fit, info = robust_umeyama(src, dst)
    robust = sim_errors(fit, truth)
    assert plain[0] > 0.05 and plain[1] > 1.0  # plain least squares is dragged away
    assert robust[0] < 3e-3 and robust[1] < 0.1 and robust[2] < 0.01
    assert isinstance(info, FitInfo) and info.n_pairs == 1000 and 1 <= info.iterations <= 10
    assert 0.6 < info.inlier_fraction < 0.8  # the ~70 % inliers
    assert info.delta < 0.1  # about 3 sigma of the inlier noise (3D residual), not the outliers'


def test_robust_umeyama_exact_data_and_fixed_delta():
    rng = np.random.default_rng(9)
    truth = random_sim3(rng)
    src = rng.normal(size=(100, 3))
    fit, info = robust_umeyama(src, truth.apply(src))
    assert fit.allclose(truth, rtol=1e-9, atol=1e-9)
    assert info.iterations == 1 and info.rmse < 1e-9 and info.inlier_fraction == 1.0
    fit, info = robust_umeyama(src, truth.apply(src), delta=0.5, iterations=0, with_scale=False)
    assert info.iterations == 0 and info.delta == 0.5 and fit.scale == 1.0
    with pytest.raises(ValueError, match="delta"):
        robust_umeyama(src, truth.apply(src), delta=0.0)


# ------------------------------------------------------------------------------ overlap


def two_chunks(truth: Sim3, *, dtype=np.float64):
    """The box room's three views in world A (chunk a) and in world B (chunk b), with
    ``X_a = truth(X_b)``. Chunk b is built independently of `transform_views`: camera centre
    ``truth^-1(c)``, orientation ``R_truth^T R_c2w``, and z-depth divided by the scale."""
    ext_a, k = syn.box_cameras()
    depth_a = np.stack([syn.box_depth(k[i], ext_a[i]) for i in range(3)])
    inv = truth.inverse()
    ext_b = np.stack(
        [syn.extrinsic_from_pose(truth.rotation.T @ e[:, :3].T, inv.apply(-e[:, :3].T @ e[:, 3])) for e in ext_a]
    )
    depth_b = depth_a / truth.scale
    return depth_a.astype(dtype), ext_a, k, depth_b.astype(dtype), ext_b


def test_overlap_pairs_correspond_and_follow_the_confidence_rules():
    truth = Sim3(1.7, Rotation.from_rotvec([0.2, 0.4, -0.3]).as_matrix(), np.array([0.5, -1.0, 2.0]))
    depth_a, ext_a, k, depth_b, ext_b = two_chunks(truth)
    # Confidence as a known function of the world point, the same in both chunks, so the
    # weight of a pair can be checked from its point alone: w = sqrt(c * c) = c.
    world = np.stack([syn.box_world_points(k[i], ext_a[i], depth_a[i]) for i in range(3)])
    conf = 1.0 + np.linalg.norm(world, axis=-1)
    depth_a[0, :5] = np.nan  # invalid in a
    depth_b[1, :, :4] = 0.0  # invalid in b
    valid = np.isfinite(depth_a) & (depth_a > 0) & (depth_b > 0)
    thr = np.quantile(conf[valid], 0.3)
    n_expected = int(np.count_nonzero(valid & (conf >= thr)))

    pts_a, pts_b, w = overlap_pairs(depth_a, conf, ext_a, k, depth_b, conf, ext_b, k, max_pairs=10**6)
    assert pts_a.shape == (n_expected, 3) and pts_b.shape == (n_expected, 3) and w.shape == (n_expected,)
    assert pts_a.dtype == pts_b.dtype == w.dtype == np.float64
    np.testing.assert_allclose(pts_a, truth.apply(pts_b), atol=1e-9)
    assert syn.on_box_surface(pts_a, tol=1e-9).all()
    np.testing.assert_allclose(w, 1.0 + np.linalg.norm(pts_a, axis=1), rtol=1e-12)
    assert w.min() >= thr - 1e-12

    # Bounded and deterministic subsample, spread over the frames.
    sub = overlap_pairs(depth_a, conf, ext_a, k, depth_b, conf, ext_b, k, max_pairs=300, seed=4)
    again = overlap_pairs(depth_a, conf, ext_a, k, depth_b, conf, ext_b, k, max_pairs=300, seed=4)
    other = overlap_pairs(depth_a, conf, ext_a, k, depth_b, conf, ext_b, k, max_pairs=300, seed=5)
    assert sub[0].shape == (300, 3)
    for x, y in zip(sub, again):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(sub[0], other[0])
    np.testing.assert_allclose(sub[0], truth.apply(sub[1]), atol=1e-9)
    full = {tuple(p) for p in pts_a}
    assert all(tuple(p) in full for p in sub[0])

    # No confidence: every valid pixel, weight 1. Quantile 0: no confidence filter.
    pa, _, w1 = overlap_pairs(depth_a, None, ext_a, k, depth_b, None, ext_b, k, max_pairs=10**6)
    assert pa.shape[0] == int(valid.sum()) and np.array_equal(w1, np.ones(pa.shape[0]))
    pa, _, _ = overlap_pairs(depth_a, conf, ext_a, k, depth_b, conf, ext_b, k, max_pairs=10**6, conf_quantile=0.0)
    assert pa.shape[0] == int(valid.sum())


def test_overlap_pairs_refuses_mismatched_chunks_and_handles_no_overlap():
    depth_a, ext_a, k, depth_b, ext_b = two_chunks(Sim3.identity())
    with pytest.raises(ValueError, match="same frames"):
        overlap_pairs(depth_a, None, ext_a, k, depth_b[:, :-1], None, ext_b, k)
    with pytest.raises(ValueError, match="ext_b"):
        overlap_pairs(depth_a, None, ext_a, k, depth_b, None, ext_b[:2], k)
    with pytest.raises(ValueError, match="conf_quantile"):
        overlap_pairs(depth_a, None, ext_a, k, depth_b, None, ext_b, k, conf_quantile=1.5)
    none = np.zeros_like(depth_b)
    pa, pb, w = overlap_pairs(depth_a, None, ext_a, k, none, None, ext_b, k)
    assert pa.shape == (0, 3) and pb.shape == (0, 3) and w.shape == (0,)
    with pytest.raises(ValueError, match="usable pixel pairs"):
        align_overlap(depth_a, None, ext_a, k, none, None, ext_b, k)


def test_align_overlap_recovers_the_sim3_between_two_chunks():
    truth = Sim3(0.6, Rotation.from_rotvec([-0.4, 0.9, 0.2]).as_matrix(), np.array([3.0, 1.0, -2.0]))
    depth_a, ext_a, k, depth_b, ext_b = two_chunks(truth)
    conf = 1.0 + np.random.default_rng(10).random(depth_a.shape) * 4.0
    fit, info = align_overlap(depth_a, conf, ext_a, k, depth_b, conf, ext_b, k, max_pairs=2000)
    assert fit.allclose(truth, rtol=1e-9, atol=1e-9)
    assert info.n_pairs == 2000 and info.rmse < 1e-9 and info.inlier_fraction == 1.0

    # float32 depth (as DA3 gives it): exact up to float32 rounding.
    d32a, _, _, d32b, _ = two_chunks(truth, dtype=np.float32)
    fit, _ = align_overlap(d32a, None, ext_a, k, d32b, None, ext_b, k)
    s_err, r_err, t_err = sim_errors(fit, truth)
    assert s_err < 1e-6 and r_err < 1e-4 and t_err < 1e-5


def test_align_overlap_metric_and_with_wrong_depth_pixels():
    truth = Sim3(1.0, Rotation.from_rotvec([0.1, -0.2, 0.3]).as_matrix(), np.array([0.2, 0.0, -0.5]))
    depth_a, ext_a, k, depth_b, ext_b = two_chunks(truth)
    fit, _ = align_overlap(depth_a, None, ext_a, k, depth_b, None, ext_b, k, with_scale=False)
    assert fit.scale == 1.0 and fit.allclose(truth, rtol=1e-9, atol=1e-9)

    # 20 % of chunk b's pixels with wrong depth (flying pixels: x0.5..x2): the robust fit holds.
    truth = Sim3(1.4, truth.rotation, truth.translation)
    depth_a, ext_a, k, depth_b, ext_b = two_chunks(truth)
    rng = np.random.default_rng(11)
    bad = rng.random(depth_b.shape) < 0.2
    depth_b[bad] *= rng.uniform(0.5, 2.0, size=int(bad.sum()))
    fit, info = align_overlap(depth_a, None, ext_a, k, depth_b, None, ext_b, k)
    s_err, r_err, t_err = sim_errors(fit, truth)
    assert s_err < 2e-3 and r_err < 0.01 and t_err < 5e-3
    assert 0.75 < info.inlier_fraction < 0.85
    pts_a, pts_b, w = overlap_pairs(depth_a, None, ext_a, k, depth_b, None, ext_b, k)
    assert sim_errors(umeyama(pts_b, pts_a, w), truth)[0] > 0.05  # plain least squares fails


# ------------------------------------------------------------------------------ views, ATE


def test_transform_views_keeps_cameras_rigid():
    rng = np.random.default_rng(12)
    sim = random_sim3(rng)
    ext, k = syn.box_cameras()  # float64 (a Reconstruction's are float32)
    depth = np.stack([syn.box_depth(k[i], ext[i]) for i in range(3)])
    new_ext, depth_scale = transform_views(ext, sim)
    assert new_ext.shape == (3, 3, 4) and new_ext.dtype == np.float64 and depth_scale == sim.scale
    for i in range(3):
        old = g.unproject_depth(depth[i], k[i], ext[i]).astype(np.float64)
        new = g.unproject_depth(depth[i] * depth_scale, k[i], new_ext[i]).astype(np.float64)
        # unproject_depth returns float32: compare at float32 precision of the scene's size.
        np.testing.assert_allclose(new, sim.apply(old), atol=2e-5 * max(1.0, np.abs(sim.apply(old)).max()))
    np.testing.assert_allclose(camera_centres(new_ext), sim.apply(camera_centres(ext)), atol=1e-12)
    # Rotations stay rotations; the identity changes nothing.
    np.testing.assert_allclose(
        new_ext[:, :, :3] @ new_ext[:, :, :3].transpose(0, 2, 1), np.tile(np.eye(3), (3, 1, 1)), atol=1e-12
    )
    same, one = transform_views(ext, Sim3.identity())
    np.testing.assert_array_equal(same, ext)
    assert one == 1.0


def test_camera_centres_match_geometry():
    rec = syn.box_scene()
    cams = g.resolve_cameras(rec)
    np.testing.assert_allclose(camera_centres(cams.extrinsics), cams.centers(), atol=1e-12)
    np.testing.assert_allclose(camera_centres(syn.box_cameras()[0])[1], [0.5, -0.2, 0.3], atol=1e-12)


def test_ate_rmse_zero_for_a_similar_copy_and_hand_value_for_a_saddle():
    rng = np.random.default_rng(13)
    gt = np.cumsum(rng.normal(size=(30, 3)), axis=0)
    sim = random_sim3(rng)
    rmse, path = ate_rmse(sim.apply(gt), gt)
    assert rmse < 1e-9
    assert math.isclose(path, float(np.linalg.norm(np.diff(gt, axis=0), axis=1).sum()))
    assert ate_rmse(sim.apply(gt), gt, with_scale=False)[0] > 0.1  # scale not allowed

    # Square of side 2 in z = 0, estimated with a saddle +-e in z (centred, uncorrelated with
    # x and y): the best rotation is the identity, the best scale 2 / (2 + e^2).
    e = 0.3
    gt = np.array([[1.0, 1, 0], [1, -1, 0], [-1, -1, 0], [-1, 1, 0]])
    est = gt + np.array([[0, 0, e], [0, 0, -e], [0, 0, e], [0, 0, -e]])
    moved = Sim3(0.5, rot_z(40.0), np.array([3.0, 2.0, 1.0])).apply(est)  # alignment undoes this
    rmse, path = ate_rmse(est, gt, with_scale=False)
    assert math.isclose(rmse, e, rel_tol=1e-12) and math.isclose(path, 6.0)
    s = 2.0 / (2.0 + e * e)
    expected = math.sqrt(2.0 * (s - 1.0) ** 2 + (s * e) ** 2)
    assert math.isclose(ate_rmse(est, gt)[0], expected, rel_tol=1e-9)
    assert math.isclose(ate_rmse(moved, gt)[0], expected, rel_tol=1e-9)


def test_ate_rmse_accepts_degenerate_trajectories():
    line = np.outer(np.arange(6.0), [1.0, 0.5, 0.0])
    rmse, path = ate_rmse(Sim3(2.0, rot_z(30.0), np.ones(3)).apply(line), line)
    assert rmse < 1e-9 and math.isclose(path, 5.0 * math.hypot(1.0, 0.5))
    assert ate_rmse(np.zeros((1, 3)), np.ones((1, 3))) == (0.0, 0.0)


# ------------------------------------------------------------------------------ pose graph


def truth_nodes(n: int) -> list[Sim3]:
    """Node 0 is the world; the others turn around a circle, tilt a little and change scale."""
    out = [Sim3.identity()]
    for k in range(1, n):
        a = 2 * math.pi * k / n
        r = Rotation.from_euler("zx", [math.degrees(a), 5.0 * math.sin(3 * a)], degrees=True).as_matrix()
        out.append(Sim3(1.0 + 0.1 * math.sin(a), r, np.array([3 * math.sin(a), 3 * (1 - math.cos(a)), 0.2 * k])))
    return out


def relative(nodes: list[Sim3], i: int, j: int) -> Sim3:
    return nodes[i].inverse().compose(nodes[j])


def node_error(est: list[Sim3], truth: list[Sim3]) -> float:
    return float(np.sqrt(np.mean([np.sum((a.translation - b.translation) ** 2) for a, b in zip(est, truth)])))


def test_chain_and_optimize_return_the_truth_from_exact_edges():
    truth = truth_nodes(10)
    seq = [Edge(k - 1, k, relative(truth, k - 1, k)) for k in range(1, 10)]
    chained = chain(seq, 10)
    assert all(c.allclose(t, rtol=1e-9, atol=1e-9) for c, t in zip(chained, truth))
    # An edge written backwards is used inverted.
    flipped = seq[:4] + [Edge(5, 4, relative(truth, 5, 4))] + seq[5:]
    assert all(c.allclose(t, rtol=1e-9, atol=1e-9) for c, t in zip(chain(flipped, 10), truth))

    loop = Edge(0, 9, relative(truth, 0, 9), kind="loop")
    out, info = optimize(10, seq + [loop])
    assert all(o.allclose(t, rtol=1e-9, atol=1e-9) for o, t in zip(out, truth))
    assert set(info) == {"cost_before", "cost_after", "iterations", "n_loop_edges"}
    assert info["n_loop_edges"] == 1 and info["cost_after"] < 1e-20


def test_optimize_without_loops_is_exactly_the_chain():
    rng = np.random.default_rng(14)
    seq = [Edge(k - 1, k, random_sim3(rng)) for k in range(1, 6)]
    out, info = optimize(6, seq)
    for a, b in zip(out, chain(seq, 6)):
        assert a.scale == b.scale
        np.testing.assert_array_equal(a.rotation, b.rotation)
        np.testing.assert_array_equal(a.translation, b.translation)
    assert info["iterations"] == 0 and info["n_loop_edges"] == 0
    assert info["cost_before"] == info["cost_after"] < 1e-25
    out, _ = optimize(6, seq, fixed=2)
    assert out[2].allclose(Sim3.identity(), atol=1e-12)
    assert out[2].inverse().compose(out[4]).allclose(relative(chain(seq, 6), 2, 4), atol=1e-9)


def test_a_loop_edge_removes_most_of_the_drift():
    n = 10
    truth = truth_nodes(n)
    drift = Sim3(1.01, rot_z(1.0), np.zeros(3))
    seq = [Edge(k - 1, k, relative(truth, k - 1, k).compose(drift)) for k in range(1, n)]
    loop = Edge(0, n - 1, relative(truth, 0, n - 1), kind="loop")
    chained = chain(seq, n)
    out, info = optimize(n, seq + [loop])
    before, after = node_error(chained, truth), node_error(out, truth)
    assert before > 0.1
    assert after * 3 <= before
    assert info["cost_after"] < info["cost_before"] and info["iterations"] >= 1
    assert out[0].allclose(Sim3.identity(), atol=1e-12)
    # The loop's end lands near its measured place, the scales drift less.
    assert abs(out[-1].scale / truth[-1].scale - 1) < abs(chained[-1].scale / truth[-1].scale - 1) / 3


def test_optimize_metric_se3_keeps_scale_one():
    n = 8
    truth = [Sim3(1.0, x.rotation, x.translation) for x in truth_nodes(n)]
    drift = Sim3(1.0, rot_z(1.5), np.array([0.02, 0.0, 0.0]))
    seq = [Edge(k - 1, k, relative(truth, k - 1, k).compose(drift)) for k in range(1, n)]
    loop = Edge(0, n - 1, relative(truth, 0, n - 1), kind="loop")
    out, _ = optimize(n, seq + [loop], with_scale=False)
    assert all(x.scale == 1.0 for x in out)
    assert node_error(out, truth) * 3 <= node_error(chain(seq, n), truth)
    with pytest.raises(ValueError, match="scale 1"):
        optimize(n, seq + [Edge(0, 3, Sim3(1.2, np.eye(3), np.zeros(3)), kind="loop")], with_scale=False)


def test_optimize_fixed_node_and_initial_and_bad_input():
    truth = truth_nodes(6)
    seq = [Edge(k - 1, k, relative(truth, k - 1, k)) for k in range(1, 6)]
    loop = Edge(1, 5, relative(truth, 1, 5), kind="loop")
    out, _ = optimize(6, seq + [loop], fixed=3)
    assert out[3].allclose(Sim3.identity(), atol=1e-12)
    for k in range(6):
        assert out[k].allclose(relative(truth, 3, k), rtol=1e-8, atol=1e-8)
    # A perturbed start converges back to the truth.
    rng = np.random.default_rng(15)
    start = [t.compose(Sim3.from_log(rng.normal(scale=0.05, size=7))) for t in truth]
    out, info = optimize(6, seq + [loop], initial=start)
    assert all(o.allclose(t, rtol=1e-6, atol=1e-6) for o, t in zip(out, truth))
    assert info["cost_before"] > 1e-4 and info["cost_after"] < 1e-16
    with pytest.raises(ValueError, match="no sequential edge"):
        optimize(6, seq[:-1] + [loop])
    with pytest.raises(ValueError, match="node >= n"):
        optimize(4, seq + [loop])
    with pytest.raises(ValueError, match="different nodes"):
        Edge(2, 2, Sim3.identity())
    with pytest.raises(ValueError, match="kind"):
        Edge(0, 1, Sim3.identity(), kind="other")


def test_fast_so3_exp_and_log_match_scipy():
    rng = np.random.default_rng(20)
    axes = rng.normal(size=(5, 3))
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    angles = [0.0, 1e-9, 1e-5, 0.5, 2 * math.pi / 3, 2 * math.pi / 3 + 1e-9, math.pi - 1e-3, math.pi - 1e-9]
    rv = np.concatenate([Rotation.random(500, random_state=3).as_rotvec()] + [axes * a for a in angles])
    mats = Rotation.from_rotvec(rv).as_matrix()
    np.testing.assert_allclose(pg._so3_exp(rv), mats, atol=1e-14)
    back = pg._so3_log(mats)
    assert np.all(np.linalg.norm(back, axis=1) <= math.pi + 1e-12)
    np.testing.assert_allclose(pg._so3_exp(back), mats, atol=1e-13)
    inside = np.linalg.norm(rv, axis=1) < math.pi - 1e-6  # away from the +-pi ambiguity
    np.testing.assert_allclose(back[inside], rv[inside], atol=1e-12)


def test_optimize_hundreds_of_nodes():
    rng = np.random.default_rng(16)
    n = 300
    truth = [Sim3.identity()]
    for _ in range(1, n):
        step = Sim3(
            float(np.exp(rng.normal(scale=0.02))),
            Rotation.from_rotvec(rng.normal(scale=0.05, size=3)).as_matrix(),
            np.array([1.0, 0.0, 0.0]) + rng.normal(scale=0.1, size=3),
        )
        truth.append(truth[-1].compose(step))

    def noisy(s: Sim3) -> Sim3:
        return s.compose(Sim3.from_log(rng.normal(scale=0.01, size=7)))

    edges = [Edge(k - 1, k, noisy(relative(truth, k - 1, k))) for k in range(1, n)]
    edges += [Edge(i, i + 100, noisy(relative(truth, i, i + 100)), kind="loop") for i in range(0, n - 100, 50)]
    out, info = optimize(n, edges)
    assert info["n_loop_edges"] == 4 and info["cost_after"] < info["cost_before"]
    assert node_error(out, truth) < node_error(chain(edges[: n - 1], n), truth)


# ------------------------------------------------------------------------------ loops


def brute_force_loops(desc, chunk, gap, thr, max_loops, nms):
    sim = desc.astype(np.float32) @ desc.astype(np.float32).T
    cands = [
        (float(sim[i, j]), i, j)
        for i in range(len(desc))
        for j in range(i + 1, len(desc))
        if abs(chunk[j] - chunk[i]) >= gap and sim[i, j] >= np.float32(thr)
    ]
    cands.sort(key=lambda c: (-c[0], c[1], c[2]))
    out = []
    for s, i, j in cands:
        if any(abs(i - a) <= nms and abs(j - b) <= nms for a, b, _ in out):
            continue
        out.append((i, j, s))
        if len(out) == max_loops:
            break
    return out


def descriptors(n: int, d: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_loop_candidates_find_a_planted_pair_with_nms():
    n, d = 400, 64
    desc = descriptors(n, d, 17)
    chunk = np.arange(n) // 40  # 10 chunks of 40 frames
    rng = np.random.default_rng(18)
    # Frames 300..304 revisit frames 20..24 (chunk 0 vs chunk 7); 300 <-> 20 is the best match.
    for k, noise in enumerate([0.05, 0.2, 0.25, 0.3, 0.35]):
        v = desc[20 + k] + noise * rng.normal(size=d).astype(np.float32) / math.sqrt(d)
        desc[300 + k] = v / np.linalg.norm(v)
    # A look-alike in the next chunk only (chunk gap 1) and a weaker pair (cosine ~0.8).
    desc[45] = desc[5]
    v = desc[100] + 0.75 * rng.normal(size=d).astype(np.float32) / math.sqrt(d)
    desc[200] = v / np.linalg.norm(v)
    sim_weak = float(desc[100] @ desc[200])
    assert 0.7 < sim_weak < 0.85

    found = loop_candidates(desc, chunk)
    assert [(i, j) for i, j, _ in found] == [(20, 300)]  # nms hides 21..24 x 301..304
    assert found[0][2] > 0.99 and isinstance(found[0][0], int) and isinstance(found[0][2], float)

    no_nms = loop_candidates(desc, chunk, nms_frames=0)
    assert [(i, j) for i, j, _ in no_nms] == [(20 + k, 300 + k) for k in range(5)]
    assert [s for *_, s in no_nms] == sorted((s for *_, s in no_nms), reverse=True)
    assert len(loop_candidates(desc, chunk, nms_frames=0, max_loops=2)) == 2
    assert (5, 45) in [(i, j) for i, j, _ in loop_candidates(desc, chunk, min_chunk_gap=1, nms_frames=0)]
    low = loop_candidates(desc, chunk, threshold=0.7)
    assert (100, 200) in [(i, j) for i, j, _ in low]
    assert loop_candidates(desc, chunk, min_chunk_gap=8) == []
    assert loop_candidates(desc, chunk, max_loops=0) == []


def test_loop_candidates_blockwise_matches_brute_force(monkeypatch):
    n, d = 240, 8  # short descriptors: many pairs above a low threshold
    desc = descriptors(n, d, 19)
    chunk = np.arange(n) // 20
    reference = brute_force_loops(desc, chunk, 2, 0.6, 8, 3)
    assert len(reference) == 8
    monkeypatch.setattr(pg, "_BLOCK_ELEMENTS", 1000)  # 4 rows per block, kept list pruned often
    got = loop_candidates(desc, chunk, threshold=0.6, max_loops=8, nms_frames=3)
    assert [(i, j) for i, j, _ in got] == [(i, j) for i, j, _ in reference]
    np.testing.assert_allclose([s for *_, s in got], [s for *_, s in reference], rtol=1e-6)
