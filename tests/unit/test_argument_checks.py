"""Arguments the pure modules refuse, and inputs they tolerate (figures, exports, geometry)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from da3_core.scene import export, figures, geometry
from tests.unit import synthetic


def test_figures_refuse_bad_shapes_and_options():
    depth = synthetic.box_scene(1).depth[0]
    with pytest.raises(ValueError, match="min_bits"):
        figures.encode_colors(np.zeros((4, 3), np.uint8), min_bits=0)
    with pytest.raises(ValueError, match=r"depth must be \(H, W\)"):
        figures.depth_figure(depth[None], "m")
    with pytest.raises(ValueError, match="at most two pixels"):
        figures.depth_figure(depth, "m", marks=((1, 1), (2, 2), (3, 3)))
    with pytest.raises(ValueError, match="conf is None"):
        figures.confidence_figure(None)
    with pytest.raises(ValueError, match=r"conf must be \(H, W\)"):
        figures.confidence_figure(np.ones((1, 4, 4), np.float32))


def test_a_tiny_marker_budget_still_fits():
    fig = figures.depth_figure(np.ones((40, 60), np.float32), "m", max_markers=7)
    click_layer = [t for t in fig.data if t.type.startswith("scatter")]
    assert click_layer and len(click_layer[0].x) <= 7


@pytest.mark.parametrize(
    ("selection", "expected"),
    [
        (None, []),
        ({"selection": ["not", "a", "mapping"]}, []),
        ({"selection": {"points": ["junk", {"x": 3.4, "y": 7.6}]}}, [(3, 8)]),
        (
            {"points": [{"customdata": [5, 6, 1.0]}, {"x": float("nan"), "y": 1}, {"x": "left", "y": 2}, {"y": 2}]},
            [(5, 6)],
        ),
    ],
)
def test_pixels_from_odd_selections(selection, expected):
    assert figures.pixels_from_selection(selection) == expected


def test_colorize_depth_with_almost_no_valid_pixel():
    depth = np.zeros((8, 8), np.float32)
    depth[0, :3] = [1.0, 2.0, 4.0]
    img = export.colorize_depth(depth)
    assert img.shape == (8, 8, 3) and not img[1:].any()  # invalid pixels stay black
    assert img[0, :3].any()


def test_write_bytes_leaves_no_temporary_file_when_writing_fails(tmp_path, monkeypatch):
    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        export.write_bytes(tmp_path, "scene.glb", b"data")
    assert list(tmp_path.iterdir()) == []


def test_unknown_export_format_is_named():
    rec = synthetic.box_scene(1)
    with pytest.raises(ValueError, match="unknown export format 'obj'"):
        export.export_bytes("obj", rec, None, None)


def test_cameras_and_unprojection_refuse_mismatched_shapes():
    ext, k = synthetic.box_cameras()
    with pytest.raises(ValueError, match=r"extrinsics must be \(N, 3, 4\)"):
        geometry.Cameras(ext[:, :, :3], k, assumed=False, fov_deg=None)
    with pytest.raises(ValueError, match=r"intrinsics must be \(3, 3, 3\)"):
        geometry.Cameras(ext, k[:2], assumed=False, fov_deg=None)
    rec = synthetic.box_scene(3)
    two = geometry.resolve_cameras(synthetic.box_scene(2))
    with pytest.raises(ValueError, match="cameras has 2 views for a reconstruction of 3"):
        geometry.unproject_all(rec, two)


def test_depth_range_of_a_masked_region():
    depth = np.arange(1, 17, dtype=np.float32).reshape(4, 4)
    mask = np.zeros((4, 4), bool)
    mask[0] = True
    rng = geometry.depth_range(depth, "m", mask=mask)
    assert rng.min == 1.0 and rng.max == 4.0 and rng.n_valid == 4
