from __future__ import annotations

import math

import numpy as np
import pytest

from da3_core.scene import geometry as g
from tests.unit import synthetic as syn


def _copy_arrays(rec):
    keys = ("depth", "conf", "extrinsics", "intrinsics", "images", "sky")
    return {k: None if getattr(rec, k) is None else getattr(rec, k).copy() for k in keys}


def _assert_unchanged(rec, before):
    for k, v in before.items():
        now = getattr(rec, k)
        if v is None:
            assert now is None
        else:
            assert np.array_equal(now, v, equal_nan=now.dtype.kind == "f"), k


# ---------------------------------------------------------------- cameras & unprojection


def test_unprojected_points_lie_on_the_box_and_match_analytic_points():
    rec = syn.box_scene()
    world = g.unproject_all(rec, g.resolve_cameras(rec))
    assert world.points.shape == (3 * syn.H * syn.W, 3) and world.points.dtype == np.float32
    assert world.valid.all()
    assert syn.on_box_surface(world.points, tol=1e-4).all()
    pts = world.points.reshape(3, syn.H, syn.W, 3)
    for i in range(3):
        k, ext = rec.intrinsics[i].astype(np.float64), rec.extrinsics[i].astype(np.float64)
        truth = syn.box_world_points(k, ext, rec.depth[i].astype(np.float64))
        np.testing.assert_allclose(pts[i], truth, atol=1e-4)


def test_one_world_point_seen_by_two_views_unprojects_to_one_point():
    rec = syn.box_scene()
    world = g.unproject_all(rec, g.resolve_cameras(rec))
    pts = world.points.reshape(3, syn.H, syn.W, 3)
    (u0, v0), (u2, v2) = syn.SHARED_PIXEL_VIEW0, syn.SHARED_PIXEL_VIEW2
    truth = np.array([-1.2, 0.6, 5.0])  # ray (-0.24, 0.12, 1) of camera 0 meets the back wall z = 5
    np.testing.assert_allclose(pts[0, v0, u0], truth, atol=1e-4)
    np.testing.assert_allclose(pts[2, v2, u2], truth, atol=1e-4)


def test_pixel_convention_is_integer_column_row():
    k = syn.pinhole()
    depth = np.full((syn.H, syn.W), 2.0)
    pts = g.unproject_depth(depth, k, np.eye(3, 4))
    np.testing.assert_allclose(pts[24, 32], [0.0, 0.0, 2.0], atol=1e-6)  # principal point pixel
    np.testing.assert_allclose(pts[24, 42], [10 / 50 * 2, 0.0, 2.0], atol=1e-6)  # u is the column
    np.testing.assert_allclose(pts[34, 32], [0.0, 10 / 50 * 2, 2.0], atol=1e-6)  # v is the row, y down


def test_camera_centres_and_frustums():
    rec = syn.box_scene()
    cams = g.resolve_cameras(rec)
    np.testing.assert_allclose(cams.centers(), [[0, 0, 0], [0.5, -0.2, 0.3], [-0.4, 0.1, -0.2]], atol=1e-6)
    segs = g.frustum_segments(cams, rec.hw, 0.5)
    assert segs.shape == (3, 8, 2, 3)
    np.testing.assert_allclose(segs[:, :4, 0], np.repeat(cams.centers()[:, None], 4, axis=1), atol=1e-9)
    # camera 0 is the world frame: the far rectangle sits on z = 0.5
    np.testing.assert_allclose(segs[0, :4, 1, 2], 0.5)


def test_mono_preset_uses_assumed_fov_and_identity_pose():
    rec = syn.mono_box_scene(fov_deg=60.0)
    cams = g.resolve_cameras(rec, fov_deg=60.0)
    assert cams.assumed and cams.fov_deg == 60.0
    np.testing.assert_allclose(cams.extrinsics[0], np.eye(3, 4))
    f = 32 / math.tan(math.radians(30))
    np.testing.assert_allclose(cams.intrinsics[0], [[f, 0, 32], [0, f, 24], [0, 0, 1]])
    world = g.unproject_all(rec, cams)
    assert syn.on_box_surface(world.points, tol=1e-4).all()
    # another FOV gives a different (wrong for this scene) geometry: the setting is live
    other = g.unproject_all(rec, g.resolve_cameras(rec, fov_deg=90.0))
    assert not syn.on_box_surface(other.points, tol=1e-4).all()
    cloud = g.apply_filters(world, g.FilterParams(conf_percentile=90, max_points=None))
    assert cloud.conf_threshold is None and len(cloud) == syn.H * syn.W  # no confidence: no filter


