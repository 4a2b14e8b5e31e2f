"""Scores between two runs (`da3_core.scene.metrics`): perfect against themselves, the numbers
theory predicts under known perturbations, and agreement with direct (brute-force) hand
computations of DA3's definitions."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from da3_core.scene import metrics as M
from da3_core.scene.align import Sim3, transform_views
from tests.oracle import load_gt, make_oracle


@pytest.fixture(scope="module")
def room(tmp_path_factory: pytest.TempPathFactory) -> M.RunArrays:
    folder = make_oracle(tmp_path_factory.mktemp("oracle") / "room", n_frames=8, path="loop", scene="room")
    gt = load_gt(Path(folder))
    return M.RunArrays(gt["depth"], gt["intrinsics"], gt["extrinsics"], tuple(gt["meta"]["names"]))


def moved(run: M.RunArrays, sim: Sim3) -> M.RunArrays:
    """The same run in another world: every point x becomes sim(x) (depth scaled by s)."""
    ext, s = transform_views(run.extrinsics, sim)
    return M.RunArrays(run.depth * s, run.intrinsics, ext, run.names)


def rot_y(deg: float) -> np.ndarray:
    return Rotation.from_euler("y", deg, degrees=True).as_matrix()


# --------------------------------------------------------------------------------------
# Perfect scores
# --------------------------------------------------------------------------------------


def assert_perfect(c: M.Comparison) -> None:
    n = c.numbers()
    assert n["abs_rel"] == pytest.approx(0.0, abs=1e-6)
    assert n["delta_1"] == 1.0
    assert n["rot_err_deg"] == pytest.approx(0.0, abs=1e-5)
    assert n["trans_err_deg"] == pytest.approx(0.0, abs=1e-5)
    assert n["auc_3"] == 1.0 and n["auc_30"] == 1.0
    assert n["chamfer"] == pytest.approx(0.0, abs=1e-6)
    assert n["precision"] == n["recall"] == n["f1"] == 1.0


def test_a_run_scored_against_itself_is_perfect(room: M.RunArrays) -> None:
    c = M.compare_runs(room, room)
    assert_perfect(c)
    assert c.alignment == "camera centres"
    assert c.sim.allclose(Sim3.identity(), atol=1e-9)
    assert c.shared == room.names
    assert set(c.numbers()) == set(M.DEFINITIONS)
    assert all(defn for _, _, defn in c.table())


def test_the_truth_in_another_world_and_scale_is_perfect_after_alignment(room: M.RunArrays) -> None:
    """Rotation 5 degrees, scale 1.1 and a shift of the whole run: a gauge change, scored 0."""
    sim = Sim3(1.1, rot_y(5.0), np.array([0.3, -0.2, 1.0]))
    c = M.compare_runs(room, moved(room, sim))
    assert_perfect(c)
    assert c.sim.allclose(sim.inverse(), rtol=1e-6, atol=1e-9)
    assert c.pose is not None and c.pose.ate_rmse == pytest.approx(0.0, abs=1e-9)
    np.testing.assert_allclose(c.depth.per_view_scale, 1 / 1.1, rtol=1e-6)


def test_alignment_from_points_when_the_centres_cannot_fix_it(room: M.RunArrays) -> None:
    """Two shared frames: too few centres, so the pixels of the shared frames fix the similarity."""
    sim = Sim3(0.7, rot_y(-20.0), np.array([1.0, 0.0, 0.5]))
    b = moved(room, sim)
    two = M.RunArrays(b.depth[[2, 5]], b.intrinsics[[2, 5]], b.extrinsics[[2, 5]], (b.names[2], b.names[5]))
    c = M.compare_runs(room, two)
    assert c.alignment == "points"
    assert c.shared == (room.names[2], room.names[5])
    np.testing.assert_array_equal(c.index_a, [2, 5])
    assert c.sim.allclose(sim.inverse(), rtol=1e-5, atol=1e-6)
    assert c.cloud is not None and c.cloud.f1 == 1.0


def test_another_resolution_and_order_of_frames(room: M.RunArrays) -> None:
    """B at half the size (every other pixel, K halved) with its frames reversed."""
    order = np.arange(len(room.names))[::-1]
    k = M.scale_intrinsics(room.intrinsics, room.hw, (room.hw[0] // 2, room.hw[1] // 2))
    b = M.RunArrays(
        room.depth[order][:, ::2, ::2], k[order], room.extrinsics[order], tuple(room.names[i] for i in order)
    )
    c = M.compare_runs(room, b)
    assert c.shared == room.names
    np.testing.assert_array_equal(c.index_b, order)
    assert c.pose is not None and c.pose.auc_3 == 1.0
    assert c.cloud is not None and c.cloud.accuracy == pytest.approx(0.0, abs=1e-6)  # B's points lie on A's
    assert c.depth_diff.shape == room.depth.shape
    assert c.depth.abs_rel < 0.05  # nearest upsampling only


# --------------------------------------------------------------------------------------
# Depth: theory
# --------------------------------------------------------------------------------------


def wavy_depth(k: int = 4, h: int = 200, w: int = 250) -> np.ndarray:
    v, u = np.mgrid[0:h, 0:w]
    return np.stack([2.0 + 0.5 * np.sin(u / 30.0 + i) + 0.3 * np.cos(v / 17.0) for i in range(k)])


def test_depth_scale_is_removed_by_the_median_scale() -> None:
    d = wavy_depth()
    m = M.depth_metrics(d, 1.1 * d)
    assert m.abs_rel == pytest.approx(0.0, abs=1e-12) and m.delta_1 == 1.0
    np.testing.assert_allclose(m.per_view_scale, 1 / 1.1)
    raw = M.depth_metrics(d, 1.1 * d, median_align=False)
    assert raw.abs_rel == pytest.approx(0.1) and raw.delta_1 == 1.0
    assert M.depth_metrics(d, 1.3 * d, median_align=False).delta_1 == 0.0


def test_one_percent_depth_noise_gives_the_expected_absrel() -> None:
    """d_B = d_A (1 + e), e ~ N(0, 0.01^2): AbsRel -> E|e| = 0.01 sqrt(2 / pi); delta_1 = 1."""
    d = wavy_depth()
    rng = np.random.default_rng(0)
    noisy = d * (1 + 0.01 * rng.standard_normal(d.shape))
    m = M.depth_metrics(d, noisy)
    assert m.abs_rel == pytest.approx(0.01 * math.sqrt(2 / math.pi), rel=0.02)
    assert m.delta_1 == 1.0
    diff = M.depth_difference_maps(d, noisy, m.per_view_scale)
    assert float(np.std(diff)) == pytest.approx(0.01, rel=0.02)


def test_invalid_pixels_and_masks_are_left_out() -> None:
    d = wavy_depth(2, 20, 30)
    b = d.copy()
    b[0, :5] = 100.0  # wrong, but masked below
    b[1, :, :3] = np.nan  # invalid in B
    mask = np.ones(d.shape, dtype=bool)
    mask[0, :5] = False
    m = M.depth_metrics(d, b, mask)
    assert m.abs_rel == pytest.approx(0.0, abs=1e-12)
    np.testing.assert_array_equal(m.n_pixels, [15 * 30, 20 * 27])
    diff = M.depth_difference_maps(d, b)
    assert np.isnan(diff[1, :, :3]).all() and np.isfinite(diff[1, :, 3:]).all()
    empty = M.depth_metrics(d, np.zeros_like(d))
    assert math.isnan(empty.abs_rel) and (empty.n_pixels == 0).all()


# --------------------------------------------------------------------------------------
# Cameras: theory and brute force
# --------------------------------------------------------------------------------------


def ring(n: int = 6, seed: int = 0) -> np.ndarray:
    """(n, 3, 4) world-to-camera cameras on a ring, looking roughly inwards, with some jitter."""
    rng = np.random.default_rng(seed)
    ext = np.zeros((n, 3, 4))
    for i in range(n):
        r = Rotation.from_euler("yxz", [360.0 * i / n, rng.normal(0, 5), rng.normal(0, 5)], degrees=True).as_matrix()
        c = np.array([3 * math.sin(2 * math.pi * i / n), rng.normal(0, 0.2), -3 * math.cos(2 * math.pi * i / n)])
        ext[i, :, :3] = r
        ext[i, :, 3] = -r @ c
    return ext


def test_a_camera_turned_5_degrees_gives_5_degrees_on_its_pairs() -> None:
    ext = ring()
    bad = ext.copy()
    k = 3
    d = Rotation.from_euler("x", 5.0, degrees=True).as_matrix()
    centre = -ext[k, :, :3].T @ ext[k, :, 3]
    bad[k, :, :3] = d @ ext[k, :, :3]  # turned about its own centre
    bad[k, :, 3] = -bad[k, :, :3] @ centre
    rot, trans = M.relative_pose_errors(ext, bad)
    pairs = list(itertools.combinations(range(len(ext)), 2))
    with_k = np.array([k in p for p in pairs])
    np.testing.assert_allclose(rot[with_k], 5.0, atol=1e-9)
    np.testing.assert_allclose(rot[~with_k], 0.0, atol=1e-9)
    np.testing.assert_allclose(trans[~with_k], 0.0, atol=1e-6)
    pm = M.pose_metrics(ext, bad)
    # Pairs with camera k have an error >= 5 > 3 degrees; the others are exact.
    assert pm.auc_3 == pytest.approx(np.mean(~with_k))
    assert pm.rot_err_deg == pytest.approx(5.0 * np.mean(with_k))
    assert pm.ate_rmse == pytest.approx(0.0, abs=1e-9)  # centres did not move


def test_a_translation_direction_off_by_5_degrees() -> None:
    """Two cameras with identity rotation: the relative translation is the baseline; turn it
    by 5 degrees and the one pair scores 5 degrees, AUC@3 = 0, AUC@30 = 25/30."""
    ext = np.zeros((2, 3, 4))
    ext[:, :, :3] = np.eye(3)
    bad = ext.copy()
    ext[1, :, 3] = [-1.0, 0.0, 0.0]
    a = math.radians(5.0)
    bad[1, :, 3] = [-1.1 * math.cos(a), -1.1 * math.sin(a), 0.0]  # scale 1.1 too: ignored
    rot, trans = M.relative_pose_errors(ext, bad)
    assert rot == pytest.approx([0.0]) and trans == pytest.approx([5.0])
    pm = M.pose_metrics(ext, bad)
    assert pm.auc_3 == 0.0 and pm.auc_30 == pytest.approx(25 / 30)


def da3_pose_errors_by_hand(ext_gt: np.ndarray, ext_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DA3's compute_pose written out pair by pair: 4x4 inverses, quaternion angle, arccos."""

    def h(e: np.ndarray) -> np.ndarray:
        out = np.eye(4)
        out[:3] = e
        return out

    rot, trans = [], []
    g = [h(e) @ np.linalg.inv(h(ext_gt[0])) for e in ext_gt]
    p = [h(e) @ np.linalg.inv(h(ext_pred[0])) for e in ext_pred]
    for i, j in itertools.combinations(range(len(g)), 2):
        rg = np.linalg.inv(g[i]) @ g[j]
        rp = np.linalg.inv(p[i]) @ p[j]
        qg = Rotation.from_matrix(rg[:3, :3]).as_quat()
        qp = Rotation.from_matrix(rp[:3, :3]).as_quat()
        loss = max(1 - float(qg @ qp) ** 2, 1e-15)
        rot.append(math.degrees(math.acos(1 - 2 * loss)))
        tg = rg[:3, 3] / np.linalg.norm(rg[:3, 3])
        tp = rp[:3, 3] / np.linalg.norm(rp[:3, 3])
        e = math.degrees(math.acos(math.sqrt(1 - max(1 - float(tg @ tp) ** 2, 1e-15))))
        trans.append(min(e, abs(180 - e)))
    return np.array(rot), np.array(trans)


