"""`da3_core.scene.voxel`: one point per occupied voxel, and a voxel size for a point budget."""

from __future__ import annotations

import numpy as np
import pytest

from da3_core.scene.voxel import suggest_voxel, voxel_downsample


def test_hand_made_cloud_gives_exact_means_in_key_order():
    # Voxel 1.0, grid anchored at the origin: floor(p) picks the voxel.
    points = np.array(
        [
            [0.2, 0.2, 0.2],  # voxel (0, 0, 0)
            [1.5, 0.5, 0.5],  # voxel (1, 0, 0)
            [0.6, 0.8, 0.4],  # voxel (0, 0, 0)
            [-0.5, 0.5, 0.5],  # voxel (-1, 0, 0)
            [0.5, 0.5, 1.5],  # voxel (0, 0, 1)
            [1.9, 0.1, 0.9],  # voxel (1, 0, 0)
            [1.0, 0.0, 0.0],  # voxel (1, 0, 0): a point on a face goes to the upper voxel
        ],
        dtype=np.float32,
    )
    colors = np.array(
        [[10, 20, 30], [0, 0, 0], [20, 40, 61], [255, 255, 255], [1, 2, 3], [3, 3, 3], [0, 0, 2]], np.uint8
    )
    out_p, out_c = voxel_downsample(points, colors, 1.0)
    assert out_p.dtype == np.float32 and out_c.dtype == np.uint8
    np.testing.assert_allclose(
        out_p,
        [
            [-0.5, 0.5, 0.5],  # (-1, 0, 0)
            [0.4, 0.5, 0.3],  # (0, 0, 0)
            [0.5, 0.5, 1.5],  # (0, 0, 1)
            [(1.5 + 1.9 + 1.0) / 3, 0.2, 1.4 / 3],  # (1, 0, 0)
        ],
        rtol=0,
        atol=1e-6,
    )
    # Rounded means: (10+20)/2=15, (20+40)/2=30, (30+61)/2=45.5 -> 46 (half to even), (0+3+0)/3=1, (0+3+2)/3=1.67 -> 2.
    np.testing.assert_array_equal(out_c, [[255, 255, 255], [15, 30, 46], [1, 2, 3], [1, 1, 2]])
    # Same input in another order: same output in the same order.
    perm = np.random.default_rng(0).permutation(len(points))
    again_p, again_c = voxel_downsample(points[perm], colors[perm], 1.0)
    np.testing.assert_allclose(again_p, out_p, atol=1e-6)
    np.testing.assert_array_equal(again_c, out_c)
    # Big voxels merge everything; tiny ones keep every point.
    all_p, all_c = voxel_downsample(points + 10, colors, 100.0)
    np.testing.assert_allclose(all_p, [points.astype(np.float64).mean(axis=0) + 10], atol=1e-5)
    assert len(voxel_downsample(points, colors, 1e-4)[0]) == len(points)


def test_bad_inputs_and_empty_cloud():
    pts = np.zeros((3, 3))
    cols = np.zeros((3, 3), np.uint8)
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="voxel must be > 0"):
            voxel_downsample(pts, cols, bad)
    with pytest.raises(ValueError, match="colors"):
        voxel_downsample(pts, cols[:2], 1.0)
    with pytest.raises(ValueError, match="finite"):
        voxel_downsample(np.array([[np.nan, 0, 0]]), cols[:1], 1.0)
    p, c = voxel_downsample(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8), 1.0)
    assert p.shape == (0, 3) and p.dtype == np.float32 and c.shape == (0, 3)
    p, _ = voxel_downsample(np.array([[1, 2, 3]]), cols[:1], 1.0)
    assert p.dtype == np.float64  # integer input gives float means
    with pytest.raises(ValueError):
        suggest_voxel(pts, 0)
    assert suggest_voxel(pts, 10) == 1.0  # all points coincide


def depth_like_cloud(n: int, seed: int = 0) -> np.ndarray:
    """Pixels of a camera over a receding plane: density falls with distance, as in DA3 clouds."""
    rng = np.random.default_rng(seed)
    u, v = rng.uniform(-1, 1, n), rng.uniform(-1, 1, n)
    d = 1.0 + 10.0 * (v + 1.0)
    return np.stack([u * d, 0.3 * v * d, d], axis=1).astype(np.float32)


@pytest.mark.parametrize("n, target", [(20_000, 2_000), (20_000, 5_000), (300_000, 20_000), (300_000, 75_000)])
def test_suggested_voxel_lands_near_the_target(n, target):
    """Exact search for small clouds, a 100,000-point subsample for the larger ones."""
    pts = depth_like_cloud(n)
    size = suggest_voxel(pts, target)
    kept = len(voxel_downsample(pts, np.zeros_like(pts, dtype=np.uint8), size)[0])
    assert target / 2 <= kept <= target * 2, (kept, target, size)
    assert suggest_voxel(pts, target) == size  # deterministic


def test_far_coordinates_and_a_target_no_voxel_size_reaches():
    cols = np.zeros((2, 3), np.uint8)
    with pytest.raises(ValueError, match="points must be"):
        voxel_downsample(np.zeros((2, 2)), cols, 1.0)
    with pytest.raises(ValueError, match="too small"):
        voxel_downsample(np.array([[0.0, 0, 0], [1e6, 0, 0]]), cols, 1e-12)
    # Keys too many to pack into one int64 (1e8 voxels per axis): the row-wise path, same result.
    far = np.array([[1e6, 1e6, 1e6], [0.0, 0.0, 0.0]])
    p, _ = voxel_downsample(far, cols, 1e-2)
    np.testing.assert_array_equal(p, far[::-1])
    with pytest.raises(ValueError, match="no points"):
        suggest_voxel(np.zeros((0, 3)), 1)
    with pytest.raises(ValueError, match="finite"):
        suggest_voxel(np.array([[0.0, 0, 0], [np.inf, 0, 0]]), 1)
    # Two pairs of equal points: 1 or 2 voxels, never 3; the search still ends, at 2.
    pairs = np.array([[0.0, 0, 0], [0.0, 0, 0], [5.0, 0, 0], [5.0, 0, 0]])
    size = suggest_voxel(pairs, 3)
    assert len(voxel_downsample(pairs, np.zeros((4, 3), np.uint8), size)[0]) == 2
