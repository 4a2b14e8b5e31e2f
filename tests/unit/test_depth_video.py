"""`da3_core.scene.depth_video`: one depth range for all frames, the colour-mapped mp4 and
the 16-bit PNG zip, written frame by frame (flat memory) under a temporary name."""

from __future__ import annotations

import tracemalloc
import zipfile
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

from da3_core.scene import depth_video as dv
from da3_core.scene import export


def ramp_frames(n: int = 6, h: int = 40, w: int = 60, seed: int = 0) -> np.ndarray:
    """(n, h, w) float32 depth in 1..9 with holes (NaN, 0, negative, inf) in every frame."""
    rng = np.random.default_rng(seed)
    depth = rng.uniform(1.0, 9.0, (n, h, w)).astype(np.float32)
    depth[:, 0, :5] = [np.nan, 0.0, -1.0, np.inf, np.nan]
    return depth


def decode(path: Path) -> np.ndarray:
    """All frames of an mp4: (N, H, W, 3) uint8."""
    return iio.imread(path, plugin="FFMPEG", index=None)


# --------------------------------------------------------------------------------------
# Range and colours
# --------------------------------------------------------------------------------------


def test_global_range_is_the_percentiles_of_valid_depth():
    rng = np.random.default_rng(1)
    depth = rng.uniform(2.0, 12.0, (20, 100, 100))
    depth[:, :10] = np.nan  # invalid pixels are ignored...
    depth[:, 10:20] = 0.0
    depth[3] = -5.0  # ...and so is a frame without any valid pixel
    lo, hi = dv.global_depth_range(depth)  # 200,000 samples of 200,000 pixels, 80% valid
    assert lo == pytest.approx(2.0 + 0.02 * 10, abs=0.05)
    assert hi == pytest.approx(12.0 - 0.02 * 10, abs=0.05)
    assert dv.global_depth_range(depth) == (lo, hi)  # deterministic
    lo1, hi1 = dv.global_depth_range(depth, percentiles=(10, 90), sample_pixels=5_000, seed=3)
    assert lo1 == pytest.approx(3.0, abs=0.2) and hi1 == pytest.approx(11.0, abs=0.2)  # a small sample is close
    with pytest.raises(ValueError, match="No valid depth"):
        dv.global_depth_range(np.full((3, 4, 4), np.nan))


def test_one_range_gives_one_colour_per_depth_across_frames():
    near = np.full((10, 10), 2.0)
    near[5:] = 3.0  # frame A spans 2..3
    far = np.full((10, 10), 3.0)
    far[5:] = 8.0  # frame B spans 3..8: the same depth 3 is its nearest, A's farthest
    lo, hi = 1.0, 10.0
    a, b = dv.colorize_fixed(near, lo, hi), dv.colorize_fixed(far, lo, hi)
    np.testing.assert_array_equal(a[7, 7], b[2, 2])  # depth 3 has one colour in both frames
    assert not np.array_equal(export.colorize_depth(near)[7, 7], export.colorize_depth(far)[2, 2])  # unlike per-frame
    lut = dv._cached_lut("Spectral")
    np.testing.assert_array_equal(
        dv.colorize_fixed(np.array([[1.0, 10.0, 0.5, 20.0]]), lo, hi)[0], [lut[0], lut[255], lut[0], lut[255]]
    )  # ends, and clipped beyond them
    # Inverse spacing: 1/d at 20% of the way from 1/lo to 1/hi; linear: d at 20% of lo..hi.
    assert (dv.colorize_fixed(np.array([[1 / (1.0 - 0.2 * 0.9)]]), lo, hi)[0, 0] == lut[51]).all()
    assert (dv.colorize_fixed(np.array([[1.0 + 0.2 * 9.0]]), lo, hi, inverse=False)[0, 0] == lut[51]).all()
    invalid = dv.colorize_fixed(np.array([[np.nan, 0.0, -2.0, np.inf]]), lo, hi)
    assert (invalid == 0).all()