def auc_by_hand(err: np.ndarray, t_max: int) -> float:
    shares = [np.mean(err <= t) if t == t_max else np.mean(err < t) for t in range(1, t_max + 1)]
    return float(np.mean(shares))


def test_pose_errors_and_auc_agree_with_a_hand_computation() -> None:
    gt = ring(9, seed=1)
    rng = np.random.default_rng(2)
    pred = gt.copy()
    for i in (2, 5, 7):  # pairs among the others stay exact
        d = Rotation.from_rotvec(rng.normal(0, 0.08, 3)).as_matrix()
        pred[i, :, :3] = d @ gt[i, :, :3]
        pred[i, :, 3] = gt[i, :, 3] + rng.normal(0, 0.3, 3)
    rot, trans = M.relative_pose_errors(gt, pred)
    hrot, htrans = da3_pose_errors_by_hand(gt, pred)
    np.testing.assert_allclose(rot, hrot, atol=1e-5)
    np.testing.assert_allclose(trans, htrans, atol=1e-5)
    err = np.maximum(hrot, htrans)
    assert err.min() < 3 < err.max() and err.max() < 30  # the test spans both AUC thresholds
    pm = M.pose_metrics(gt, pred)
    assert pm.n_pairs == 36
    assert pm.auc_3 == pytest.approx(auc_by_hand(err, 3), abs=1e-12)
    assert pm.auc_30 == pytest.approx(auc_by_hand(err, 30), abs=1e-12)