def test_predicted_cameras_are_not_assumed_and_fov_is_ignored():
    rec = syn.box_scene()
    cams = g.resolve_cameras(rec, fov_deg=10.0)
    assert not cams.assumed and cams.fov_deg is None
    np.testing.assert_allclose(cams.intrinsics, rec.intrinsics)


@pytest.mark.parametrize("fov", [0.0, 180.0, -5.0])
def test_bad_fov_is_refused(fov):
    with pytest.raises(ValueError, match="fov_deg"):
        g.intrinsics_from_fov(10, 10, fov)


# ---------------------------------------------------------------- filters on crafted arrays


def _crafted():
    """2 views of 2 x 5 pixels with hand-set depth, confidence, colours and sky."""
    depth = np.array(
        [
            [[1, 1, 1, 1, 1], [1, np.nan, -1, 0, np.inf]],  # view 0: 4 invalid depths
            [[2, 2, 2, 2, 2], [2, 2, 2, 2, 2]],
        ],
        dtype=np.float32,
    )
    conf = np.array(
        [
            [[1.0, 2.0, 3.0, 4.0, 5.0], [6.0, 7.0, 8.0, 9.0, 10.0]],
            [[1.5, 2.5, 3.5, 4.5, 5.5], [6.5, 7.5, 8.5, 9.5, 10.5]],
        ],
        dtype=np.float32,
    )
    images = np.full((2, 2, 5, 3), 128, dtype=np.uint8)
    images[0, 0, 0] = (0, 5, 15)  # black (all < 16)
    images[0, 0, 1] = (0, 5, 16)  # not black (16 is not < 16)
    images[1, 0, 0] = (240, 250, 255)  # white (all >= 240)
    images[1, 0, 1] = (239, 250, 255)  # not white
    images[1, 1, 4] = (10, 10, 10)  # black
    sky = np.zeros((2, 2, 5), dtype=bool)
    sky[1, 1, 2:] = True  # 3 sky pixels in view 1
    ext = np.tile(np.eye(3, 4), (2, 1, 1))
    k = np.tile(syn.pinhole(fx=1, fy=1, cx=2, cy=1), (2, 1, 1))
    return syn.make_rec(depth, conf=conf, extrinsics=ext, intrinsics=k, images=images, sky=sky)


def test_filters_give_exact_counts():
    rec = _crafted()
    world = g.unproject_all(rec)
    assert int(world.valid.sum()) == 16
    base = dict(conf_percentile=0.0, conf_floor=0.0, filter_sky=False, max_points=None)

    def count(**kw):
        return len(g.apply_filters(world, g.FilterParams(**{**base, **kw})))

    assert count() == 16
    assert count(filter_black_bg=True) == 14
    assert count(filter_white_bg=True) == 15
    assert count(filter_sky=True) == 13
    assert count(views=(0,)) == 6
    assert count(views=(1,)) == 10
    assert count(views=()) == 0
    assert count(filter_black_bg=True, filter_white_bg=True, filter_sky=True) == 11  # (1,1,4) is black and sky
    # conf >= 5.0 (floor 5 beats the 0th percentile) keeps: view 0 -> 5, 6 (4 invalid dropped), view 1 -> 5.5 .. 10.5
    assert count(conf_floor=5.0) == 2 + 6