def test_legend_is_a_colour_bar_with_labels():
    img = dv.legend_image(1.0, 10.0, "m", 240)
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[0] == 240 and img.shape[2] == 3
    lut = dv._cached_lut("Spectral")
    column = img[:, 6 + 4]  # inside the bar (margin + a few pixels)
    assert any((column == lut[0]).all(axis=1)) and any((column == lut[255]).all(axis=1))
    ticks = dv._ticks(1.0, 10.0, "m", 5, True)
    assert [t for _, t in ticks][0] == "1.0 m" and ticks[-1][1] == "10 m" and len({t for _, t in ticks}) == 5
    assert dv.legend_image(1.0, 10.0, "relative units", 240, width=200).shape == (240, 200, 3)
    assert dv._title("relative units") == "depth (relative)"


# --------------------------------------------------------------------------------------
# The mp4
# --------------------------------------------------------------------------------------


def test_video_decodes_with_every_frame_the_legend_and_fixed_colours(tmp_path):
    depth = ramp_frames(n=6, h=41, w=61)  # odd sizes: padded to even
    depth[2] = 4.0  # a constant-depth frame
    out = tmp_path / "exports" / dv.VIDEO_FILENAME
    info = dv.write_depth_video(depth, out, fps=5, lo=1.0, hi=9.0, unit="m", names=[f"f{i}.png" for i in range(6)])
    legend_w = dv.legend_image(1.0, 9.0, "m", 42).shape[1]
    assert info["path"] == str(out) and info["frames"] == 6 and info["seconds"] == pytest.approx(1.2)
    assert (info["lo"], info["hi"], info["unit"], info["fps"]) == (1.0, 9.0, "m", 5.0)
    frames = decode(out)
    assert frames.shape[0] == 6
    assert frames.shape[1:] == (info["height"], info["width"], 3) == (42, 61 + legend_w + (61 + legend_w) % 2, 3)
    assert info["width"] % 2 == 0 and info["height"] % 2 == 0
    want = dv.colorize_fixed(depth[2], 1.0, 9.0)[10, 10]
    got = frames[2, 8:34, 8:53].reshape(-1, 3).astype(np.float64)  # away from edges (chroma is subsampled)
    assert np.abs(got.mean(axis=0) - want).max() <= 6, (got.mean(axis=0), want)
    assert np.abs(got - want).max() <= 12
    # The legend is beside the frame: its panel is not black.
    assert frames[2, :, 61:].max() > 200


def test_video_range_defaults_to_the_global_percentiles(tmp_path):
    depth = ramp_frames(n=3)
    info = dv.write_depth_video(depth, tmp_path / "v.mp4")
    assert (info["lo"], info["hi"]) == dv.global_depth_range(depth)
    assert info["unit"] == "relative units"


class SpyDepth:
    """An (N, H, W) array-like that records, at every frame read, whether ``watch`` exists."""

    def __init__(self, depth: np.ndarray, watch: Path, fail_at: int | None = None) -> None:
        self.depth, self.watch, self.fail_at = depth, watch, fail_at
        self.shape = depth.shape
        self.seen: list[bool] = []

    def __getitem__(self, i: int) -> np.ndarray:
        self.seen.append(self.watch.exists())
        if i == self.fail_at:
            raise RuntimeError("disk gone")
        return self.depth[i]


