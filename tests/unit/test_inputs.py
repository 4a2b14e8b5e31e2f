"""Uploads -> frames: images of every kind, bad files, video, names, batches."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import psutil
import pytest
from PIL import Image

from da3_core.config import Settings
from da3_core.media import filenames, image_io, inputs, video_io
from da3_core.media.batches import load_batch
from da3_core.media.image_io import load_image
from da3_core.media.inputs import Frame, InputError
from tests.unit import inputs_corpus as corpus

REPO = Path(__file__).resolve().parents[2]


def check_frame(frame: Frame, h: int | None = None, w: int | None = None) -> None:
    assert isinstance(frame.image, np.ndarray)
    assert frame.image.dtype == np.uint8 and frame.image.ndim == 3 and frame.image.shape[2] == 3
    if h is not None:
        assert frame.image.shape[:2] == (h, w)


def refused(name: str, data: bytes, settings: Settings | None = None) -> InputError:
    with pytest.raises(InputError) as info:
        load_image(name, data, settings)
    err = info.value
    assert err.name == name
    assert name in str(err), "every error message must name the file"
    return err


# --------------------------------------------------------------------------------------
# Corpus on disk (built once, in a tmp dir)
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("input-corpus")
    good_jpeg = corpus.encode(corpus.noise_rgb(), "JPEG", quality=90)
    good_png = corpus.encode(corpus.noise_rgb(seed=1), "PNG")
    files = {
        "empty.jpg": b"",
        "text.png": b"This is a plain text file that someone renamed to .png\n" * 20,
        "truncated.jpg": good_jpeg[: len(good_jpeg) // 2],
        "truncated.png": good_png[: len(good_png) // 2],
        "good.jpg": good_jpeg,
        "good.png": good_png,
        "jpeg_named.png": good_jpeg,
        "one_pixel.png": corpus.encode(Image.new("RGB", (1, 1), (255, 0, 0)), "PNG"),
        "bomb.png": corpus.png_header_only(100_000, 100_000),
    }
    for name, data in files.items():
        (d / name).write_bytes(data)
    corpus.index_video(d / "index.mp4")
    corpus.lavfi_video(d / "zero_frames.avi", "-frames:v", "0")
    corpus.lavfi_video(d / "no_stream.mp4", "-frames:v", "0")
    valid = (d / "index.mp4").read_bytes()
    rng = np.random.default_rng(3)
    garbled = bytearray(valid[:32]) + rng.integers(0, 256, 20_000, dtype=np.uint8).tobytes()
    (d / "corrupt.mp4").write_bytes(bytes(garbled))
    (d / "truncated.mp4").write_bytes(valid[:400])
    return d


def read(corpus_dir: Path, name: str) -> bytes:
    return (corpus_dir / name).read_bytes()


# --------------------------------------------------------------------------------------
# Bad images
# --------------------------------------------------------------------------------------


def test_empty_file(corpus_dir: Path) -> None:
    err = refused("empty.jpg", read(corpus_dir, "empty.jpg"))
    assert "empty" in err.reason


def test_text_renamed_to_png(corpus_dir: Path) -> None:
    err = refused("text.png", read(corpus_dir, "text.png"))
    assert "not" in err.reason and "JPEG" in err.reason  # says what would work


@pytest.mark.parametrize("name", ["truncated.jpg", "truncated.png"])
def test_truncated_images_are_errors_not_grey(corpus_dir: Path, name: str) -> None:
    err = refused(name, read(corpus_dir, name))
    assert "truncated" in err.reason or "damaged" in err.reason


def test_truncated_image_also_fails_with_small_cut(corpus_dir: Path) -> None:
    data = read(corpus_dir, "good.jpg")
    refused("cut.jpg", data[:-200])


def test_one_pixel_image(corpus_dir: Path) -> None:
    err = refused("one_pixel.png", read(corpus_dir, "one_pixel.png"))
    assert "1x1" in err.reason and str(inputs.MIN_SIDE) in err.reason


def test_just_below_and_at_min_side() -> None:
    refused("thin.png", corpus.encode(Image.new("RGB", (200, inputs.MIN_SIDE - 1)), "PNG"))
    check_frame(
        load_image("ok.png", corpus.encode(Image.new("RGB", (inputs.MIN_SIDE, inputs.MIN_SIDE)), "PNG")), 14, 14
    )


def test_decompression_bomb_header_refused_before_decoding(corpus_dir: Path) -> None:
    # 10^10 pixels: far past Pillow's own guard; the file holds no pixel data at all.
    err = refused("bomb.png", read(corpus_dir, "bomb.png"))
    assert "too large" in err.reason


def test_max_pixels_setting_refuses_from_header_alone() -> None:
    # 3000x3000 RGB with no IDAT: if the pixels were decoded this would be a "truncated"
    # error; the limit must fire first, from the header.
    data = corpus.png_header_only(3000, 3000)
    err = refused("big.png", data, Settings(max_pixels=1_000_000))
    assert "3000x3000" in err.reason and "1.0 MP" in err.reason and "DA3_MAX_PIXELS" in err.reason
    assert "not decoded" in err.reason


def test_between_pillow_warning_and_error_our_limit_applies() -> None:
    data = corpus.png_header_only(10_000, 10_000)  # 1e8 px: Pillow only warns
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        err = refused("large.png", data, Settings(max_pixels=40_000_000))
    assert "10000x10000" in err.reason


def test_real_image_over_small_pixel_limit() -> None:
    data = corpus.encode(Image.new("RGB", (100, 100), (1, 2, 3)), "PNG")
    refused("hundred.png", data, Settings(max_pixels=64 * 64))
    check_frame(load_image("hundred.png", data, Settings(max_pixels=100 * 100)), 100, 100)


def test_over_upload_limit() -> None:
    data = b"\xff\xd8\xff" + os.urandom(int(1.5 * 1024 * 1024))
    err = refused("huge.jpg", data, Settings(max_upload_mb=1))
    assert "1.5 MB" in err.reason and "1 MB" in err.reason


# --------------------------------------------------------------------------------------
# Good images of every kind
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fmt,ext", [("JPEG", "jpg"), ("PNG", "png"), ("BMP", "bmp"), ("TIFF", "tif"), ("WEBP", "webp"), ("AVIF", "avif")]
)
def test_plain_formats(fmt: str, ext: str) -> None:
    src = corpus.gradient_rgb()
    frame = load_image(f"pic.{ext}", corpus.encode(src, fmt, **({"quality": 95} if fmt != "PNG" else {})))
    check_frame(frame, 64, 96)
    diff = np.abs(frame.image.astype(int) - np.asarray(src).astype(int)).mean()
    assert diff < 4, f"{fmt}: mean abs diff {diff}"
    assert frame.source == f"pic.{ext}" and frame.note == ""


def test_lossless_png_is_exact(corpus_dir: Path) -> None:
    frame = load_image("good.png", read(corpus_dir, "good.png"))
    assert np.array_equal(frame.image, np.asarray(corpus.noise_rgb(seed=1)))


def test_frames_are_read_only_views(corpus_dir: Path) -> None:
    frame = load_image("good.png", read(corpus_dir, "good.png"))
    with pytest.raises(ValueError):
        frame.image[0, 0, 0] = 1


def test_wrong_extension_loads_by_content_with_note(corpus_dir: Path) -> None:
    frame = load_image("jpeg_named.png", read(corpus_dir, "jpeg_named.png"))
    check_frame(frame, 150, 200)
    assert "named .png" in frame.note and "JPEG" in frame.note


def test_heic_round_trip() -> None:
    # pillow-heif 1.8 in this build can write HEIC (x265 encoder present).
    import pillow_heif

    assert pillow_heif.libheif_info()["encoders"].get("x265"), "this libheif build cannot encode HEIC"
    image_io._register_heif()
    src = corpus.gradient_rgb()
    data = corpus.encode(src, "HEIF", quality=95)
    assert data[4:12] == b"ftypheic"
    assert filenames.sniff(data).ext == "heic"
    frame = load_image("IMG_0001.HEIC", data)
    check_frame(frame, 64, 96)
    assert np.abs(frame.image.astype(int) - np.asarray(src).astype(int)).mean() < 4
    assert frame.note == ""  # .HEIC matches the HEIF content: no wrong-extension note


def test_heic_registration_is_lazy() -> None:
    code = (
        "import sys\n"
        "from da3_core.media import image_io\n"
        "assert 'pillow_heif' not in sys.modules, 'imported at module load'\n"
        "import io\nfrom PIL import Image\n"
        "b = io.BytesIO(); Image.new('RGB', (32, 32)).save(b, 'PNG')\n"
        "image_io.load_image('a.png', b.getvalue())\n"
        "assert 'pillow_heif' not in sys.modules, 'imported for a PNG'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, timeout=60)


def test_exif_orientation_6_comes_out_upright() -> None:
    # Stored 80 wide x 40 high, red top-left quadrant. Orientation 6 = rotate 90 degrees
    # clockwise to display: displayed 40 wide x 80 high, red in the top-right quadrant.
    stored = corpus.quadrants(80, 40, (255, 0, 0), (0, 0, 255))
    frame = load_image("phone.jpg", corpus.jpeg_with_orientation(stored, 6))
    check_frame(frame, 80, 40)
    img = frame.image.astype(int)
    top_right = img[5:15, 25:35].mean(axis=(0, 1))
    top_left = img[5:15, 5:15].mean(axis=(0, 1))
    assert top_right[0] > 200 and top_right[2] < 60, top_right
    assert top_left[2] > 200 and top_left[0] < 60, top_left
    assert "orientation 6" in frame.note
    # Nothing was downscaled: the note must not say so (it compared 80x40 with 40x80).
    assert "downscaled" not in frame.note, frame.note


@pytest.mark.parametrize(
    "orientation,shape,red_at", [(3, (40, 80), (35, 75)), (8, (80, 40), (75, 5)), (1, (40, 80), (5, 5))]
)
def test_other_exif_orientations(orientation: int, shape: tuple[int, int], red_at: tuple[int, int]) -> None:
    stored = corpus.quadrants(80, 40, (255, 0, 0), (0, 0, 255))
    frame = load_image("o.jpg", corpus.jpeg_with_orientation(stored, orientation))
    check_frame(frame, *shape)
    y, x = red_at
    assert frame.image[y, x, 0] > 200 and frame.image[y, x, 2] < 60


def test_16bit_grey_png_scales_proportionally() -> None:
    values = np.array([[0, 256, 1000, 32768, 40000, 65535] * 3] * 14, np.uint16)
    data = corpus.encode(Image.fromarray(values), "PNG")
    assert Image.open(__import__("io").BytesIO(data)).mode == "I;16"
    frame = load_image("depth16.png", data)
    check_frame(frame, 14, 18)
    row = frame.image[0, :6, 0].tolist()
    assert row == [0, 1, 3, 128, 156, 255]  # v >> 8: proportional, not clipped at 255
    assert np.all(frame.image[..., 0] == frame.image[..., 1]) and np.all(frame.image[..., 1] == frame.image[..., 2])
    assert "16-bit" in frame.note


def test_16bit_rgb_png_scales_proportionally() -> None:
    arr = np.zeros((16, 16, 3), np.uint16)
    arr[..., 0], arr[..., 1], arr[..., 2] = 65535, 32768, 40000
    frame = load_image("rgb16.png", corpus.png16_rgb(arr))
    assert frame.image[0, 0].tolist() == [255, 128, 156]


def test_32bit_integer_tiff() -> None:
    values = (np.arange(20 * 20).reshape(20, 20) * 100).astype(np.int32)  # 0..39900
    frame = load_image("int32.tif", corpus.encode(Image.fromarray(values, mode="I"), "TIFF"))
    check_frame(frame, 20, 20)
    assert frame.image[-1, -1, 0] == 39900 >> 8


def test_greyscale() -> None:
    grey = np.tile(np.arange(0, 256, 8, dtype=np.uint8), (20, 1))
    frame = load_image("grey.png", corpus.encode(Image.fromarray(grey, mode="L"), "PNG"))
    check_frame(frame, 20, 32)
    assert np.array_equal(frame.image[..., 0], grey) and np.array_equal(frame.image[..., 2], grey)


def test_rgba_composited_on_white() -> None:
    arr = np.zeros((20, 30, 4), np.uint8)
    arr[..., 0] = 255
    arr[:, :10, 3] = 255  # opaque red
    arr[:, 10:20, 3] = 128  # half transparent red
    arr[:, 20:, 3] = 0  # fully transparent (the hidden colour must not show)
    frame = load_image("logo.png", corpus.encode(Image.fromarray(arr, mode="RGBA"), "PNG"))
    check_frame(frame, 20, 30)
    assert frame.image[5, 5].tolist() == [255, 0, 0]
    assert frame.image[5, 15, 0] == 255 and 120 <= frame.image[5, 15, 1] <= 135
    assert frame.image[5, 25].tolist() == [255, 255, 255]
    assert "white" in frame.note


def test_opaque_rgba_has_no_note() -> None:
    frame = load_image("opaque.png", corpus.encode(Image.new("RGBA", (20, 20), (1, 2, 3, 255)), "PNG"))
    assert frame.image[0, 0].tolist() == [1, 2, 3] and frame.note == ""


def test_la_image() -> None:
    frame = load_image("la.png", corpus.encode(Image.new("LA", (20, 20), (10, 128)), "PNG"))
    assert 128 <= int(frame.image[0, 0, 0]) <= 136  # 10*a + 255*(1-a), a = 128/255
    assert len(set(frame.image[0, 0].tolist())) == 1


def test_cmyk_jpeg() -> None:
    cmyk = Image.new("CMYK", (30, 30), (0, 255, 255, 0))  # magenta + yellow = red
    data = corpus.encode(cmyk, "JPEG", quality=95)
    assert Image.open(__import__("io").BytesIO(data)).mode == "CMYK"
    frame = load_image("print.jpg", data)
    check_frame(frame, 30, 30)
    r, g, b = frame.image[15, 15].tolist()
    assert r > 230 and g < 30 and b < 30
    assert "CMYK" in frame.note


def test_palette_png() -> None:
    im = Image.new("P", (20, 20))
    im.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    px = np.zeros((20, 20), np.uint8)
    px[:, 10:] = 1
    im.putdata(px.ravel().tolist())
    frame = load_image("pal.png", corpus.encode(im, "PNG"))
    assert frame.image[0, 0].tolist() == [255, 0, 0] and frame.image[0, 15].tolist() == [0, 255, 0]


def test_palette_png_with_transparency() -> None:
    im = Image.new("P", (20, 20), 0)
    im.putpalette([255, 0, 0] + [0] * 765)
    frame = load_image("paltr.png", corpus.encode(im, "PNG", transparency=0))
    assert frame.image[0, 0].tolist() == [255, 255, 255]


def test_animated_gif_first_frame_with_note() -> None:
    data = corpus.animated_gif([(255, 0, 0), (0, 255, 0), (0, 0, 255)])
    frame = load_image("anim.gif", data)
    check_frame(frame, 24, 32)
    r, g, b = frame.image[10, 10].tolist()
    assert r > 200 and g < 50 and b < 50
    assert "3 frames" in frame.note and "first" in frame.note


# --------------------------------------------------------------------------------------
# Names
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw,expected",
    [
        ("../../etc/passwd", "passwd"),
        ("/absolute/path/photo.jpg", "photo.jpg"),
        ("C:\\Users\\me\\Desktop\\IMG 1.jpg", "IMG 1.jpg"),
        ("..", "upload"),
        ("", "upload"),
        ("dir/", "upload"),
        ("ünïcode café 写真 📷.jpg", "ünïcode café 写真 📷.jpg"),
        ("  spaced   name .png  ", "spaced name .png"),
        ("bad\x00name\x1b[31m.jpg", "badname[31m.jpg"),
        ("tab\tand\nnewline.jpg", "tab and newline.jpg"),
        ("evil\u202egpj.exe", "evilgpj.exe"),
    ],
)
def test_display_name(raw: str, expected: str) -> None:
    assert filenames.display_name(raw) == expected


def test_long_names_are_shortened_keeping_the_extension() -> None:
    name = filenames.display_name("x" * 500 + ".jpeg")
    assert len(name) <= inputs.MAX_NAME_CHARS and name.endswith(".jpeg") and "\u2026" in name


def test_duplicate_names_get_suffixes() -> None:
    got = filenames.unique_display_names(["a.jpg", "a.jpg", "dir/a.jpg", "a (2).jpg", "b", "b"])
    assert got == ["a.jpg", "a (2).jpg", "a (3).jpg", "a (2) (2).jpg", "b", "b (2)"]


# --------------------------------------------------------------------------------------
# Video
# --------------------------------------------------------------------------------------


def test_probe_video(corpus_dir: Path) -> None:
    info = video_io.probe_video("index.mp4", read(corpus_dir, "index.mp4"))
    assert info.fps == pytest.approx(30.0)
    assert info.n_frames == 90 and not info.n_frames_estimated
    assert info.duration_s == pytest.approx(3.0, abs=0.05)
    assert (info.width, info.height) == (64, 48)
    assert info.codec == "h264"


@pytest.mark.parametrize(
    "target_fps,cap,expected",
    [
        (10, 64, list(range(0, 90, 3))),  # step 3
        (30, 64, None),  # step 1: 90 sampled, capped to 64
        (1, 64, [0, 30, 60]),  # step 30
        (7, 64, list(range(0, 90, 4))),  # step int(30/7) = 4
        (0.1, 64, [0]),  # step 300 > n: just the first frame
        (60, 64, None),  # step max(1, 0) = 1
        (10, 5, [0, 21, 45, 66, 87]),  # 30 sampled, thinned evenly to 5
        (10, 1, [0]),
    ],
)
def test_plan_video_indices(target_fps: float, cap: int, expected: list[int] | None) -> None:
    info = video_io.VideoInfo(fps=30.0, n_frames=90, duration_s=3.0, width=64, height=48)
    got = list(video_io.plan_video(info, target_fps, cap).indices)
    plan = video_io.plan_video(info, target_fps, cap)
    if expected is None:  # step 1, 90 frames capped to 64
        assert len(got) == 64 and got[0] == 0 and got[-1] == 89 and plan.n_dropped == 26
        assert len(set(got)) == 64 and got == sorted(got)
    else:
        assert got == expected
    assert plan.step == max(1, int(30.0 / target_fps))
    assert plan.n_sampled - plan.n_dropped == len(got)
    assert f"will make {len(got)} frame" in plan.summary


def test_plan_rejects_out_of_range_parameters() -> None:
    info = video_io.VideoInfo(fps=30.0, n_frames=90, duration_s=3.0, width=64, height=48)
    for bad in (0.0, 0.05, 61, -1):
        with pytest.raises(ValueError):
            video_io.plan_video(info, bad, 10)
    with pytest.raises(ValueError):
        video_io.plan_video(info, 10, 0)


def test_plan_summary_mentions_drops() -> None:
    info = video_io.VideoInfo(fps=30.0, n_frames=300, duration_s=10.0, width=64, height=48)
    plan = video_io.plan_video(info, 10, 64)
    assert plan.n_frames == 64 and plan.n_sampled == 100 and plan.n_dropped == 36
    assert "36 dropped" in plan.summary and "every 3rd frame" in plan.summary


@pytest.mark.parametrize("target_fps,cap", [(10, 64), (1, 64), (30, 64), (10, 5), (0.1, 64)])
def test_extract_frames_are_the_planned_ones(corpus_dir: Path, target_fps: float, cap: int) -> None:
    data = read(corpus_dir, "index.mp4")
    info = video_io.probe_video("index.mp4", data)
    expected = list(video_io.plan_video(info, target_fps, cap).indices)
    frames = video_io.extract_frames("index.mp4", data, target_fps, cap)
    assert [f.frame_index for f in frames] == expected
    for f in frames:
        check_frame(f, 48, 64)
        assert abs(corpus.frame_index_from_grey(f.image) - f.frame_index) <= 1, (f.frame_index, f.image.mean())
        assert f.source == "index.mp4" and f.name.startswith("index.mp4 #")
        assert f.time_s == pytest.approx(f.frame_index / 30.0)
    assert len({f.name for f in frames}) == len(frames)


def test_extract_default_cap_is_settings_max_frames(corpus_dir: Path) -> None:
    data = read(corpus_dir, "index.mp4")
    frames = video_io.extract_frames("index.mp4", data, 30, settings=Settings(max_frames=7))
    assert len(frames) == 7 and frames[0].frame_index == 0 and frames[-1].frame_index == 89
    assert len(video_io.extract_frames("index.mp4", data, 30, 50, settings=Settings(max_frames=7))) == 7


@pytest.mark.parametrize(
    "name,words",
    [
        ("corrupt.mp4", ("damaged",)),
        ("truncated.mp4", ("damaged",)),
        ("zero_frames.avi", ("no frames",)),
        ("no_stream.mp4", ("no video stream",)),
    ],
)
def test_bad_videos(corpus_dir: Path, name: str, words: tuple[str, ...]) -> None:
    data = read(corpus_dir, name)
    for call in (lambda: video_io.probe_video(name, data), lambda: video_io.extract_frames(name, data, 10, 10)):
        with pytest.raises(InputError) as info:
            call()
        assert name in str(info.value)
        assert all(w in info.value.reason for w in words), info.value.reason


def test_video_over_upload_limit(corpus_dir: Path) -> None:
    data = read(corpus_dir, "index.mp4")
    limit = Settings(max_upload_mb=1)
    big = data + b"\x00" * (1024 * 1024)
    with pytest.raises(InputError, match="over the upload limit"):
        video_io.probe_video("big.mp4", big, limit)


def test_video_frames_over_pixel_limit(corpus_dir: Path) -> None:
    with pytest.raises(InputError, match="DA3_MAX_PIXELS"):
        video_io.probe_video("index.mp4", read(corpus_dir, "index.mp4"), Settings(max_pixels=64 * 47))


def test_rotated_video_comes_out_upright(tmp_path: Path, corpus_dir: Path) -> None:
    rotated = tmp_path / "rotated.mp4"
    subprocess.run(
        [
            corpus.ffmpeg_exe(),
            "-v",
            "error",
            "-y",
            "-display_rotation",
            "90",
            "-i",
            str(corpus_dir / "index.mp4"),
            "-c",
            "copy",
            str(rotated),
        ],
        check=True,
        timeout=60,
    )
    data = rotated.read_bytes()
    info = video_io.probe_video("rotated.mp4", data)
    assert info.rotation in (90, 270) and (info.width, info.height) == (48, 64)
    frames = video_io.extract_frames("rotated.mp4", data, 1, 10)
    assert [f.image.shape for f in frames] == [(64, 48, 3)] * 3


def test_no_temp_files_or_ffmpeg_processes_leak(
    corpus_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    private_tmp = tmp_path / "tmp"
    private_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(private_tmp))
    good = read(corpus_dir, "index.mp4")
    video_io.probe_video("index.mp4", good)
    video_io.extract_frames("index.mp4", good, 10, 64)
    video_io.extract_frames("index.mp4", good, 1, 1)  # stops early: ffmpeg must be stopped too
    for name in ("corrupt.mp4", "zero_frames.avi", "no_stream.mp4"):
        with pytest.raises(InputError):
            video_io.extract_frames(name, read(corpus_dir, name), 10, 10)
    load_batch([("index.mp4", good), ("corrupt.mp4", read(corpus_dir, "corrupt.mp4"))], Settings())
    assert list(private_tmp.iterdir()) == []
    ffmpegs = []
    for child in psutil.Process().children(recursive=True):
        try:
            if "ffmpeg" in " ".join(child.cmdline()) and child.status() != psutil.STATUS_ZOMBIE:
                ffmpegs.append(child)
        except psutil.NoSuchProcess:  # exited while we looked: fine
            pass
    assert ffmpegs == []


def test_image_named_like_a_video_is_read_as_image() -> None:
    frame = load_image("clip.mp4", corpus.encode(corpus.gradient_rgb(), "PNG"))
    assert "named .mp4" in frame.note


def test_video_content_in_extract_but_image_given() -> None:
    with pytest.raises(InputError, match="image"):
        video_io.probe_video("x.mp4", corpus.encode(corpus.gradient_rgb(), "PNG"))


# --------------------------------------------------------------------------------------
# Sniffing
# --------------------------------------------------------------------------------------


def test_sniff_signatures(corpus_dir: Path) -> None:
    assert filenames.sniff(read(corpus_dir, "good.jpg")) == filenames.Sniffed("image", "jpg")
    assert filenames.sniff(read(corpus_dir, "good.png")) == filenames.Sniffed("image", "png")
    assert filenames.sniff(read(corpus_dir, "index.mp4")) == filenames.Sniffed("video", "mp4")
    assert filenames.sniff(read(corpus_dir, "zero_frames.avi")) == filenames.Sniffed("video", "avi")
    assert filenames.sniff(corpus.encode(corpus.gradient_rgb(), "WEBP")).ext == "webp"
    assert filenames.sniff(corpus.encode(corpus.gradient_rgb(), "AVIF")).ext == "avif"
    assert filenames.sniff(b"hello") == filenames.Sniffed(None, None)
    assert filenames.sniff(b"") == filenames.Sniffed(None, None)


# --------------------------------------------------------------------------------------
# Batches
# --------------------------------------------------------------------------------------


class FakeUpload:
    """Stands in for Streamlit's UploadedFile."""

    def __init__(self, name: str, data: bytes) -> None:
        self.name = name
        self._data = data

    def getvalue(self) -> bytes:
        return self._data


