"""The 3D Gaussian viewer's pure parts (`da3_core.scene.splat`): SPZ packing, 3DGS PLY reading, the
start camera, the self-contained page. The browser side is in tests/e2e/test_splat_viewer.py."""

from __future__ import annotations

import dataclasses
import gzip
import json
import math
import re
import struct

import numpy as np
import pytest

from da3_core.app import splat_view
from da3_core.contract import Gaussians
from da3_core.scene import geometry, splat, splat_cameras
from tests.unit import synthetic


def gaussians(n: int = 500, seed: int = 0, *, spread: float = 3.0, opacity=None) -> Gaussians:
    rng = np.random.default_rng(seed)
    q = rng.normal(size=(n, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return Gaussians(
        means=rng.uniform(-spread, spread, (n, 3)).astype(np.float32),
        scales=np.exp(rng.uniform(-6, 1, (n, 3))).astype(np.float32),
        rotations=q.astype(np.float32),
        harmonics=rng.uniform(-1.5, 1.5, (n, 3, 4)).astype(np.float32),
        opacities=rng.uniform(0.05, 1.0, n).astype(np.float32) if opacity is None else opacity,
    )


# --------------------------------------------------------------------------------------
# SPZ
# --------------------------------------------------------------------------------------


def test_spz_round_trip_keeps_every_value_within_its_quantisation():
    g = gaussians()
    data = splat.pack_spz(g)
    magic, version, n, degree, fb, flags, _ = struct.unpack_from("<IIIBBBB", gzip.decompress(data))
    assert (magic, version, n, degree, flags) == (0x5053474E, 3, 500, 0, 0)
    back = splat.read_spz(data)
    assert len(back) == 500 and back.fractional_bits == fb
    assert np.abs(back.means - g.means).max() <= 0.5 / (1 << fb) + 1e-6
    assert np.abs(np.log(back.scales) - np.log(g.scales)).max() <= 1 / 32 + 1e-5  # u8 of 16 * ln(scale)
    assert np.abs(back.opacities - g.opacities).max() <= 0.5 / 255 + 1e-6
    rgb_step = splat.SH_C0 / (splat.SPZ_COLOR_SCALE * 255)  # one u8 step of the DC colour
    assert np.abs(back.rgb - splat.rgb_dc(g)).max() <= rgb_step / 2 + 1e-5
    dots = np.abs((back.rotations * g.rotations).sum(1))  # q and -q are the same rotation
    assert dots.min() > 0.9995
    assert np.allclose(np.linalg.norm(back.rotations, axis=1), 1.0, atol=1e-5)


def test_spz_is_small_and_deterministic():
    g = gaussians(20_000)
    a, b = splat.pack_spz(g), splat.pack_spz(g)
    assert a == b  # gzip without a timestamp
    assert len(a) < 20_000 * 19  # 19 bytes before gzip: 9 position, 1 alpha, 3 colour, 3 scale, 4 rotation


@pytest.mark.parametrize("largest", range(4))
def test_quaternions_pack_with_each_largest_component_and_either_sign(largest):
    rng = np.random.default_rng(largest)
    q = rng.uniform(-0.4, 0.4, (200, 4))
    q[:, largest] = rng.choice([-1.0, 1.0], 200)  # this component is the largest, of either sign
    wxyz = q / np.linalg.norm(q, axis=1, keepdims=True)
    back = splat._unpack_quaternions(splat._pack_quaternions(wxyz))
    assert np.abs((back * wxyz).sum(1)).min() > 0.9999


def test_invisible_gaussians_are_not_sent():
    g = gaussians(6)
    means = g.means.copy()
    means[1] = np.nan
    scales = g.scales.copy()
    scales[2, 0] = 0.0
    rot = g.rotations.copy()
    rot[3] = 0.0
    op = np.array([0.5, 0.5, 0.5, 0.5, 0.001, 0.9], np.float32)
    g = dataclasses.replace(g, means=means, scales=scales, rotations=rot, opacities=op)
    assert splat.visible_mask(g).tolist() == [True, False, False, False, False, True]
    back = splat.read_spz(splat.pack_spz(g))
    assert len(back) == 2 and np.allclose(back.means, g.means[[0, 5]], atol=1e-4)


def test_opacities_with_a_harmonic_axis_use_their_first_term():
    g = gaussians(10)
    op = np.zeros((10, 1, 4), np.float32)
    op[:, 0, 0] = np.linspace(0.1, 1.0, 10)
    op[:, 0, 1:] = 5.0  # higher terms are not opacity
    back = splat.read_spz(splat.pack_spz(dataclasses.replace(g, opacities=op)))
    assert np.allclose(back.opacities, np.linspace(0.1, 1.0, 10), atol=1 / 255)


def test_positions_keep_precision_near_and_fail_clearly_far():
    near = gaussians(50, spread=0.5)
    assert splat._fractional_bits(near.means) == 16  # capped
    far = gaussians(50, spread=3000.0)
    fb = splat._fractional_bits(far.means)
    assert fb == 22 - math.ceil(math.log2(np.abs(far.means).max()))
    back = splat.read_spz(splat.pack_spz(far))
    assert np.abs(back.means - far.means).max() <= 0.5 / (1 << fb) + 1e-3
    assert splat._fractional_bits(np.zeros((3, 3))) == 16
    with pytest.raises(ValueError, match="too far for SPZ"):
        splat.pack_spz(gaussians(5, spread=1e7))


@pytest.mark.parametrize(
    "field,value,match",
    [
        ("scales", np.ones((4, 2), np.float32), r"scales must be \(5, 3\)"),
        ("harmonics", np.ones((5, 3), np.float32), r"harmonics must be \(5, 3, D\)"),
        ("opacities", np.ones(4, np.float32), r"opacities must be \(5,\)"),
    ],
)
def test_bad_shapes_are_named(field, value, match):
    with pytest.raises(ValueError, match=match):
        splat.pack_spz(dataclasses.replace(gaussians(5), **{field: value}))


def test_reading_something_else_than_spz_v3_fails():
    body = struct.pack("<IIIBBBB", 0x1234, 3, 0, 0, 12, 0, 0)
    with pytest.raises(ValueError, match="not an SPZ v3 file"):
        splat.read_spz(gzip.compress(body))
    body = struct.pack("<IIIBBBB", splat.SPZ_MAGIC, 3, 0, 1, 12, 0, 0)
    with pytest.raises(ValueError, match="SH degree 1"):
        splat.read_spz(gzip.compress(body))


# --------------------------------------------------------------------------------------
# 3DGS PLY
# --------------------------------------------------------------------------------------


def gs_ply(
    g: Gaussians, *, rest: int = 0, normals: bool = True, fmt: str = "binary_little_endian 1.0", extra: str = ""
) -> bytes:
    """A 3DGS PLY as DA3's writer makes it (raw parameters: log scales, logit opacity)."""
    names = ["x", "y", "z"] + (["nx", "ny", "nz"] if normals else []) + ["f_dc_0", "f_dc_1", "f_dc_2"]
    names += [f"f_rest_{i}" for i in range(rest)] + [
        "opacity",
        "scale_0",
        "scale_1",
        "scale_2",
        "rot_0",
        "rot_1",
        "rot_2",
        "rot_3",
    ]
    n = len(g.means)
    h = np.asarray(g.harmonics)
    op = np.asarray(g.opacities, np.float64)
    cols = (
        [g.means]
        + ([np.zeros((n, 3))] if normals else [])
        + [
            h[:, :, 0],
            h[:, :, 1:].reshape(n, -1)[:, :rest],
            np.log(op / (1 - op))[:, None],
            np.log(g.scales),
            g.rotations,
        ]
    )
    arr = np.concatenate([np.asarray(c, np.float64).reshape(n, -1) for c in cols], axis=1).astype("<f4")
    header = (
        f"ply\nformat {fmt}\nelement vertex {n}\n"
        + "".join(f"property float {k}\n" for k in names)
        + extra
        + "end_header\n"
    )
    return header.encode() + arr.tobytes()


def test_a_3dgs_ply_comes_back_activated():
    g = gaussians(40)
    back = splat.read_gs_ply(gs_ply(g))
    assert np.allclose(back.means, g.means, atol=1e-6)
    assert np.allclose(back.scales, g.scales, rtol=1e-5)
    assert np.allclose(back.opacities, g.opacities, atol=1e-5)
    assert np.allclose(back.rotations, g.rotations, atol=1e-6)
    assert back.harmonics.shape == (40, 3, 1) and np.allclose(back.harmonics[:, :, 0], g.harmonics[:, :, 0], atol=1e-6)


def test_a_3dgs_ply_with_higher_harmonics_keeps_them_in_3dgs_order():
    g = gaussians(7)  # D = 4: 3 coefficients after DC per channel
    back = splat.read_gs_ply(gs_ply(g, rest=9, normals=False))
    assert back.harmonics.shape == (7, 3, 4)
    assert np.allclose(back.harmonics, g.harmonics, atol=1e-6)


def test_a_3dgs_ply_with_a_second_element_and_unnormalised_rotations():
    g = gaussians(5)
    g = dataclasses.replace(g, rotations=g.rotations * 3.0)
    data = gs_ply(g, extra="element face 0\nproperty list uchar int vertex_indices\n")
    back = splat.read_gs_ply(data)
    assert np.allclose(np.linalg.norm(back.rotations, axis=1), 1.0, atol=1e-6)


@pytest.mark.parametrize(
    "data,match",
    [
        (b"not a ply", "not a PLY file"),
        (gs_ply(gaussians(2), fmt="ascii 1.0"), "only binary little-endian"),
        (
            b"ply\nformat binary_little_endian 1.0\nelement vertex 1\nproperty float x\nend_header\n" + b"\0" * 4,
            "missing vertex properties",
        ),
        (
            b"ply\nformat binary_little_endian 1.0\nelement vertex 1\nproperty list uchar int x\nend_header\n",
            "list properties",
        ),
        (
            b"ply\nformat binary_little_endian 1.0\nelement face 1\nproperty float x\nend_header\n",
            "first PLY element must be 'vertex'",
        ),
    ],
)
def test_ply_that_is_not_3dgs_is_refused(data, match):
    with pytest.raises(ValueError, match=match):
        splat.read_gs_ply(data)


# --------------------------------------------------------------------------------------
# Cameras
# --------------------------------------------------------------------------------------


def rotate(q_xyzw, v):
    x, y, z, w = q_xyzw
    u = np.array([x, y, z])
    v = np.asarray(v, dtype=np.float64)
    return v + 2 * np.cross(u, np.cross(u, v) + w * v)


def test_the_viewer_starts_at_the_reference_camera_looking_along_its_axis():
    rec = synthetic.box_scene(3)
    cams = geometry.resolve_cameras(rec)
    # Put the reference (identity) camera second, as with a forced reference view.
    order = [1, 0, 2]
    cams = geometry.Cameras(cams.extrinsics[order], cams.intrinsics[order], False, None)
    means = np.array([[0, 0, 2.0], [0.1, 0.2, 4.0], [0, 0, 6.0], [0, 0, -3.0]])
    cam = splat_cameras.viewer_camera(cams, rec.hw, means)
    assert cam["index"] == 1
    assert np.allclose(cam["position"], 0.0, atol=1e-9)
    assert np.allclose(cam["quaternion"], [1, 0, 0, 0], atol=1e-9)  # OpenCV -> three.js camera: 180 degrees about x
    assert np.allclose(cam["up"], [0, -1, 0])
    assert np.allclose(cam["target"], [0, 0, 4.0])  # median depth of the points in front
    assert cam["fovY"] == pytest.approx(math.degrees(2 * math.atan(24 / 50.0)))
    assert 0 < cam["near"] < cam["far"]
    # Another camera: the three.js camera's -z is the OpenCV optical axis, its +y the image up.
    other = splat_cameras.viewer_camera(cams, rec.hw, means, index=2)
    r_c2w = cams.cam_to_world()[2][:3, :3]
    assert np.allclose(rotate(other["quaternion"], [0, 0, -1]), r_c2w[:, 2], atol=1e-9)
    assert np.allclose(rotate(other["quaternion"], [0, 1, 0]), other["up"], atol=1e-9)
    assert np.allclose(other["position"], cams.centers()[2])


def test_viewer_camera_without_points_in_front_or_focal_length():
    cams = geometry.Cameras(np.eye(3, 4)[None], np.diag([0.0, 0.0, 1.0])[None], True, 60.0)
    cam = splat_cameras.viewer_camera(cams, (10, 10), np.zeros((0, 3)))
    assert cam["fovY"] == 50.0 and np.allclose(cam["target"], [0, 0, 1.0])


@pytest.mark.parametrize("axis", range(3))
def test_rotation_to_quaternion_for_half_turns(axis):
    r = -np.eye(3)
    r[axis, axis] = 1.0  # 180 degrees about this axis: trace -1, the branch on the largest diagonal
    q = splat_cameras._quat_xyzw(r)
    want = [0.0, 0.0, 0.0, 0.0]
    want[axis] = 1.0
    assert np.allclose(np.abs(q), want, atol=1e-12)


def test_rotation_to_quaternion_matches_the_rotation():
    assert np.allclose(splat_cameras._quat_xyzw(np.eye(3)), [0, 0, 0, 1])
    r = synthetic.rot_y(30.0) @ synthetic.rot_x(-20.0)  # trace > 0
    q = splat_cameras._quat_xyzw(r)
    for v in np.eye(3):
        assert np.allclose(rotate(q, v), r @ v, atol=1e-12)


def test_metric_runs_scale_the_cameras_into_the_gaussians_frame():
    rec = synthetic.box_scene(3)
    cams = geometry.resolve_cameras(rec)
    assert splat_cameras.gaussian_cameras(rec, cams) is cams
    metric = dataclasses.replace(rec, is_metric=True, scale_factor=4.0)
    scaled = splat_cameras.gaussian_cameras(metric, cams)
    assert np.allclose(scaled.extrinsics[:, :, 3], cams.extrinsics[:, :, 3] / 4.0)
    assert np.allclose(scaled.extrinsics[:, :, :3], cams.extrinsics[:, :, :3])


def test_frustum_lines_one_colour_per_end_point():
    rec = synthetic.box_scene(3)
    cams = geometry.resolve_cameras(rec)
    pts, cols = splat_cameras.frustum_lines(cams, rec.hw, 0.5)
    assert len(pts) == len(cols) == 3 * 8 * 2 * 3
    assert np.allclose(np.array(pts).reshape(3, 16, 3)[0, 0], 0.0)  # camera 0's first segment starts at its centre
    assert np.allclose(np.array(cols).reshape(3, 16, 3)[1, 0], np.array(geometry.camera_rgb(1, 3)) / 255, atol=1e-4)


# --------------------------------------------------------------------------------------
# The page
# --------------------------------------------------------------------------------------


def options_of(html: str) -> dict:
    m = re.search(r'DA3SplatViewer\.mount\(el, "([A-Za-z0-9+/=]*)", (\{.*?\})\);\n', html)
    assert m, "the mount call is missing"
    return json.loads(m.group(2))


def test_the_page_is_self_contained():
    rec = synthetic.with_gaussians(synthetic.box_scene(3))
    view = splat_view.run_viewer(rec, geometry.resolve_cameras(rec), show_cameras=False, height=500)
    html = view.html
    assert html.startswith("<!doctype html>") and "DA3SplatViewer.mount" in html
    page = html.replace(splat_view.viewer_script(), "")  # the bundle's own network-free-ness is checked in the browser
    assert not re.search(r"<script[^>]+src=|<link|<img|@import|url\(|https?:", page, re.I)  # the page fetches nothing
    assert html.count("</script>") == 2  # the bundle cannot close its own tag early
    opts = options_of(html)
    assert opts["count"] == view.n_sent == view.n_total == 3 * 48 * 64
    assert opts["showCameras"] is False and opts["mode"] == "orbit" and opts["splatScale"] == 1.0
    assert opts["camera"]["index"] == view.reference == 0
    assert len(opts["frustums"]) == 3 * 48
    assert view.payload_mb == pytest.approx(len(html.encode()) / 1e6)
    assert 'id="da3-scale"' in html and 'id="da3-mode"' in html and 'id="da3-reset"' in html and 'id="da3-cams"' in html


def test_page_options_and_the_fly_mode():
    g = gaussians(30)
    cams = geometry.Cameras(np.eye(3, 4)[None], synthetic.pinhole()[None], False, None)
    html = splat_view.splat_viewer_html(g, cams, (48, 64), mode="fly", splat_scale=2.0, background="#fff")
    opts = options_of(html)
    assert opts["mode"] == "fly" and opts["splatScale"] == 2.0
    assert '<option value="fly" selected>' in html and 'value="2"' in html
    assert "background: #fff;" in html and opts["background"] == "#fff"
    with pytest.raises(ValueError, match="mode must be"):
        splat_view.splat_payload(g, cams, (48, 64), mode="walk")
    with pytest.raises(ValueError, match="background must be a hex colour"):
        splat_view.splat_payload(g, cams, (48, 64), background="#fff</style>")


def test_117k_gaussians_fit_the_payload_budget():
    n_views, h, w = 2, 210, 280  # DA3-GIANT, 2 views at process_res 280: 117,600 Gaussians
    rng = np.random.default_rng(1)
    vs, us = np.mgrid[0:h, 0:w].astype(np.float64)
    means = np.concatenate(
        [
            np.stack([(us - w / 2) / 224 * 2, (vs - h / 2) / 224 * 2, 2 + 0.3 * np.sin(us / 30 + i)], -1).reshape(-1, 3)
            for i in range(n_views)
        ]
    )
    g = gaussians(len(means), seed=1)
    g = dataclasses.replace(
        g, means=means.astype(np.float32), scales=np.exp(rng.normal(-5.5, 0.5, (len(means), 3))).astype(np.float32)
    )
    cams = geometry.Cameras(
        np.stack([np.eye(3, 4)] * 2), np.stack([synthetic.pinhole(224, 224, w / 2, h / 2)] * 2), False, None
    )
    html = splat_view.splat_viewer_html(g, cams, (h, w))
    assert len(g.means) == 117_600
    assert len(html.encode()) / 1e6 <= splat.PAYLOAD_GOAL_MB_117K


def test_run_viewer_needs_gaussians_and_its_caption_escapes_names():
    rec = synthetic.box_scene(2)
    with pytest.raises(ValueError, match="this run has no Gaussians"):
        splat_view.run_viewer(rec, geometry.resolve_cameras(rec))
    view = splat_view.RunViewer("<html>", 90, 100, 1, 1.25)
    caption = splat_view.run_viewer_caption(view, ("a.png", "*b*.png"))
    assert caption.startswith("90 of 100 Gaussians (10 fully transparent or invalid left out), drawn by your browser")
    assert "view 1: \\*b\\*" in caption and "Page size 1.2 MB." in caption
    assert "view 5)" in splat_view.run_viewer_caption(dataclasses.replace(view, reference=5, n_sent=100), ("a.png",))
