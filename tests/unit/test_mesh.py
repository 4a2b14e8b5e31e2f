"""Meshes (`da3_core.scene.mesh`): per-view grids cut at depth jumps, TSDF fusion of a sphere
and of a room lands on the true surfaces, exports read back."""

from __future__ import annotations

import io

import numpy as np
import pytest
import trimesh

from benchmarks.bench_evaluate import CUBE, ROOM_HALF, _look_at, render_scene
from da3_core.scene import mesh as ME

K = np.array([[90.0, 0.0, 48.0], [0.0, 90.0, 36.0], [0.0, 0.0, 1.0]])
H, W = 72, 96


def face_normals(m: ME.Mesh) -> np.ndarray:
    v = m.vertices.astype(np.float64)
    a, b, c = v[m.faces[:, 0]], v[m.faces[:, 1]], v[m.faces[:, 2]]
    n = np.cross(b - a, c - a)
    return n / np.linalg.norm(n, axis=1, keepdims=True)


def test_a_frontal_plane_gives_the_full_grid_facing_the_camera() -> None:
    depth = np.full((H, W), 2.0)
    image = np.zeros((H, W, 3), dtype=np.uint8)
    image[..., 0] = 200
    m = ME.view_mesh(depth, K, None, image)
    assert m.n_vertices == H * W and m.n_faces == 2 * (H - 1) * (W - 1)
    np.testing.assert_allclose(m.vertices[:, 2], 2.0)
    np.testing.assert_allclose(face_normals(m), np.tile([0, 0, -1.0], (m.n_faces, 1)), atol=1e-6)
    assert m.colors is not None and (m.colors[:, 0] == 200).all()
    half = ME.view_mesh(depth, K, stride=2)
    assert half.n_faces == 2 * (H // 2 - 1) * (W // 2 - 1)
    assert half.vertices[:, 0].max() == pytest.approx((W - 2 - K[0, 2]) / K[0, 0] * 2.0)


def test_triangles_across_depth_jumps_and_holes_are_cut() -> None:
    depth = np.full((H, W), 2.0)
    depth[20:50, 30:70] = 1.0
    depth[5:10, 5:10] = np.nan
    m = ME.view_mesh(depth, K)
    z = m.vertices[m.faces][:, :, 2]
    assert (z.max(axis=1) <= z.min(axis=1) * 1.05 + 1e-6).all()
    # Each surface stays whole: front square (29 x 39 squares) + wall minus the square's
    # footprint, the hole and the squares touching them.
    front = int(np.all(z < 1.5, axis=1).sum())
    assert front == 2 * 29 * 39
    assert m.n_vertices == H * W - 25  # every valid pixel is on some triangle
    # In a world frame: extrinsics move the vertices, winding still faces the camera.
    ext = _look_at(np.array([1.0, 0.0, -1.0]), np.array([0.0, 0.2, 1.0]))
    mw = ME.view_mesh(depth, K, ext)
    centre = -ext[:, :3].T @ ext[:, 3]
    to_cam = centre - mw.vertices[mw.faces].mean(axis=1)
    assert (np.sum(face_normals(mw) * to_cam, axis=1) > 0).all()


def sphere_views(n: int, centre: np.ndarray, radius: float, k: np.ndarray, h: int, w: int) -> dict[str, np.ndarray]:
    depth = np.empty((n, h, w), dtype=np.float32)
    exts = np.empty((n, 3, 4))
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    rays = np.stack([(u - k[0, 2]) / k[0, 0], (v - k[1, 2]) / k[1, 1], np.ones_like(u)], axis=-1).reshape(-1, 3)
    for i in range(n):
        a = 2 * np.pi * i / n
        eye = centre + np.array([1.6 * np.sin(a), 0.5 * np.cos(2 * a), -1.6 * np.cos(a)])
        ext = _look_at(eye, centre)
        exts[i] = ext
        dirs = rays @ ext[:, :3]
        oc = eye - centre
        b = dirs @ oc
        aa = np.sum(dirs * dirs, axis=1)
        disc = b * b - aa * (oc @ oc - radius**2)
        t = np.where(disc > 0, (-b - np.sqrt(np.maximum(disc, 0))) / aa, np.inf)
        depth[i] = t.reshape(h, w)
    return {"depth": depth, "extrinsics": exts, "intrinsics": np.repeat(k[None], n, axis=0)}


def test_tsdf_of_a_sphere_lies_on_the_sphere_and_faces_outwards() -> None:
    """At about 500 pixels across (as DA3's process_res) a pixel is about one voxel wide."""
    centre, radius = np.array([0.2, -0.1, 0.3]), 0.5
    k = np.array([[300.0, 0.0, 160.0], [0.0, 300.0, 120.0], [0.0, 0.0, 1.0]])
    s = sphere_views(6, centre, radius, k, 240, 320)
    fused = ME.fuse_tsdf(s["depth"], s["intrinsics"], s["extrinsics"])
    p = fused.params
    finite = s["depth"][np.isfinite(s["depth"])]
    assert p.scene_scale == pytest.approx(float(np.median(finite)))
    assert p.voxel_size == pytest.approx(p.scene_scale / ME.VOXELS_PER_SCALE)  # small scene: not raised
    assert p.trunc == pytest.approx(5 * p.voxel_size)
    assert "voxel" in p.describe() and "raised" not in p.describe()
    m = fused.mesh
    assert m.n_faces > 1000 and m.colors is None
    dist = np.linalg.norm(m.vertices - centre, axis=1) - radius
    assert np.median(np.abs(dist)) < 0.25 * p.voxel_size
    assert np.percentile(np.abs(dist), 99) < 1.5 * p.voxel_size
    outward = (m.vertices[m.faces].mean(axis=1) - centre).astype(np.float64)
    outward /= np.linalg.norm(outward, axis=1, keepdims=True)
    assert np.median(np.sum(face_normals(m) * outward, axis=1)) > 0.95


def test_tsdf_of_a_room_with_a_cube_and_a_capped_grid() -> None:
    scene = render_scene(8, h=90, w=120)
    fused = ME.fuse_tsdf(
        scene["depth"], scene["intrinsics"], scene["extrinsics"], scene["images"], params=None, chunk_voxels=50_000
    )
    fused_small = ME.fuse_tsdf(
        scene["depth"],
        scene["intrinsics"],
        scene["extrinsics"],
        params=ME.tsdf_params(scene["depth"], scene["intrinsics"], scene["extrinsics"], max_voxels=200_000),
    )
    for f in (fused, fused_small):
        v = f.mesh.vertices
        # Distance to the nearest true surface: walls, or the cube's top face.
        d_wall = np.min(np.abs(np.abs(v) - ROOM_HALF), axis=1)
        c, hs = CUBE
        on_cube_top = np.all(np.abs(v[:, [0, 2]] - c[[0, 2]]) < hs - f.params.voxel_size, axis=1)
        d = np.where(on_cube_top, np.minimum(d_wall, np.abs(v[:, 1] - (c[1] - hs))), d_wall)
        near_cube = np.all(np.abs(v[:, [0, 2]] - c[[0, 2]]) < hs + 0.1, axis=1)
        floor = (np.abs(v[:, 1] - ROOM_HALF[1]) < 0.05) & ~near_cube
        assert floor.sum() > 100
        # Pixels here (120 across) are about as wide as the voxels: within half a voxel.
        assert np.median(d[floor]) < 0.5 * f.params.voxel_size
        assert np.median(d[on_cube_top]) < 0.5 * f.params.voxel_size
    assert fused_small.params.n_voxels <= 200_000
    assert fused_small.params.voxel_size > fused_small.params.voxel_from_scale
    assert "raised" in fused_small.params.describe()
    assert fused.mesh.colors is not None and fused.mesh.colors.shape == (fused.mesh.n_vertices, 3)


@pytest.mark.parametrize("fmt", ["glb", "ply", "obj"])
def test_exports_read_back(fmt: str) -> None:
    depth = np.full((8, 10), 2.0)
    image = np.full((8, 10, 3), 50, dtype=np.uint8)
    m = ME.view_mesh(depth, K, None, image)
    data = ME.mesh_bytes(m, fmt)  # type: ignore[arg-type] - fmt loops over the Literal values as str
    loaded = trimesh.load(io.BytesIO(data), file_type=fmt, process=False, force="mesh")
    assert len(loaded.faces) == m.n_faces and len(loaded.vertices) == m.n_vertices
    z = np.asarray(loaded.vertices)[:, 2]
    np.testing.assert_allclose(z, -2.0 if fmt == "glb" else 2.0, atol=1e-6)  # GLB: (x, -y, -z)


def test_bad_inputs() -> None:
    with pytest.raises(ValueError):
        ME.view_mesh(np.ones((2, 3, 4)), K)
    with pytest.raises(ValueError):
        ME.fuse_tsdf(np.zeros((2, 4, 4)), np.repeat(K[None], 2, 0), np.zeros((2, 3, 4)))
    with pytest.raises(ValueError):
        ME.mesh_bytes(ME.view_mesh(np.ones((4, 4)), K), "stl")  # type: ignore[arg-type] - an unknown format on purpose