def test_no_partial_file_at_the_destination(tmp_path):
    out = tmp_path / "depth_video.mp4"
    spy = SpyDepth(ramp_frames(n=5), out)
    dv.write_depth_video(spy, out, lo=1.0, hi=9.0)
    assert len(spy.seen) == 5 and not any(spy.seen)  # never there while frames were written
    assert out.is_file() and decode(out).shape[0] == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["depth_video.mp4"]  # no temporary left
    # A failure half-way leaves neither the destination nor a temporary file.
    out2 = tmp_path / "other.mp4"
    with pytest.raises(RuntimeError, match="disk gone"):
        dv.write_depth_video(SpyDepth(ramp_frames(n=5), out2, fail_at=3), out2, lo=1.0, hi=9.0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["depth_video.mp4"]
    zip_out = tmp_path / "d.zip"
    spy = SpyDepth(ramp_frames(n=4), zip_out)
    dv.write_depth_png_sequence(spy, zip_out, names=list("abcd"), unit="m", lo=1.0, hi=9.0)
    assert len(spy.seen) == 4 and not any(spy.seen) and zip_out.is_file()
    with pytest.raises(RuntimeError):
        dv.write_depth_png_sequence(
            SpyDepth(ramp_frames(n=4), tmp_path / "e.zip", fail_at=2),
            tmp_path / "e.zip",
            names=list("abcd"),
            unit="m",
            lo=1.0,
            hi=9.0,
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.zip", "depth_video.mp4"]


def test_memory_stays_flat_on_a_memmap(tmp_path):
    n, h, w = 300, 120, 160
    path = tmp_path / "depth.npy"
    mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, h, w))
    for i in range(n):  # written frame by frame too: the test itself never holds the array
        mm[i] = 1.0 + (i % 7) + np.linspace(0.0, 3.0, w, dtype=np.float32)[None, :]
    mm.flush()
    del mm
    depth = np.load(path, mmap_mode="r")
    nbytes = n * h * w * 4  # 23 MB
    # Warm up first: the first call imports imageio's plugin and loads the font, allocations
    # made once per process that are not the frames.
    dv.write_depth_video(depth[:2], tmp_path / "warm.mp4", names=["a", "b"])
    tracemalloc.start()
    try:
        info = dv.write_depth_video(depth, tmp_path / "v.mp4", names=[f"frame_{i:04d}" for i in range(n)])
        _, video_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        dv.write_depth_png_sequence(depth, tmp_path / "d.zip", names=[str(i) for i in range(n)], unit="m")
        _, png_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info["frames"] == n
    # About 1.8 MB: the range's 200,000-pixel sample and one frame, not the 23 MB array.
    assert video_peak < nbytes / 10, (video_peak, nbytes)
    assert png_peak < nbytes / 10, (png_peak, nbytes)


# --------------------------------------------------------------------------------------
# The 16-bit PNG zip
# --------------------------------------------------------------------------------------


def test_png_zip_round_trips_through_export_reader_with_one_scale(tmp_path):
    depth = ramp_frames(n=4)
    depth[1] *= 3.0  # frames with different ranges still share one scale
    depth[3] = np.nan  # and a frame with no valid depth
    out = tmp_path / dv.PNG_SEQUENCE_FILENAME
    info = dv.write_depth_png_sequence(depth, out, names=["a.png", "b.png", "c.png", "d.png"], unit="m")
    decoded, doc = export.read_depth_png_zip(out.read_bytes())
    assert decoded.shape == depth.shape and doc["unit"] == "m" and doc["shared_scale"] is True
    assert {(v["scale"], v["offset"]) for v in doc["views"]} == {(info["scale"], info["offset"])}
    assert [v["name"] for v in doc["views"]] == ["a.png", "b.png", "c.png", "d.png"]
    valid = np.isfinite(depth) & (depth > 0)
    assert np.isnan(decoded[~valid]).all()
    err = np.abs(decoded[valid].astype(np.float64) - depth[valid])
    assert err.max() <= info["scale"] / 2 + 1e-6 * info["hi"]
    assert doc["range"] == [info["lo"], info["hi"]] == [float(depth[valid].min()), float(depth[valid].max())]
    assert doc["views"][3]["min"] is None and doc["views"][1]["max"] == pytest.approx(float(depth[1][valid[1]].max()))
    with zipfile.ZipFile(out) as zf:
        assert zf.namelist()[:2] == ["depth/0000.png", "depth/0001.png"]
        from PIL import Image

        with Image.open(zf.open("depth/0002.png")) as img:
            assert img.text["depth_unit"] == "m" and float(img.text["depth_scale"]) == info["scale"]


