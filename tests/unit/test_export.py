from __future__ import annotations

import io
import json
import struct
import zipfile

import numpy as np
import pytest
import trimesh
from PIL import Image

from da3_core.scene import export as e
from da3_core.scene import geometry as g
from tests.unit import synthetic as syn


@pytest.fixture(scope="module")
def scene():
    rec = syn.box_scene(is_metric=True)
    cams = g.resolve_cameras(rec)
    cloud = g.apply_filters(g.unproject_all(rec, cams), g.FilterParams(conf_percentile=0, max_points=3000, seed=4))
    return rec, cams, cloud


def _glb_json(data: bytes) -> dict:
    magic, _version, _length = struct.unpack_from("<4sII", data, 0)
    assert magic == b"glTF"
    chunk_len, chunk_type = struct.unpack_from("<I4s", data, 12)
    assert chunk_type == b"JSON"
    return json.loads(data[20 : 20 + chunk_len])


def test_glb_round_trip_points_colours_and_axes(scene):
    rec, cams, cloud = scene
    data = e.glb_bytes(cloud, cams, rec.hw)
    loaded = trimesh.load(io.BytesIO(data), file_type="glb")
    pc = loaded.geometry["points"]
    assert isinstance(pc, trimesh.PointCloud)
    # GLB stores (x, -y, -z); the same matrix undoes it
    back = trimesh.transform_points(pc.vertices, e.GLB_FROM_WORLD)
    np.testing.assert_allclose(back, cloud.points, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(pc.colors[:, :3], cloud.colors)
    assert (pc.colors[:, 3] == 255).all()


def test_glb_camera_wireframes_toggle(scene):
    rec, cams, cloud = scene
    with_cams = trimesh.load(io.BytesIO(e.glb_bytes(cloud, cams, rec.hw)), file_type="glb")
    names = sorted(with_cams.geometry)
    assert names == ["camera_0000", "camera_0001", "camera_0002", "points"]
    segs = g.frustum_segments(cams, rec.hw, 0.03 * g.scene_scale(cloud.points.astype(np.float64)))
    wire = trimesh.transform_points(with_cams.geometry["camera_0001"].vertices, e.GLB_FROM_WORLD)
    # written as GL LINES: consecutive vertex pairs are segments
    got = {tuple(np.round(np.concatenate(sorted(map(tuple, wire[i : i + 2]))), 4)) for i in range(0, len(wire), 2)}
    want = {tuple(np.round(np.concatenate(sorted(map(tuple, s))), 4)) for s in segs[1]}
    assert got == want
    modes = {p["mode"] for m in _glb_json(e.glb_bytes(cloud, cams, rec.hw))["meshes"] for p in m["primitives"]}
    assert modes == {0, 1}  # POINTS and LINES
    without = trimesh.load(io.BytesIO(e.glb_bytes(cloud, cams, rec.hw, show_cameras=False)), file_type="glb")
    assert list(without.geometry) == ["points"]


def test_glb_is_deterministic_and_empty_is_refused(scene):
    rec, cams, cloud = scene
    assert e.glb_bytes(cloud, cams, rec.hw) == e.glb_bytes(cloud, cams, rec.hw)
    empty = syn.empty_cloud()
    with pytest.raises(ValueError, match="loosen the filters"):
        e.glb_bytes(empty)
    assert e.glb_bytes(empty, cams, rec.hw)  # cameras alone still make a file


def test_ply_is_binary_little_endian_with_uchar_colours_and_round_trips(scene):
    _, _, cloud = scene
    data = e.ply_bytes(cloud)
    header = data[: data.index(b"end_header")].decode("ascii")
    assert "format binary_little_endian 1.0" in header
    assert f"element vertex {len(cloud)}" in header
    for prop in ("float x", "float y", "float z", "uchar red", "uchar green", "uchar blue"):
        assert f"property {prop}" in header
    pc = trimesh.load(io.BytesIO(data), file_type="ply")
    np.testing.assert_array_equal(pc.vertices.astype(np.float32), cloud.points)
    np.testing.assert_array_equal(pc.colors[:, :3], cloud.colors)


def test_npz_round_trips_exactly_without_pickle(scene):
    rec, _, _ = scene
    sky = np.zeros(rec.depth.shape, dtype=bool)
    sky[:, :3] = True
    rec = syn.make_rec(
        rec.depth, conf=rec.conf, extrinsics=rec.extrinsics, intrinsics=rec.intrinsics, sky=sky, is_metric=True
    )
    with np.load(io.BytesIO(e.npz_bytes(rec)), allow_pickle=False) as z:
        assert set(z.files) == {"image", "depth", "conf", "extrinsics", "intrinsics", "sky", "is_metric", "names"}
        for key in ("depth", "conf", "extrinsics", "intrinsics", "sky"):
            want = getattr(rec, key)
            assert z[key].dtype == want.dtype and np.array_equal(z[key], want), key
        assert z["image"].dtype == np.uint8 and np.array_equal(z["image"], rec.images)
        assert bool(z["is_metric"]) is True
        assert tuple(z["names"].tolist()) == rec.names


def test_npz_skips_none_fields():
    rec = syn.mono_box_scene()
    with np.load(io.BytesIO(e.npz_bytes(rec)), allow_pickle=False) as z:
        assert set(z.files) == {"image", "depth", "is_metric", "names"}
        assert np.array_equal(z["depth"], rec.depth)


def test_depth_png_zip_round_trips_within_quantisation(scene):
    rec, _, _ = scene
    depth = rec.depth.copy()
    depth[1, 0, :5] = np.nan
    depth[1, 1, :2] = 0.0
    depth[2] = 3.0  # a flat view
    rec = syn.make_rec(depth, conf=rec.conf, extrinsics=rec.extrinsics, intrinsics=rec.intrinsics, is_metric=True)
    data = e.depth_png_zip_bytes(rec, colorized=True)
    decoded, doc = e.read_depth_png_zip(data)
    assert doc["unit"] == "m" and len(doc["views"]) == 3
    for i, view in enumerate(doc["views"]):
        valid = np.isfinite(depth[i]) & (depth[i] > 0)
        assert np.isnan(decoded[i][~valid]).all()
        err = np.abs(decoded[i][valid].astype(np.float64) - depth[i][valid])
        assert err.max() <= view["scale"] / 2 + 1e-6 * view["max"], i
        assert view["min"] == pytest.approx(float(depth[i][valid].min()))
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        names = set(zf.namelist())
        assert {"depth/0000.png", "depth/0002.png", "depth_scale.json", "depth_vis/0001.jpg"} <= names
        with Image.open(io.BytesIO(zf.read("depth/0001.png"))) as img:
            assert img.mode.startswith("I;16") or img.mode == "I"
            assert float(img.text["depth_scale"]) == doc["views"][1]["scale"]
            assert img.text["depth_unit"] == "m"
            codes = np.asarray(img)
        assert codes.max() == 65535 and (codes[1, :2] == 0).all()
        with Image.open(io.BytesIO(zf.read("depth_vis/0001.jpg"))) as jpg:
            assert jpg.size == (syn.W, syn.H) and jpg.mode == "RGB"


def test_encode_depth_u16_bounds():
    codes, meta = e.encode_depth_u16(np.array([[1.0, 2.0], [np.inf, -1.0]]))
    assert codes.tolist() == [[1, 65535], [0, 0]]
    np.testing.assert_allclose(e.decode_depth_u16(codes, meta["scale"], meta["offset"])[0], [1.0, 2.0])
    codes, meta = e.encode_depth_u16(np.full((2, 2), np.nan))
    assert (codes == 0).all() and meta["min"] is None


def test_each_format_is_made_and_written_as_the_exports_page_does(tmp_path, scene):
    rec, cams, cloud = scene
    paths = {
        fmt: e.write_bytes(tmp_path / "run", e.FILENAMES[fmt], e.export_bytes(fmt, rec, cloud, cams))
        for fmt in e.EXPORT_FORMATS
    }
    for fmt, path in paths.items():
        assert path.name == e.FILENAMES[fmt] and path.parent == tmp_path / "run" and path.stat().st_size > 0
    assert paths["glb"].read_bytes() == e.glb_bytes(cloud, cams, rec.hw)
    assert not [p for p in (tmp_path / "run").iterdir() if p.name.startswith(".")]  # no temp files left
    with pytest.raises(ValueError, match="unknown export format"):
        e.export_bytes("colmap", rec)
    with pytest.raises(ValueError, match="needs the filtered point cloud"):
        e.export_bytes("glb", rec)
    with pytest.raises(ValueError, match="bare file name"):
        e.write_bytes(tmp_path, "../x.bin", b"")


def test_exports_do_not_mutate_the_reconstruction(scene):
    rec, cams, cloud = scene
    before = {k: getattr(rec, k).copy() for k in ("depth", "conf", "images", "extrinsics", "intrinsics")}
    pts = cloud.points.copy()
    e.glb_bytes(cloud, cams, rec.hw)
    e.ply_bytes(cloud)
    e.npz_bytes(rec)
    e.depth_png_zip_bytes(rec, colorized=True)
    for k, v in before.items():
        assert np.array_equal(getattr(rec, k), v), k
    assert np.array_equal(cloud.points, pts)