def test_auc_bins_edges_as_numpy_histogram() -> None:
    r = np.array([0.0, 2.999, 3.0, 7.5, 29.0, 30.0, 45.0, np.nan])
    t = np.zeros_like(r)
    for t_max in (3, 5, 30):
        assert M.pose_auc(r, t, t_max) == pytest.approx(auc_by_hand(np.nan_to_num(r, nan=1e6), t_max), abs=1e-12)


# --------------------------------------------------------------------------------------
# Clouds: brute force
# --------------------------------------------------------------------------------------


def test_chamfer_and_f1_agree_with_a_brute_force_computation() -> None:
    rng = np.random.default_rng(3)
    ref = rng.random((300, 3))
    est = ref[:250] + rng.normal(0, 0.03, (250, 3))
    thr = 0.04
    dist = np.linalg.norm(est[:, None, :] - ref[None, :, :], axis=2)  # (250, 300)
    acc, comp = dist.min(axis=1).mean(), dist.min(axis=0).mean()
    precision, recall = np.mean(dist.min(axis=1) < thr), np.mean(dist.min(axis=0) < thr)
    m = M.cloud_metrics(ref, est, thr)
    assert m.accuracy == pytest.approx(acc) and m.completeness == pytest.approx(comp)
    assert m.chamfer == pytest.approx((acc + comp) / 2)
    assert m.precision == pytest.approx(precision) and m.recall == pytest.approx(recall)
    assert m.f1 == pytest.approx(2 * precision * recall / (precision + recall))
    assert 0 < m.precision < 1 and 0 < m.recall < 1