def test_batch_mixing_good_and_bad(corpus_dir: Path) -> None:
    files = [
        FakeUpload(n, read(corpus_dir, n))
        for n in (
            "good.jpg",
            "empty.jpg",
            "text.png",
            "good.png",
            "one_pixel.png",
            "truncated.jpg",
            "index.mp4",
            "corrupt.mp4",
            "bomb.png",
        )
    ]
    batch = load_batch(files, Settings(), target_fps=10, max_frames=64)
    assert [f.name for f in batch.frames[:2]] == ["good.jpg", "good.png"]
    video = [f for f in batch.frames if f.source == "index.mp4"]
    assert len(video) == 30 and len(batch.frames) == 32
    assert sorted(r.name for r in batch.rejected) == sorted(
        ["empty.jpg", "text.png", "one_pixel.png", "truncated.jpg", "corrupt.mp4", "bomb.png"]
    )
    for r in batch.rejected:
        assert r.reason.startswith(r.name + ":"), r.reason
        assert len(r.reason) > len(r.name) + 20  # says what is wrong and what to do
    assert any("index.mp4" in n and "will make 30 frames" in n for n in batch.notes)
    assert batch.names == tuple(f.name for f in batch.frames) and len(batch.images) == 32


def test_batch_frame_cap_on_images(corpus_dir: Path) -> None:
    data = read(corpus_dir, "good.png")
    batch = load_batch([(f"p{i}.png", data) for i in range(5)], Settings(max_frames=3))
    assert [f.name for f in batch.frames] == ["p0.png", "p1.png", "p2.png"]
    assert [r.name for r in batch.rejected] == ["p3.png", "p4.png"]
    for r in batch.rejected:
        assert r.name in r.reason and "3 frames" in r.reason and "cap" in r.reason


