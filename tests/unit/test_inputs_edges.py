"""Less common inputs: unusual pixel formats, container signatures, names, and failures that
must reject one file without sinking the batch."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from da3_core.config import load_settings
from da3_core.media import batches, filenames, image_io, inputs, video_io
from tests.conftest import png_bytes

SETTINGS = load_settings({})


def _tiff(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="TIFF")
    return buf.getvalue()


@pytest.mark.parametrize(
    ("array", "note"),
    [
        (np.arange(64 * 64, dtype=np.int32).reshape(64, 64) * 16, "16-bit greyscale scaled to 8 bits"),
        (
            np.arange(64 * 64, dtype=np.int32).reshape(64, 64) * 100_000 - 5,
            "32-bit values -5..409499995 stretched to 0..255",
        ),
        (np.linspace(0.0, 1.0, 64 * 64, dtype=np.float32).reshape(64, 64), "float values 0..1 scaled to 0..255"),
        (np.linspace(-2.0, 3.0, 64 * 64, dtype=np.float32).reshape(64, 64), "float values -2..3 stretched to 0..255"),
    ],
)
def test_wide_greyscale_becomes_8_bit_rgb_with_a_note(array, note):
    frame = image_io.load_image("scan.tif", _tiff(Image.fromarray(array)), SETTINGS)
    assert frame.image.dtype == np.uint8 and frame.image.shape == (64, 64, 3)
    assert frame.height == 64 and frame.width == 64
    assert note in frame.note
    assert frame.image[..., 0].min() == 0 and frame.image[..., 0].max() >= 250  # the range is used


def test_a_flat_float_image_is_black_not_an_error():
    frame = image_io.load_image("flat.tif", _tiff(Image.fromarray(np.full((64, 64), 7.5, np.float32))), SETTINGS)
    assert not frame.image.any()


def test_cmyk_jpeg_is_converted_with_a_note():
    buf = io.BytesIO()
    Image.new("CMYK", (64, 48), (0, 255, 255, 0)).save(buf, format="JPEG")
    frame = image_io.load_image("print.jpg", buf.getvalue(), SETTINGS)
    assert "CMYK converted to RGB" in frame.note
    r, g, b = frame.image[10, 10].astype(int)
    assert r > 200 and g < 60 and b < 60  # cyan 0, magenta and yellow full: red


def test_frames_refuse_non_rgb_arrays():
    with pytest.raises(ValueError, match="must be \\(H, W, 3\\) uint8"):
        inputs.Frame("x.png", np.zeros((4, 4), np.uint8), "upload")


def test_long_names_are_cut_keeping_a_short_extension():
    assert filenames.display_name("a" * 300 + ".jpeg", max_chars=20) == "a" * 14 + "\u2026.jpeg"
    cut = filenames.display_name("b" * 300 + ".averyverylongext", max_chars=20)
    assert len(cut) == 20 and cut.endswith("\u2026")
    assert filenames.display_name("c" * 300, max_chars=10) == "c" * 9 + "\u2026"


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"\x00\x00\x00\x18ftypavif\x00\x00\x00\x00mif1avif", ("image", "avif")),
        (b"\x00\x00\x00\x18ftypmif1\x00\x00\x00\x00mif1avif", ("image", "avif")),  # generic brand, AV1 only
        (b"\x00\x00\x00\x18ftypmif1\x00\x00\x00\x00mif1heic", ("image", "heic")),
        (b"\x00\x00\x00\x14ftypqt  \x00\x00\x00\x00qt  ", ("video", "mov")),
        (b"\x00\x00\x00\x08wide\x00\x00\x00\x00mdat", ("video", "mov")),
        (b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01webm", ("video", "webm")),
        (b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01matroska", ("video", "mkv")),
        (b"RIFF\x00\x00\x00\x00AVI LIST", ("video", "avi")),
        (b"just text", (None, None)),
    ],
)
def test_sniff_container_signatures(head, expected):
    got = filenames.sniff(head)
    assert (got.kind, got.ext) == expected


def test_an_image_offered_as_a_video_is_refused_by_name():
    with pytest.raises(inputs.InputError, match="this is an image \\(png\\), not a video"):
        video_io.probe_video("holiday.mp4", png_bytes(1), SETTINGS)


@pytest.mark.parametrize(
    ("step", "word"),
    [
        (1, "every frame"),
        (2, "every 2nd"),
        (3, "every 3rd"),
        (11, "every 11th"),
        (12, "every 12th"),
        (21, "every 21st"),
        (22, "every 22nd"),
        (113, "every 113th"),
    ],
)
def test_plan_summary_ordinals(step, word):
    info = video_io.VideoInfo(fps=float(step), n_frames=step * 10, duration_s=10.0, width=64, height=64)
    plan = video_io.plan_video(info, target_fps=1.0, max_frames=100)
    assert plan.step == step and word in plan.summary


def test_plan_summary_with_unknown_fps_and_a_cap():
    info = video_io.VideoInfo(fps=0.0, n_frames=50, duration_s=0.0, width=64, height=64)
    plan = video_io.plan_video(info, target_fps=1.0, max_frames=5)
    assert "unknown fps" in plan.summary and "dropped evenly to fit the cap of 5" in plan.summary


def test_one_bad_file_never_sinks_the_batch(monkeypatch):
    good = png_bytes(2)
    real = image_io.load_image

    def flaky(name, data, settings=None):
        if name == "huge.png":
            raise MemoryError
        if name == "odd.png":
            raise RuntimeError("decoder exploded")
        return real(name, data, settings)

    monkeypatch.setattr(batches, "load_image", flaky)
    batch = batches.load_batch([("ok.png", memoryview(good)), ("huge.png", good), ("odd.png", good)], SETTINGS)
    assert [f.name for f in batch.frames] == ["ok.png"]
    reasons = {r.name: r.reason for r in batch.rejected}
    assert "not enough memory" in reasons["huge.png"]
    assert "could not be read (RuntimeError: decoder exploded)" in reasons["odd.png"]


def test_an_upload_object_that_gives_no_bytes_is_a_programming_error():
    class Upload:
        name = "weird.png"

        def getvalue(self):
            return "not bytes"

    with pytest.raises(TypeError, match="upload 'weird.png': expected bytes, got str"):
        batches.load_batch([Upload()], SETTINGS)


def test_example_folders_with_broken_metadata_are_skipped(tmp_path):
    good = tmp_path / "good"
    good.mkdir()
    Image.new("RGB", (32, 32)).save(good / "0.png")
    view = {"file": "0.png", "extrinsics": np.eye(3, 4).tolist(), "intrinsics": np.eye(3).tolist()}
    (good / "scene.json").write_text(json.dumps({"title": "Good", "frames": [view]}))
    for name, meta in {
        "missing-file": {"frames": [{**view, "file": "9.png"}]},
        "bad-name": {"frames": [{**view, "file": "../x.png"}]},
        "no-frames": {"frames": []},
        "not-json": None,
    }.items():
        folder = tmp_path / name
        folder.mkdir()
        (folder / "scene.json").write_text("{" if meta is None else json.dumps(meta))
    assert [e.key for e in batches.list_examples(tmp_path)] == ["good"]
    assert batches.list_examples(tmp_path / "nowhere") == []