def test_conf_threshold_follows_da3_rule_over_non_sky_pixels():
    rec = _crafted()
    world = g.unproject_all(rec)
    non_sky = rec.conf[~rec.sky]
    for pct in (0.0, 10.0, 40.0, 75.0, 100.0):
        expected = min(max(1.05, np.percentile(non_sky, pct)), np.percentile(non_sky, 90))
        got = g.conf_threshold(world, g.FilterParams(conf_percentile=pct))
        assert got == pytest.approx(expected, rel=1e-12, abs=1e-12)
    thr = g.conf_threshold(world, g.FilterParams(conf_percentile=40.0))
    cloud = g.apply_filters(world, g.FilterParams(conf_percentile=40.0, filter_sky=False, max_points=None))
    assert cloud.conf_threshold == thr
    expected_count = int((world.valid & (world.conf >= thr)).sum())
    assert len(cloud) == expected_count


def test_conf_population_is_all_pixels_without_enough_non_sky():
    rec = _crafted()
    sky = np.ones_like(rec.sky)
    sky[0, 0, :5] = False  # only 5 non-sky pixels (<= 10): DA3 then uses every pixel
    rec2 = syn.make_rec(
        rec.depth, conf=rec.conf, extrinsics=rec.extrinsics, intrinsics=rec.intrinsics, images=rec.images, sky=sky
    )
    world = g.unproject_all(rec2)
    assert world.conf_population.size == rec.conf.size


def test_percentile_sorted_matches_numpy():
    vals = np.sort(np.random.default_rng(0).random(1001) * 10)
    for q in (0, 0.5, 10, 33.3, 50, 90, 99.9, 100):
        assert g.percentile_sorted(vals, q) == pytest.approx(np.percentile(vals, q), rel=1e-12)


def test_filters_do_not_mutate_inputs():
    rec = _crafted()
    before = _copy_arrays(rec)
    world = g.unproject_all(rec)
    world_before = {k: getattr(world, k).copy() for k in ("points", "colors", "valid", "conf", "sky", "black", "white")}
    params = g.FilterParams(
        conf_percentile=50, filter_black_bg=True, filter_white_bg=True, filter_sky=True, views=(1,), max_points=3
    )
    g.apply_filters(world, params)
    _assert_unchanged(rec, before)
    for k, v in world_before.items():
        assert np.array_equal(getattr(world, k), v, equal_nan=True), k


def test_bad_views_are_refused_with_the_field_name():
    world = g.unproject_all(_crafted())
    with pytest.raises(ValueError, match="FilterParams.views"):
        g.apply_filters(world, g.FilterParams(views=(0, 5)))
    with pytest.raises(ValueError, match="FilterParams.conf_percentile"):
        g.FilterParams(conf_percentile=101)
    with pytest.raises(ValueError, match="FilterParams.max_points"):
        g.FilterParams(max_points=0)


# ---------------------------------------------------------------- cap and determinism


def test_cap_is_exact_deterministic_and_seeded():
    rec = syn.box_scene()
    world = g.unproject_all(rec)
    p = dict(conf_percentile=0.0, conf_floor=0.0, max_points=1000)
    a = g.apply_filters(world, g.FilterParams(**p, seed=1))
    b = g.apply_filters(world, g.FilterParams(**p, seed=1))
    c = g.apply_filters(world, g.FilterParams(**p, seed=2))
    assert len(a) == 1000 and a.n_candidates == world.n_pixels
    assert np.array_equal(a.points, b.points) and np.array_equal(a.colors, b.colors)
    assert not np.array_equal(a.points, c.points)
    # pixel order is kept: view-major, then row-major
    flat = a.view_index.astype(np.int64) * syn.H * syn.W + a.pixel_index
    assert (np.diff(flat) > 0).all()
    # a fresh unprojection (new cache) gives the same selection
    again = g.apply_filters(g.unproject_all(rec), g.FilterParams(**p, seed=1))
    assert np.array_equal(a.points, again.points)


def test_cap_is_stable_when_a_filter_removes_unselected_points():
    keep = np.ones(5000, dtype=bool)
    chosen = g.cap_indices(keep, 100, seed=3)
    keep2 = keep.copy()
    unchosen = np.setdiff1d(np.arange(5000), chosen)
    keep2[unchosen[::2]] = False
    assert np.array_equal(g.cap_indices(keep2, 100, seed=3), chosen)


