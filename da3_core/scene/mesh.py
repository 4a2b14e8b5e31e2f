"""Meshes from depth: one per view (grid triangles cut at depth jumps) and one fused by TSDF.

Library: scikit-image's ``measure.marching_cubes`` over a TSDF integrated here in numpy,
not Open3D: a ~15 MB wheel with small dependencies (open3d-cpu is ~105 MB and pulls heavy
ones), and our own integration lets memory be bounded (fixed voxel budget, blocks of voxels
near the surface only, chunked) on a small CPU server.

The fused mesh follows DA3's benchmark (``src/depth_anything_3/bench/utils.py``:
``create_tsdf_volume`` / ``fuse_depth_to_tsdf``, Open3D ``ScalableTSDFVolume``): projective
signed distance along the camera's z axis, truncated at ``trunc``, equal-weight running
average, zero level set by marching cubes. DA3 sets the voxel to 4/512 m and the truncation
to 0.04 m (5.12 voxels) on indoor scenes; here the voxel is the scene's median depth / 256
(the same 7.8 mm at a 2 m median depth) and the truncation 5 voxels, raised when the scene's
bounding box would need more than ``max_voxels`` voxels (`TSDFParams` says by how much).

Exports go through trimesh (GLB, PLY, OBJ bytes). GLB is y up: points are stored as
``(x, -y, -z)`` like every GLB of this app (``docs/CONVENTIONS.md``, ``export.GLB_FROM_WORLD``).

Conventions: OpenCV camera axes; extrinsics (N, 3, 4) world-to-camera; K in pixels of the
depth map; z-depth valid when finite and > 0; pixel (u, v) at the integer coordinate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

DEFAULT_MAX_REL_JUMP = 0.05
"""A grid triangle whose largest depth exceeds its smallest by more than 5 % is cut."""
VOXELS_PER_SCALE = 256
"""Voxel size = median valid depth / 256 (DA3's 4/512 m at a 2 m median depth)."""
TRUNC_VOXELS = 5.0
"""Truncation in voxels (DA3: 0.04 m / (4/512 m) = 5.12)."""
MAX_VOXELS = 24_000_000
"""Most voxels of the dense grid (5 bytes each here: float32 TSDF, bool observed); the voxel
grows when the scene's box needs more."""
BLOCK = 8
"""Voxel blocks (BLOCK^3) are integrated only where some depth point lies in them or in a
neighbouring block; BLOCK voxels must be >= the truncation."""
GLB_FROM_WORLD = np.diag([1.0, -1.0, -1.0])
"""As ``da3_core.scene.export.GLB_FROM_WORLD`` (a 180 degree turn about x): glTF is y up, z backward."""


@dataclass(frozen=True, eq=False)
class Mesh:
    """A triangle mesh in the world frame.

    Attributes:
        vertices: (V, 3) float32.
        faces: (F, 3) int32 vertex indices, counter-clockwise seen from the side the
            cameras saw (the normal points towards the cameras).
        colors: (V, 3) uint8 RGB, or None.
    """

    vertices: np.ndarray
    faces: np.ndarray
    colors: np.ndarray | None = None

    def __post_init__(self) -> None:
        v = np.asarray(self.vertices, dtype=np.float32).reshape(-1, 3)
        f = np.asarray(self.faces, dtype=np.int32).reshape(-1, 3)
        if f.size and (f.min() < 0 or f.max() >= len(v)):
            raise ValueError("faces index vertices that do not exist")
        object.__setattr__(self, "vertices", v)
        object.__setattr__(self, "faces", f)
        if self.colors is not None:
            c = np.asarray(self.colors, dtype=np.uint8).reshape(-1, 3)
            if len(c) != len(v):
                raise ValueError(f"colors must be ({len(v)}, 3), got {c.shape}")
            object.__setattr__(self, "colors", c)

    @property
    def n_vertices(self) -> int:
        return int(self.vertices.shape[0])

    @property
    def n_faces(self) -> int:
        return int(self.faces.shape[0])


# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------


def _cam_to_world(extrinsics: np.ndarray | None) -> np.ndarray:
    m = np.eye(4)
    if extrinsics is not None:
        m[:3, :] = np.asarray(extrinsics, dtype=np.float64)[:3, :4]
    return np.linalg.inv(m)  # general inverse, as da3_core.scene.geometry


def _valid(depth: np.ndarray) -> np.ndarray:
    return np.isfinite(depth) & (depth > 0)


# --------------------------------------------------------------------------------------
# Per-view mesh
# --------------------------------------------------------------------------------------


def view_mesh(
    depth: np.ndarray,
    intrinsics: np.ndarray,
    extrinsics: np.ndarray | None = None,
    image: np.ndarray | None = None,
    *,
    mask: np.ndarray | None = None,
    max_rel_jump: float = DEFAULT_MAX_REL_JUMP,
    stride: int = 1,
) -> Mesh:
    """The mesh of one depth map: two triangles per 2x2 pixel square, cut at discontinuities.

    Every ``stride``-th pixel (valid depth, and ``mask``) is a vertex at its unprojected
    point. Square (u, v)-(u+s, v+s) gives triangles (u,v)(u,v+s)(u+s,v) and
    (u+s,v)(u,v+s)(u+s,v+s), each kept only when its three vertices exist and its largest
    depth is at most ``1 + max_rel_jump`` times its smallest (a jump between an object and
    the background is not a surface). Unused vertices are dropped.

    Args:
        depth: (H, W) z-depth.
        intrinsics: (3, 3) K in pixels of ``depth``.
        extrinsics: (3, 4) world-to-camera, or None for the camera frame.
        image: (H, W, 3) uint8 colours, or None.
        mask: (H, W) bool pixels to use, or None.
        max_rel_jump: Relative depth jump that cuts a triangle (> 0).
        stride: Pixel step (>= 1).
    """
    depth = np.asarray(depth)
    if depth.ndim != 2:
        raise ValueError(f"depth must be (H, W), got {depth.shape}")
    if int(stride) < 1 or not (math.isfinite(max_rel_jump) and max_rel_jump > 0):
        raise ValueError(f"stride must be >= 1 and max_rel_jump > 0, got {stride} and {max_rel_jump}")
    s = int(stride)
    d = depth[::s, ::s].astype(np.float32)
    ok = _valid(d)
    if mask is not None:
        ok &= np.asarray(mask, dtype=bool)[::s, ::s]
    h, w = d.shape
    idx = np.full((h, w), -1, dtype=np.int64)
    idx[ok] = np.arange(int(ok.sum()))
    tris = []
    dpos = np.where(ok, d, np.nan)
    for a, b, c in (
        ((slice(None, -1), slice(None, -1)), (slice(1, None), slice(None, -1)), (slice(None, -1), slice(1, None))),
        ((slice(None, -1), slice(1, None)), (slice(1, None), slice(None, -1)), (slice(1, None), slice(1, None))),
    ):
        ia, ib, ic = idx[a], idx[b], idx[c]
        da, db, dc = dpos[a], dpos[b], dpos[c]
        with np.errstate(invalid="ignore"):
            hi = np.fmax(np.fmax(da, db), dc)
            lo = np.fmin(np.fmin(da, db), dc)
            keep = (ia >= 0) & (ib >= 0) & (ic >= 0) & (hi <= lo * np.float32(1 + max_rel_jump))
        tris.append(np.stack([ia[keep], ib[keep], ic[keep]], axis=1))
    faces = np.concatenate(tris)
    v, u = np.nonzero(ok)
    k_inv = np.linalg.inv(np.asarray(intrinsics, dtype=np.float64))
    pix = np.stack([u * s, v * s, np.ones_like(u)], axis=1).astype(np.float64)
    cam = (pix @ k_inv.T) * d[v, u].astype(np.float64)[:, None]
    c2w = _cam_to_world(extrinsics)
    verts = cam @ c2w[:3, :3].T + c2w[:3, 3]
    colors = None if image is None else np.asarray(image)[::s, ::s][v, u]
    used = np.zeros(len(verts), dtype=bool)
    used[faces.reshape(-1)] = True
    remap = np.cumsum(used) - 1
    return Mesh(verts[used], remap[faces], None if colors is None else colors[used])


# --------------------------------------------------------------------------------------
# TSDF fusion
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TSDFParams:
    """The TSDF grid, derived from the scene (for display).

    Attributes:
        voxel_size: Edge of a voxel, in the run's units.
        trunc: Truncation distance of the signed distance, in the run's units.
        origin: (3,) world position of voxel (0, 0, 0)'s centre.
        dims: Voxels along x, y, z (multiples of `BLOCK`).
        scene_scale: Median valid depth over all views (the scale the voxel comes from).
        voxel_from_scale: ``scene_scale / VOXELS_PER_SCALE``; ``voxel_size`` is larger when the
            box needed more than ``max_voxels`` at that size.
    """

    voxel_size: float
    trunc: float
    origin: tuple[float, float, float]
    dims: tuple[int, int, int]
    scene_scale: float
    voxel_from_scale: float

    @property
    def n_voxels(self) -> int:
        return int(np.prod(self.dims))

    def describe(self) -> str:
        raised = (
            ""
            if self.voxel_size <= self.voxel_from_scale * 1.0001
            else (f" (raised from {self.voxel_from_scale:.4g} to fit {self.n_voxels:,} voxels)")
        )
        return (
            f"voxel {self.voxel_size:.4g}{raised}, truncation {self.trunc:.4g}, grid "
            f"{self.dims[0]} x {self.dims[1]} x {self.dims[2]}, from median depth {self.scene_scale:.4g}"
        )


@dataclass(frozen=True)
class FusedMesh:
    """`fuse_tsdf`'s result: the mesh, its grid, and how much of the grid was integrated."""

    mesh: Mesh
    params: TSDFParams
    active_voxels: int


def _check_views(depth: np.ndarray, intrinsics: np.ndarray, extrinsics: np.ndarray) -> None:
    if depth.ndim != 3:
        raise ValueError(f"depth must be (N, H, W), got {depth.shape}")
    n = depth.shape[0]
    if np.shape(intrinsics) != (n, 3, 3):
        raise ValueError(f"intrinsics must be ({n}, 3, 3), got {np.shape(intrinsics)}")
    if np.shape(extrinsics)[0] != n or np.shape(extrinsics)[1:] not in ((3, 4), (4, 4)):
        raise ValueError(f"extrinsics must be ({n}, 3, 4) world-to-camera, got {np.shape(extrinsics)}")


def _view_points(depth: np.ndarray, k: np.ndarray, ext: np.ndarray, stride: int) -> np.ndarray:
    """float32 world points of the valid pixels of one view, every ``stride``-th pixel."""
    d = depth[::stride, ::stride]
    v, u = np.nonzero(_valid(d))
    k_inv = np.linalg.inv(np.asarray(k, dtype=np.float64)).astype(np.float32)
    pix = np.stack([u * stride, v * stride, np.ones_like(u)], axis=1).astype(np.float32)
    cam = (pix @ k_inv.T) * d[v, u].astype(np.float32)[:, None]
    c2w = _cam_to_world(ext).astype(np.float32)
    return cam @ c2w[:3, :3].T + c2w[:3, 3]


def tsdf_params(
    depth: np.ndarray,
    intrinsics: np.ndarray,
    extrinsics: np.ndarray,
    *,
    voxel_size: float | None = None,
    trunc_voxels: float = TRUNC_VOXELS,
    max_voxels: int = MAX_VOXELS,
    box_percentile: float = 0.5,
) -> TSDFParams:
    """Voxel size, truncation and grid box from the scene.

    Voxel ``= median valid depth / VOXELS_PER_SCALE`` (or ``voxel_size``), but never finer than
    one pixel's footprint at the median depth (``median / fx``): a finer grid than the pixels
    only makes a holey, heavier mesh on small images; truncation
    ``trunc_voxels`` voxels; the box holds the ``box_percentile``..``100 - box_percentile``
    percentiles of the points per axis (every 4th pixel), padded by the truncation, so a few
    far points (sky) do not blow it up; then the voxel grows until the box fits
    ``max_voxels``.
    """
    depth = np.asarray(depth)
    _check_views(depth, intrinsics, extrinsics)
    valid = _valid(depth)
    if not valid.any():
        raise ValueError("no valid depth in any view: nothing to fuse")
    scale = float(np.median(depth[valid]))
    if voxel_size is not None:
        base = float(voxel_size)
    else:
        fx = float(np.median(np.asarray(intrinsics)[:, 0, 0]))
        base = scale / VOXELS_PER_SCALE
        if math.isfinite(fx) and fx > 0:
            base = max(base, scale / fx)
    if not (math.isfinite(base) and base > 0):
        raise ValueError(f"voxel_size must be finite and > 0, got {base}")
    pts = np.concatenate([_view_points(depth[i], intrinsics[i], extrinsics[i], 4) for i in range(depth.shape[0])])
    if len(pts) == 0:
        pts = np.concatenate([_view_points(depth[i], intrinsics[i], extrinsics[i], 1) for i in range(depth.shape[0])])
    lo = np.percentile(pts, box_percentile, axis=0).astype(np.float64)
    hi = np.percentile(pts, 100 - box_percentile, axis=0).astype(np.float64)
    voxel = base
    for _ in range(60):
        pad = trunc_voxels * voxel + voxel
        ext = hi - lo + 2 * pad
        dims = np.maximum(BLOCK, np.ceil(ext / voxel / BLOCK).astype(np.int64) * BLOCK)
        if int(np.prod(dims)) <= max_voxels:
            break
        voxel *= max(1.01, (float(np.prod(dims)) / max_voxels) ** (1 / 3))
    origin = lo - pad
    return TSDFParams(
        voxel_size=float(voxel),
        trunc=float(trunc_voxels * voxel),
        origin=(float(origin[0]), float(origin[1]), float(origin[2])),
        dims=(int(dims[0]), int(dims[1]), int(dims[2])),
        scene_scale=scale,
        voxel_from_scale=float(base),
    )


def _active_blocks(depth: np.ndarray, intrinsics: np.ndarray, extrinsics: np.ndarray, p: TSDFParams) -> np.ndarray:
    """(M, 3) int64 block coordinates holding a depth point, dilated by one block."""
    from scipy.ndimage import binary_dilation

    nb = np.array(p.dims) // BLOCK
    occ = np.zeros(tuple(nb), dtype=bool)
    origin = np.asarray(p.origin, dtype=np.float32)
    bsize = np.float32(p.voxel_size * BLOCK)
    for i in range(depth.shape[0]):
        pts = _view_points(depth[i], intrinsics[i], extrinsics[i], 1)
        # Voxel centre j covers [origin + (j - 0.5) voxel, origin + (j + 0.5) voxel).
        b = np.floor((pts - origin + np.float32(0.5 * p.voxel_size)) / bsize).astype(np.int64)
        inside = np.all((b >= 0) & (b < nb), axis=1)
        b = b[inside]
        occ[b[:, 0], b[:, 1], b[:, 2]] = True
    occ = binary_dilation(occ, structure=np.ones((3, 3, 3), dtype=bool))
    return np.argwhere(occ)


def fuse_tsdf(
    depth: np.ndarray,
    intrinsics: np.ndarray,
    extrinsics: np.ndarray,
    images: np.ndarray | None = None,
    *,
    params: TSDFParams | None = None,
    chunk_voxels: int = 1 << 20,
) -> FusedMesh:
    """One mesh from all views by TSDF fusion and marching cubes.

    For every voxel of the active blocks (blocks holding a depth point, and their
    neighbours) and every view: project the voxel centre; with the nearest pixel's depth
    ``d`` and the voxel's camera z, ``sdf = d - z``; voxels with ``sdf < -trunc`` (hidden
    behind the surface) are skipped, the others add ``min(1, sdf / trunc)`` to an
    equal-weight running mean. The zero level set is extracted by scikit-image's marching
    cubes over the cubes whose 8 corners were all observed. Vertex colours (when
    ``images`` are given) are the mean over the views where the vertex is visible (its
    depth within the truncation of the view's depth) of the nearest pixel's colour.

    Memory: the dense grid (``params.n_voxels`` x 5 bytes, at most `MAX_VOXELS`) plus
    ``chunk_voxels`` voxels' float32 work arrays at a time, plus the mesh.

    Args:
        depth: (N, H, W) z-depth.
        intrinsics: (N, 3, 3) K in pixels.
        extrinsics: (N, 3, 4) world-to-camera.
        images: (N, H, W, 3) uint8, or None for an uncoloured mesh.
        params: The grid, or None for `tsdf_params` of the views.
        chunk_voxels: Voxels integrated at a time (rounded to whole blocks).
    """
    from skimage.measure import marching_cubes

    depth = np.asarray(depth)
    _check_views(depth, intrinsics, extrinsics)
    p = params if params is not None else tsdf_params(depth, intrinsics, extrinsics)
    n_views, h, w = depth.shape
    dims = np.array(p.dims)
    tsdf = np.ones(p.dims, dtype=np.float32)
    seen = np.zeros(p.dims, dtype=bool)
    blocks = _active_blocks(depth, intrinsics, extrinsics, p)
    offs = np.stack(np.meshgrid(*(np.arange(BLOCK),) * 3, indexing="ij"), axis=-1).reshape(-1, 3)
    origin = np.asarray(p.origin, dtype=np.float32)
    vox = np.float32(p.voxel_size)
    trunc = np.float32(p.trunc)
    depth32 = [np.where(_valid(depth[i]), depth[i], 0).astype(np.float32).reshape(-1) for i in range(n_views)]
    cams = []
    for i in range(n_views):
        e = np.eye(4)
        e[:3, :] = np.asarray(extrinsics[i], dtype=np.float64)[:3, :4]
        cams.append((np.asarray(intrinsics[i], dtype=np.float64) @ e[:3, :]).astype(np.float32))  # P = K [R|t]
    per_chunk = max(1, int(chunk_voxels) // len(offs))
    for start in range(0, len(blocks), per_chunk):
        ijk = (blocks[start : start + per_chunk, None, :] * BLOCK + offs[None]).reshape(-1, 3)
        xyz = ijk.astype(np.float32) * vox + origin
        acc = np.zeros(len(ijk), dtype=np.float32)
        cnt = np.zeros(len(ijk), dtype=np.float32)
        for i in range(n_views):
            q = xyz @ cams[i][:, :3].T + cams[i][:, 3]
            z = q[:, 2]
            front = z > 0
            zs = np.where(front, z, np.float32(1))
            u = np.rint(q[:, 0] / zs)
            v = np.rint(q[:, 1] / zs)
            ok = front & (u >= 0) & (u < w) & (v >= 0) & (v < h)
            sel = np.flatnonzero(ok)
            d = depth32[i][v[sel].astype(np.int64) * w + u[sel].astype(np.int64)]
            sdf = d - z[sel]
            use = (d > 0) & (sdf >= -trunc)
            sel = sel[use]
            acc[sel] += np.minimum(np.float32(1), sdf[use] / trunc)
            cnt[sel] += 1
        hit = cnt > 0
        flat = np.ravel_multi_index(tuple(ijk[hit].T), tuple(dims))
        tsdf.reshape(-1)[flat] = acc[hit] / cnt[hit]
        seen.reshape(-1)[flat] = True
    active = int(len(blocks) * len(offs))
    # A cube is meshed only when its 8 corners were observed.
    cube = seen  # AND along x, then y, then z of the running result: all 8 corners
    cube[:-1] &= cube[1:].copy()
    cube[:, :-1] &= cube[:, 1:].copy()
    cube[:, :, :-1] &= cube[:, :, 1:].copy()
    # scikit-image reads the mask of the cube with corners (i..i+1, j..j+1, k..k+1) at its
    # far corner (i+1, j+1, k+1) (checked on a one-cube volume): shift by one voxel.
    cube[1:, 1:, 1:] = cube[:-1, :-1, :-1].copy()
    cube[0] = False
    cube[:, 0] = False
    cube[:, :, 0] = False
    if not cube.any() or tsdf[cube].min() > 0 or tsdf[cube].max() < 0:
        return FusedMesh(Mesh(np.zeros((0, 3)), np.zeros((0, 3), dtype=np.int32)), p, active)
    verts, faces, _, _ = marching_cubes(tsdf, level=0.0, spacing=(p.voxel_size,) * 3, mask=cube)
    del tsdf, cube
    verts = verts.astype(np.float32) + origin
    # With the default gradient_direction="descent" the faces' normals point to the positive
    # (free, camera) side for a volume indexed (x, y, z) as here (checked by the sphere test).
    faces = faces.astype(np.int32)
    colors = None if images is None else _vertex_colors(verts, depth32, images, cams, h, w, trunc)
    return FusedMesh(Mesh(verts, faces, colors), p, active)


def _vertex_colors(
    verts: np.ndarray,
    depth32: list[np.ndarray],
    images: np.ndarray,
    cams: list[np.ndarray],
    h: int,
    w: int,
    trunc: np.float32,
) -> np.ndarray:
    acc = np.zeros((len(verts), 3), dtype=np.float32)
    cnt = np.zeros(len(verts), dtype=np.float32)
    for i, cam in enumerate(cams):
        q = verts @ cam[:, :3].T + cam[:, 3]
        z = q[:, 2]
        front = z > 0
        zs = np.where(front, z, np.float32(1))
        u = np.rint(q[:, 0] / zs)
        v = np.rint(q[:, 1] / zs)
        sel = np.flatnonzero(front & (u >= 0) & (u < w) & (v >= 0) & (v < h))
        pix = v[sel].astype(np.int64) * w + u[sel].astype(np.int64)
        d = depth32[i][pix]
        vis = (d > 0) & (np.abs(d - z[sel]) <= trunc)
        sel, pix = sel[vis], pix[vis]
        acc[sel] += np.asarray(images[i]).reshape(-1, 3)[pix].astype(np.float32)
        cnt[sel] += 1
    out = np.full((len(verts), 3), 128, dtype=np.uint8)
    seen = cnt > 0
    out[seen] = np.clip(acc[seen] / cnt[seen, None] + 0.5, 0, 255).astype(np.uint8)
    return out


# --------------------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------------------

MeshFormat = Literal["glb", "ply", "obj"]


def mesh_bytes(mesh: Mesh, fmt: MeshFormat) -> bytes:
    """The mesh as a file through trimesh: ``"glb"`` (y up: ``(x, -y, -z)``, as the app's
    other GLBs), ``"ply"`` (binary, world frame as is, vertex colours) or ``"obj"`` (world
    frame as is; vertex colours as trimesh writes them, ``v x y z r g b``)."""
    import trimesh

    verts = mesh.vertices.astype(np.float64)
    if fmt == "glb":
        verts = verts @ GLB_FROM_WORLD.T
    elif fmt not in ("ply", "obj"):
        raise ValueError(f"format must be 'glb', 'ply' or 'obj', got {fmt!r}")
    colors = None
    if mesh.colors is not None:
        colors = np.concatenate([mesh.colors, np.full((mesh.n_vertices, 1), 255, dtype=np.uint8)], axis=1)
    tm = trimesh.Trimesh(vertices=verts, faces=mesh.faces, vertex_colors=colors, process=False)
    if fmt == "ply":
        out = tm.export(file_type="ply", encoding="binary")
    elif fmt == "obj":
        out = tm.export(file_type="obj", include_color=mesh.colors is not None)
    else:
        out = trimesh.Scene(tm).export(file_type="glb")
    if isinstance(out, str):
        return out.encode()
    if not isinstance(out, bytes):
        raise TypeError(f"trimesh returned {type(out).__name__} for {fmt}")
    return out


__all__ = [
    "BLOCK",
    "MAX_VOXELS",
    "FusedMesh",
    "Mesh",
    "TSDFParams",
    "fuse_tsdf",
    "mesh_bytes",
    "tsdf_params",
    "view_mesh",
]
