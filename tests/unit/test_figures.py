from __future__ import annotations

import json

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio
import pytest

from da3_core.scene import figures as f
from da3_core.scene import geometry as g
from tests.unit import synthetic as syn


@pytest.fixture(scope="module")
def scene():
    rec = syn.box_scene()
    cams = g.resolve_cameras(rec)
    cloud = g.apply_filters(g.unproject_all(rec, cams), g.FilterParams(conf_percentile=0, max_points=2000))
    return rec, cams, cloud


def _revalidate(fig: go.Figure) -> go.Figure:
    # The builders skip plotly's validation for speed; full validation here proves the
    # skipped parts are valid plotly.
    return go.Figure(fig.to_dict())


# ---------------------------------------------------------------- colour encoding


def _render(idx: np.ndarray, palette: np.ndarray, scale: list, cmin: float, cmax: float) -> np.ndarray:
    """What plotly.js shows: value -> position in the scale -> the stop's colour."""
    positions = np.array([s[0] for s in scale])
    colours = np.array([[int(s[1][k : k + 2], 16) for k in (1, 3, 5)] for s in scale])
    pos = (idx.astype(np.float64) - cmin) / (cmax - cmin)
    stop = np.searchsorted(positions, pos - 1e-12)
    assert np.allclose(positions[stop], pos, atol=1e-12)  # every value lands exactly on a stop
    return colours[stop]


def test_color_encoding_is_exact_for_few_colours():
    rng = np.random.default_rng(0)
    colors = rng.integers(0, 256, (300, 3), dtype=np.uint8)[rng.integers(0, 300, 50_000)]
    idx, palette = f.encode_colors(colors)
    assert idx.dtype == np.uint16 and palette.shape[0] <= 300
    scale = f.palette_colorscale(palette)
    np.testing.assert_array_equal(_render(idx, palette, scale, 0, len(palette) - 1), colors)


def test_color_encoding_quantises_many_colours_within_8_levels():
    colors = np.random.default_rng(1).integers(0, 256, (200_000, 3), dtype=np.uint8)
    idx, palette = f.encode_colors(colors)
    assert palette.shape[0] <= 4096 and idx.max() < palette.shape[0]
    shown = _render(idx, palette, f.palette_colorscale(palette), 0, len(palette) - 1)
    err = np.abs(shown.astype(int) - colors.astype(int))
    assert err.max() <= 8  # 4 bits per channel, bin centres: worst case 2**4 / 2 levels
    assert err.mean() < 4.5


