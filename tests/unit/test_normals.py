"""Normals from depth (`da3_core.scene.normals`): planes exact, a sphere right, edges clean, PNG round trip."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from da3_core.scene import normals as N

K = np.array([[180.0, 0.0, 100.0], [0.0, 170.0, 75.0], [0.0, 0.0, 1.0]])
H, W = 150, 200


def rays(k: np.ndarray = K, h: int = H, w: int = W) -> np.ndarray:
    """(h, w, 3) K^-1 [u, v, 1] at integer pixels."""
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    return np.stack([(u - k[0, 2]) / k[0, 0], (v - k[1, 2]) / k[1, 1], np.ones_like(u)], axis=-1)


def plane_depth(n: np.ndarray, c: float) -> np.ndarray:
    """z-depth of the plane n . X = c (c < 0 with n facing the camera)."""
    return c / (rays() @ n)


def angle_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.degrees(np.arccos(np.clip(np.sum(a * b, axis=-1), -1, 1)))


@pytest.mark.parametrize("n", [(0.0, 0.0, -1.0), (0.3, -0.2, -0.93), (-0.6, 0.5, -0.62)])
def test_a_plane_gets_its_exact_normal_everywhere(n: tuple[float, float, float]) -> None:
    normal = np.array(n) / np.linalg.norm(n)
    normals, valid = N.normals_from_depth(plane_depth(normal, -2.0), K)
    assert valid.all()
    assert normals.dtype == np.float32 and normals.shape == (H, W, 3)
    assert angle_deg(normals, normal).max() < 0.1  # float32 depth differences


def test_a_sphere_gets_the_radial_normals() -> None:
    """The one-sided difference is a secant half a pixel off: errors shrink with the pixel
    size (here the sphere is about 160 pixels across)."""
    centre, radius = np.array([0.1, -0.05, 3.0]), 0.9
    k = np.array([[300.0, 0.0, 120.0], [0.0, 300.0, 100.0], [0.0, 0.0, 1.0]])
    r = rays(k, 200, 240)
    # Smallest t with |t r - C| = R (t is the z-depth since r_z = 1).
    a = np.sum(r * r, axis=-1)
    b = -2 * r @ centre
    disc = b * b - 4 * a * (centre @ centre - radius**2)
    depth = np.where(disc > 0, (-b - np.sqrt(np.maximum(disc, 0))) / (2 * a), np.inf)
    normals, valid = N.normals_from_depth(depth, k)
    hit = np.isfinite(depth)
    truth = np.where(hit[..., None], (np.where(hit, depth, 0)[..., None] * r - centre) / radius, 0)
    inner = hit & (np.abs(truth[..., 2]) > 0.5)  # away from the grazing rim
    assert valid[inner].all()
    err = angle_deg(normals[inner], truth[inner])
    # One pixel turns the normal by about 1 / 90 rad = 0.64 degrees here.
    assert np.median(err) < 0.5 and np.percentile(err, 99) < 1.2 and err.max() < 2.0
    assert not valid[~np.isfinite(depth)].any()
    facing = np.sum(normals * (np.where(hit, depth, 0)[..., None] * r), axis=-1)
    assert (facing[valid] < 0).all()


def test_depth_edges_keep_each_surface_normal_and_drop_slivers() -> None:
    """A frontal square 1 m in front of a frontal wall at 2 m, a hole, and a one-pixel-wide
    post: the edge pixels keep (0, 0, -1) (central differences would tilt them), the post is
    invalid, the hole's neighbours are fine."""
    depth = np.full((H, W), 2.0)
    depth[40:90, 50:120] = 1.0
    depth[100:110, 20:30] = 0.0  # no depth
    depth[10:140, 160] = 1.5  # one pixel wide: no surface to take a slope from
    normals, valid = N.normals_from_depth(depth, K)
    assert not valid[10:140, 160].any()
    assert not valid[100:110, 20:30].any()
    assert valid[40:90, 50:120].all() and valid[39, 50:120].all() and valid[40:90, 49].all()
    assert valid[99, 20:30].all() and valid[110, 20:30].all()
    np.testing.assert_allclose(normals[valid], np.tile([0.0, 0.0, -1.0], (int(valid.sum()), 1)), atol=1e-6)
    # A threshold above the post's jump (25 %) keeps it.
    _, loose = N.normals_from_depth(depth, K, max_rel_jump=0.5)
    assert loose[10:140, 160].all()


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError):
        N.normals_from_depth(np.ones((2, 3, 4)), K)
    with pytest.raises(ValueError):
        N.normals_from_depth(np.ones((4, 4)), K, max_rel_jump=0.0)


def test_colours() -> None:
    n = np.zeros((2, 2, 3), dtype=np.float32)
    n[..., 2] = -1.0  # facing the camera
    n[0, 1] = [1.0, 0.0, 0.0]
    valid = np.array([[True, True], [True, False]])
    rgb = N.normals_to_rgb(n, valid)
    assert rgb.dtype == np.uint8
    assert rgb[0, 0].tolist() == [128, 128, 255]  # OpenGL look: towards the viewer is blue
    assert rgb[0, 1].tolist() == [255, 128, 128]
    assert rgb[1, 1].tolist() == [0, 0, 0]
    assert N.normals_to_rgb(n, axes="opencv")[0, 0].tolist() == [128, 128, 0]


def test_png16_round_trip_and_mapping() -> None:
    normal = np.array([0.3, -0.2, -0.93]) / np.linalg.norm([0.3, -0.2, -0.93])
    normals, valid = N.normals_from_depth(plane_depth(normal, -2.0), K)
    valid[:5] = False
    data = N.normals_png16_bytes(normals, valid)
    back, back_valid = N.read_normals_png16(data)
    np.testing.assert_array_equal(back_valid, valid)
    assert np.abs(back - np.where(valid[..., None], normals, 0)).max() <= 1 / 65535 + 1e-7
    # The stored values are (n + 1) / 2 * 65535, R G B = x y z: check one pixel's bytes by hand.
    with Image.open(io.BytesIO(data)) as im:
        assert im.size == (W, H) and "normal_mapping" in im.info
    expected = np.rint((normals[10, 10].astype(np.float64) + 1) / 2 * 65535)
    assert np.abs(expected / 65535 * 2 - 1 - back[10, 10]).max() < 1e-6
    with pytest.raises(ValueError):
        N.read_normals_png16(b"not a png")