def test_png_zip_given_range_clips_to_its_ends(tmp_path):
    depth = np.array([[[0.5, 2.0, 5.0, 20.0]]])
    info = dv.write_depth_png_sequence(depth, tmp_path / "d.zip", names=["x"], unit="relative units", lo=1.0, hi=10.0)
    decoded, _ = export.read_depth_png_zip((tmp_path / "d.zip").read_bytes())
    np.testing.assert_allclose(decoded[0, 0], [1.0, 2.0, 5.0, 10.0], atol=info["scale"])
    with pytest.raises(ValueError, match="names"):
        dv.write_depth_png_sequence(depth, tmp_path / "e.zip", names=[], unit="m")


# --------------------------------------------------------------------------------------
# Edges
# --------------------------------------------------------------------------------------


def test_argument_checks_and_edge_ranges(tmp_path):
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        dv.global_depth_range(np.ones((4, 4)))
    with pytest.raises(ValueError, match="percentiles"):
        dv.global_depth_range(np.ones((1, 4, 4)), percentiles=(90, 10))
    with pytest.raises(ValueError, match="fps"):
        dv.write_depth_video(np.ones((1, 8, 8)), tmp_path / "v.mp4", fps=0)
    with pytest.raises(ValueError, match="names"):
        dv.write_depth_video(np.ones((2, 8, 8)), tmp_path / "v.mp4", names=["one"])
    with pytest.raises(ValueError, match="No valid depth"):
        dv.write_depth_png_sequence(np.zeros((2, 4, 4)), tmp_path / "d.zip", names=["a", "b"], unit="m")
    with pytest.raises(ValueError, match="hi must be >= lo"):
        dv.write_depth_png_sequence(np.ones((1, 4, 4)), tmp_path / "d.zip", names=["a"], unit="m", lo=2.0, hi=1.0)
    with pytest.raises(ValueError, match="lo > 0"):
        dv.colorize_fixed(np.ones((2, 2)), 0.0, 1.0)
    with pytest.raises(ValueError, match="too small"):
        dv.legend_image(1.0, 2.0, "m", 20)
    assert list(tmp_path.iterdir()) == []
    # A constant depth everywhere: lo == hi sits mid-scale, in the video and the PNGs.
    lut = dv._cached_lut("Spectral")
    assert (dv.colorize_fixed(np.full((2, 2), 3.0), 3.0, 3.0) == lut[128]).all()
    info = dv.write_depth_png_sequence(np.full((2, 4, 4), 3.0), tmp_path / "c.zip", names=["a", "b"], unit="m")
    decoded, _ = export.read_depth_png_zip((tmp_path / "c.zip").read_bytes())
    assert info["scale"] == 1.0 and np.allclose(decoded, 3.0)


def test_legend_labels_for_odd_ranges_and_long_names(tmp_path):
    linear = dv._ticks(0.0, 10.0, "m", 3, False)  # depth 0 is a fine linear tick
    assert [t for _, t in linear] == ["0", "5.0 m", "10 m"] and [p for p, _ in linear] == [0.0, 0.5, 1.0]
    huge = dv._ticks(1e6, 1e7, "relative units", 3, False)
    assert [t for _, t in huge] == ["1.0e+06", "5.5e+06", "1.0e+07"]
    assert dv.legend_image(0.0, 10.0, "m", 120, inverse=False).shape[0] == 120
    info = dv.write_depth_video(
        ramp_frames(n=2, h=80, w=40),
        tmp_path / "v.mp4",
        lo=1.0,
        hi=9.0,
        names=["a/very/long/path/to/the/frame_000001.png"] * 2,
    )
    assert decode(tmp_path / "v.mp4").shape[:3] == (2, info["height"], info["width"])


def test_without_freetype_the_bitmap_font_is_used(monkeypatch):
    original = dv.ImageFont.load_default

    def no_freetype(size=None):
        if size is not None:
            raise ImportError("The _imagingft C module is not installed")
        return original()

    monkeypatch.setattr(dv.ImageFont, "load_default", no_freetype)
    assert dv.legend_image(1.0, 10.0, "m", 120).shape[0] == 120