def test_no_cap_when_under_the_limit():
    keep = np.zeros(50, dtype=bool)
    keep[[3, 7, 9]] = True
    assert g.cap_indices(keep, 10).tolist() == [3, 7, 9]
    assert g.cap_indices(keep, None).tolist() == [3, 7, 9]
    assert g.cap_indices(keep, 2, seed=0).shape == (2,)


def test_point_cloud_fields_match_pixels():
    rec = syn.box_scene()
    world = g.unproject_all(rec)
    cloud = g.apply_filters(world, g.FilterParams(conf_percentile=0, max_points=500, seed=5))
    v, u = np.divmod(cloud.pixel_index, syn.W)
    np.testing.assert_array_equal(cloud.colors, rec.images[cloud.view_index, v, u])
    assert cloud.points.dtype == np.float32 and cloud.colors.dtype == np.uint8
    assert cloud.unit == "relative units"


# ---------------------------------------------------------------- measuring and ranges


def test_measure_gives_exact_distance_and_unit():
    rec = syn.box_scene(is_metric=True)
    cams = g.resolve_cameras(rec)
    # camera 0 is the world frame; pixels (32, 24) and (42, 24) hit the back wall z = 5 at x = 0 and x = 1
    m = g.measure(rec, cams, 0, (32, 24), (42, 24))
    assert m.distance == pytest.approx(1.0, abs=1e-5)
    assert m.depths == pytest.approx((5.0, 5.0))
    np.testing.assert_allclose(m.points, [[0, 0, 5], [1, 0, 5]], atol=1e-5)
    assert m.unit == "m" and not m.assumed_cameras
    assert "m" in m.describe()
    rel = g.measure(syn.box_scene(), cams, 0, (32, 24), (42, 24))
    assert rel.unit == "relative units"


def test_measure_in_another_view_uses_its_pose():
    rec = syn.box_scene()
    cams = g.resolve_cameras(rec)
    m = g.measure(rec, cams, 2, syn.SHARED_PIXEL_VIEW2, (10, 10))
    np.testing.assert_allclose(m.points[0], [-1.2, 0.6, 5.0], atol=1e-4)
    assert syn.on_box_surface(m.points).all()


def test_measure_on_mono_preset_flags_assumed_cameras():
    rec = syn.mono_box_scene()
    m = g.measure(rec, g.resolve_cameras(rec, 60.0), 0, (32, 24), (0, 0))
    assert m.assumed_cameras and "assumed" in m.describe()
    assert syn.on_box_surface(m.points).all()


def test_measure_errors_name_the_problem():
    rec = _crafted()
    cams = g.resolve_cameras(rec)
    with pytest.raises(g.MeasureError, match=r"outside view 0 \(5 x 2\)"):
        g.measure(rec, cams, 0, (5, 0), (0, 0))
    with pytest.raises(g.MeasureError, match="not a valid depth"):
        g.measure(rec, cams, 0, (0, 0), (1, 1))  # nan depth
    with pytest.raises(g.MeasureError, match="not a valid depth"):
        g.measure(rec, cams, 0, (0, 0), (3, 1))  # zero depth
    with pytest.raises(g.MeasureError, match="view 4"):
        g.measure(rec, cams, 4, (0, 0), (1, 0))


def test_depth_range_readout():
    depth = np.arange(1, 101, dtype=np.float32).reshape(10, 10)
    depth[0, 0] = np.nan
    depth[0, 1] = -3
    r = g.depth_range(depth, "m")
    assert (r.min, r.max, r.n_valid, r.n_total, r.unit) == (3.0, 100.0, 98, 100, "m")
    valid = depth[np.isfinite(depth) & (depth > 0)]
    assert r.p_low == pytest.approx(np.percentile(valid, 2)) and r.p_high == pytest.approx(np.percentile(valid, 98))
    empty = g.depth_range(np.zeros((2, 2)), "relative units")
    assert empty.n_valid == 0 and math.isnan(empty.min)