def test_batch_max_frames_never_exceeds_settings(corpus_dir: Path) -> None:
    data = read(corpus_dir, "good.png")
    batch = load_batch([(f"p{i}.png", data) for i in range(4)], Settings(max_frames=2), max_frames=100)
    assert len(batch.frames) == 2


def test_batch_video_gets_what_is_left(corpus_dir: Path) -> None:
    img, vid = read(corpus_dir, "good.png"), read(corpus_dir, "index.mp4")
    batch = load_batch([("a.png", img), ("b.png", img), ("v.mp4", vid), ("c.png", img)], Settings(), 10, max_frames=10)
    assert [f.name for f in batch.frames[:2]] == ["a.png", "b.png"]
    assert len(batch.frames) == 10 and batch.frames[2].frame_index == 0 and batch.frames[-1].frame_index == 87
    assert [r.name for r in batch.rejected] == ["c.png"]
    assert any("only 8 of the batch's 10 frames" in n for n in batch.notes)


def test_batch_names_are_sanitised_and_unique(corpus_dir: Path) -> None:
    data = read(corpus_dir, "good.png")
    batch = load_batch(
        [("../../etc/x.png", data), ("/abs/x.png", data), ("x.png", data), ("ü ñ.png", data)], Settings()
    )
    assert [f.name for f in batch.frames] == ["x.png", "x (2).png", "x (3).png", "ü ñ.png"]
    assert all("/" not in f.name and "\\" not in f.name for f in batch.frames)