def test_far_apart_clouds_keep_f1_exact_and_chamfer_within_one_percent() -> None:
    """Points beyond the threshold get scipy's approximate search (fast where an exact one
    visits most of the tree): F1 stays exact, Chamfer within `NEAREST_EPS` of brute force."""
    rng = np.random.default_rng(3)
    ref = rng.normal(size=(600, 3)) * [1, 1, 0.01]
    est = np.concatenate(
        [ref[:200] + rng.normal(0, 0.01, (200, 3)), rng.normal(size=(400, 3)) * [1, 1, 0.01] + [0, 0, 5]]
    )
    d = np.linalg.norm(est[:, None] - ref[None], axis=-1)
    e2r, r2e = d.min(1), d.min(0)
    got = M.cloud_metrics(ref, est, 0.05)
    assert got.precision == float(np.mean(e2r < 0.05)) and got.recall == float(np.mean(r2e < 0.05))
    exact = (e2r.mean() + r2e.mean()) / 2
    assert exact <= got.chamfer <= exact * (1 + M.NEAREST_EPS)


def test_cloud_metrics_edge_cases() -> None:
    pts = np.zeros((5, 3))
    empty = M.cloud_metrics(pts, np.zeros((0, 3)), 0.1)
    assert empty.chamfer == math.inf and empty.f1 == 0.0
    far = M.cloud_metrics(pts, pts + 1.0, 0.1)
    assert far.f1 == 0.0 and far.chamfer == pytest.approx(math.sqrt(3))
    with pytest.raises(ValueError):
        M.cloud_metrics(pts, pts, 0.0)


def test_no_shared_frame_is_an_error(room: M.RunArrays) -> None:
    other = M.RunArrays(room.depth, room.intrinsics, room.extrinsics, tuple(f"x{i}" for i in range(len(room.names))))
    with pytest.raises(ValueError, match="share no frame"):
        M.compare_runs(room, other)


def test_runs_without_cameras_give_depth_numbers_only(room: M.RunArrays) -> None:
    mono = M.RunArrays(room.depth * 3, room.intrinsics, None, room.names)
    c = M.compare_runs(room, mono)
    assert c.pose is None and c.cloud is None and c.alignment == "none"
    assert c.numbers() == {"abs_rel": pytest.approx(0.0, abs=1e-7), "delta_1": 1.0}