def test_color_encoding_of_a_smooth_photo_like_gradient_is_within_2_levels():
    vs, us = np.mgrid[0:400, 0:500]
    colors = np.stack([us * 255 // 499, vs * 255 // 399, (us + vs) * 255 // 898], -1).reshape(-1, 3).astype(np.uint8)
    idx, palette = f.encode_colors(colors)
    assert 4096 < palette.shape[0] <= f.MAX_PALETTE  # finer than the 4-bit floor
    shown = _render(idx, palette, f.palette_colorscale(palette), 0, len(palette) - 1)
    assert np.abs(shown.astype(int) - colors.astype(int)).max() <= 2  # 6 bits per channel fit


def test_color_encoding_edge_cases():
    idx, palette = f.encode_colors(np.zeros((0, 3), np.uint8))
    assert idx.shape == (0,) and palette.shape == (1, 3)
    idx, palette = f.encode_colors(np.full((10, 3), 7, np.uint8))
    assert (idx == 0).all() and palette.tolist() == [[7, 7, 7]]
    assert f.palette_colorscale(palette) == [[0.0, "#070707"], [1.0, "#070707"]]


# ---------------------------------------------------------------- point cloud figure


def test_point_cloud_traces_with_and_without_cameras(scene):
    rec, cams, cloud = scene
    with_cams = f.point_cloud_figure(cloud, cams, rec.hw)
    assert isinstance(with_cams, go.Figure)
    assert [t.type for t in with_cams.data] == ["scatter3d"] + ["scatter3d"] * 3
    assert with_cams.data[0].mode == "markers" and all(t.mode == "lines" for t in with_cams.data[1:])
    assert len(f.point_cloud_figure(cloud, cams, rec.hw, show_cameras=False).data) == 1
    assert len(f.point_cloud_figure(cloud).data) == 1
    _revalidate(with_cams)


def test_point_cloud_layout_and_encoding(scene):
    rec, cams, cloud = scene
    fig = f.point_cloud_figure(cloud, cams, rec.hw)
    assert fig.layout.scene.aspectmode == "data"
    assert fig.layout.hovermode is False and fig.data[0].hoverinfo == "skip"
    cam = fig.layout.scene.camera
    # camera 0 is the world frame: look along +z, with -y (OpenCV up) on top
    assert (cam.eye.x, cam.eye.y) == pytest.approx((0, 0)) and cam.eye.z < 0
    assert (cam.up.x, cam.up.y, cam.up.z) == pytest.approx((0, -1, 0))
    d = json.loads(pio.to_json(fig))
    trace = d["data"][0]
    assert trace["x"]["dtype"] == "f4" and "bdata" in trace["x"]
    assert trace["marker"]["color"]["dtype"] == "u2"
    k = len(trace["marker"]["colorscale"])
    assert trace["marker"]["cmin"] == 0 and trace["marker"]["cmax"] == k - 1
    idx, palette = f.encode_colors(cloud.colors)
    np.testing.assert_array_equal(_render(idx, palette, trace["marker"]["colorscale"], 0, k - 1), cloud.colors)
    hovering = f.point_cloud_figure(cloud, hover=True)
    assert hovering.layout.hovermode == "closest" and "x" in hovering.data[0].hovertemplate


def test_point_cloud_json_for_200k_points_is_under_6_mb():
    rng = np.random.default_rng(2)
    m = 200_000
    cloud = g.PointCloud(
        points=(rng.normal(size=(m, 3)) * 3).astype(np.float32),
        colors=rng.integers(0, 256, (m, 3), dtype=np.uint8),
        view_index=np.zeros(m, np.int32),
        pixel_index=np.arange(m, dtype=np.int32),
        n_candidates=m,
        conf_threshold=None,
        unit="m",
    )
    rec = syn.box_scene()
    size = len(pio.to_json(f.point_cloud_figure(cloud, g.resolve_cameras(rec), rec.hw)).encode())
    assert size < 6_000_000


def test_empty_cloud_still_builds(scene):
    rec, cams, _ = scene
    empty = syn.empty_cloud()
    fig = f.point_cloud_figure(empty, cams, rec.hw)
    assert len(fig.data) == 4
    pio.to_json(fig)


# ---------------------------------------------------------------- depth and confidence


def test_depth_figure_traces_units_and_orientation():
    rec = syn.box_scene(is_metric=True)
    fig = f.depth_figure(rec.depth[0], rec.depth_unit, colormap="Viridis", marks=[(3, 4), (10, 20)])
    assert [t.type for t in fig.data] == ["heatmap", "scattergl", "scatter"]
    heat = fig.data[0]
    assert heat.colorbar.title.text == "depth (m)"
    assert tuple(fig.layout.yaxis.range) == (syn.H - 0.5, -0.5)  # rows grow downwards
    assert fig.layout.yaxis.scaleanchor == "x"
    d = json.loads(pio.to_json(fig))
    assert d["data"][0]["z"]["dtype"] == "f4"
    assert d["data"][2]["x"] == [3, 10] and d["data"][2]["mode"] == "markers+lines+text"
    _revalidate(fig)
    rel = f.depth_figure(rec.depth[0], "relative units", selectable=False)
    assert rel.data[0].colorbar.title.text == "depth (relative)" and len(rel.data) == 1
    one_mark = f.depth_figure(rec.depth[0], "m", marks=[(1, 1)])
    assert one_mark.data[2].mode == "markers+text"


def test_depth_figure_downsamples_large_maps_on_the_full_res_grid():
    depth = np.random.default_rng(3).random((1000, 1500)).astype(np.float32) + 1
    fig = f.depth_figure(depth, "m", max_side=500)
    heat, click = fig.data[0], fig.data[1]
    assert f.display_stride((1000, 1500), 500) == 3
    assert np.asarray(heat.z).shape == (334, 500) and heat.dx == 3 and heat.x0 == 0
    assert len(click.x) <= f.MAX_SELECT_MARKERS
    cd = np.asarray(click.customdata)
    u, v = cd[:, 0].astype(int), cd[:, 1].astype(int)
    np.testing.assert_array_equal(u, np.asarray(click.x).astype(int))
    np.testing.assert_allclose(cd[:, 2], depth[v, u], rtol=1e-6)


def test_depth_figure_shows_invalid_depth_as_gaps_and_default_range_is_robust():
    depth = np.linspace(1, 2, 100, dtype=np.float32).reshape(10, 10)
    depth[0, 0] = np.nan
    depth[0, 1] = -1
    fig = f.depth_figure(depth, "m")
    z = np.asarray(fig.data[0].z)
    assert np.isnan(z[0, 0]) and np.isnan(z[0, 1])
    r = g.depth_range(depth, "m")
    assert (fig.data[0].zmin, fig.data[0].zmax) == pytest.approx((r.p_low, r.p_high))


def test_colormaps_are_checked():
    for cmap in f.COLORMAPS:
        _revalidate(f.depth_figure(np.ones((4, 4)), "m", colormap=cmap))
    with pytest.raises(ValueError, match="colormap"):
        f.depth_figure(np.ones((4, 4)), "m", colormap="Jet2")


def test_confidence_figure():
    conf = np.random.default_rng(4).random((20, 30)).astype(np.float32) + 1
    fig = f.confidence_figure(conf, colormap="Inferno")
    assert len(fig.data) == 1 and fig.data[0].type == "heatmap"
    assert fig.data[0].colorbar.title.text == "confidence"
    _revalidate(fig)
    with pytest.raises(ValueError, match="predicts no confidence"):
        f.confidence_figure(None)


# ---------------------------------------------------------------- selection


def test_pixel_from_selection_on_streamlit_dicts():
    click = {
        "selection": {
            "points": [
                {
                    "curve_number": 1,
                    "point_number": 812,
                    "point_index": 812,
                    "x": 42,
                    "y": 17,
                    "customdata": [42, 17, 3.25],
                }
            ],
            "point_indices": [812],
            "box": [],
            "lasso": [],
        }
    }
    assert f.pixel_from_selection(click) == (42, 17)
    assert f.pixel_from_selection(click["selection"]) == (42, 17)
    typed_row = {"selection": {"points": [{"x": 9.0, "y": 4.0, "customdata": {"0": 9, "1": 4, "2": 1.5}}]}}
    assert f.pixel_from_selection(typed_row) == (9, 4)
    no_custom = {"selection": {"points": [{"x": 5.4, "y": 7.6}]}}
    assert f.pixel_from_selection(no_custom) == (5, 8)
    empty = {"selection": {"points": [], "point_indices": [], "box": [], "lasso": []}}
    assert f.pixel_from_selection(empty) is None
    assert f.pixel_from_selection(None) is None
    assert f.pixel_from_selection({}) is None
    points = [{"x": 1, "y": 2, "customdata": [1, 2, 0.5]}, {"x": 3, "y": 4, "customdata": [3, 4, 0.5]}]
    box = {"selection": {"points": points, "point_indices": [0, 1], "box": [{"x": [0, 5], "y": [0, 5]}], "lasso": []}}
    assert f.pixels_from_selection(box) == [(1, 2), (3, 4)]
    assert f.pixel_from_selection(box) == (1, 2)