def test_batch_bad_parameters_raise() -> None:
    with pytest.raises(ValueError):
        load_batch([], Settings(), target_fps=0)
    with pytest.raises(ValueError):
        load_batch([], Settings(), max_frames=0)
    assert load_batch([], Settings()).frames == []


def test_parent_process_stays_free_of_torch_and_cv2(corpus_dir: Path) -> None:
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from da3_core.media import batches\n"
        "from da3_core.runs import workspace\n"
        f"d = Path({str(corpus_dir)!r})\n"
        "b = batches.load_batch([(p.name, p.read_bytes()) for p in sorted(d.iterdir())], None)\n"
        "assert b.frames\n"
        "bad = [m for m in ('torch', 'depth_anything_3', 'cv2') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, timeout=120)


def test_frame_validates_its_image() -> None:
    with pytest.raises(ValueError):
        Frame("x", np.zeros((4, 4), np.uint8), "x")
    with pytest.raises(ValueError):
        Frame("x", np.zeros((4, 4, 3), np.float32), "x")


def test_large_images_are_downscaled_to_max_side():
    import io as _io

    import numpy as _np
    from PIL import Image as _Image

    from da3_core.config import Settings
    from da3_core.media.image_io import load_image

    big = _np.zeros((1200, 1600, 3), _np.uint8)
    big[:, :800] = (255, 0, 0)
    for fmt in ("JPEG", "PNG"):
        buf = _io.BytesIO()
        _Image.fromarray(big).save(buf, format=fmt)
        frame = load_image(f"big.{fmt.lower()}", buf.getvalue(), Settings(max_side=400))
        assert frame.image.shape == (300, 400, 3), fmt
        assert "downscaled from 1600x1200 to 400x300" in frame.note
        assert frame.image[150, 50, 0] > 200 and frame.image[150, 350, 0] < 60  # left red, right black
    small = load_image("small.png", buf.getvalue(), Settings(max_side=4000))
    assert small.image.shape == (1200, 1600, 3) and "downscaled" not in small.note
