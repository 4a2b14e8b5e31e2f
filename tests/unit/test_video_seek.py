"""Seeking to the sampled video frames (da3_core.media.inputs, "Seeking") returns exactly the frames
the decode-everything path returns: same indices, names, notes and pixels, on several codecs
and containers (B-frames, open GOPs, AVI's coarse time base, variable frame rate, rotation,
streams that start late), with the plan and the errors unchanged.

Every synthetic video carries its frame number as 12 black/white blocks along the top, so a
frame is identified from its pixels, not only compared with the old path's.
"""

from __future__ import annotations

import subprocess
import tempfile
from fractions import Fraction
from pathlib import Path

import numpy as np
import psutil
import pytest

from da3_core.config import Settings
from da3_core.media import batches, inputs, video_io
from tests.unit import inputs_corpus as corpus

BITS, BLOCK = 12, 16
W, H = BITS * BLOCK, 128
SETTINGS = Settings()


def indexed_frame(i: int, w: int = W, h: int = H) -> np.ndarray:
    """Frame i: moving colour ramps (so inter-frame coding has work) under the index blocks."""
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([(x * 2 + i * 3) % 256, (y * 2 + i * 5) % 256, (x + y + i * 7) % 256], axis=2).astype(np.uint8)
    for b in range(BITS):
        img[:BLOCK, b * BLOCK : (b + 1) * BLOCK] = 255 if (i >> b) & 1 else 0
    return img


def index_of(image: np.ndarray) -> int:
    """Read the frame number back (centre of each block, so codec ringing does not matter)."""
    return sum(1 << b for b in range(BITS) if image[3 : BLOCK - 3, b * BLOCK + 3 : (b + 1) * BLOCK - 3].mean() > 127)


def encode(
    path: Path, args: list[str], n: int = 90, fps: int = 30, vf: str | None = None, extra_inputs: tuple[str, ...] = ()
) -> Path:
    """Pipe `indexed_frame` 0..n-1 into ffmpeg with ``args`` (codec, GOP...)."""
    cmd = [
        corpus.ffmpeg_exe(),
        "-v",
        "error",
        "-y",
        "-f",
        "rawvideo",
        "-pix_fmt",
        "rgb24",
        "-s",
        f"{W}x{H}",
        "-r",
        str(fps),
        "-i",
        "-",
        *extra_inputs,
        *(["-vf", vf] if vf else []),
        *args,
        str(path),
    ]
    frames = b"".join(indexed_frame(i).tobytes() for i in range(n))
    subprocess.run(cmd, input=frames, check=True, capture_output=True, timeout=120)
    return path


X264 = ["-c:v", "libx264", "-pix_fmt", "yuv420p", "-preset", "veryfast"]
VFR = "setpts='(N*0.035+0.01*sin(N))/TB'"  # 15..45 ms apart, irregular
SINE = ("-f", "lavfi", "-i", "sine=d=3.2", "-map", "0:v", "-map", "1:a")

VIDEOS = {
    # name: (ffmpeg args, extra) -- each a case the seek must get right
    "h264.mp4": (X264 + ["-g", "10", "-bf", "0"], {}),
    "bframes.mp4": (X264 + ["-g", "12", "-bf", "3"], {}),
    "open_gop.mp4": (
        [
            "-c:v",
            "libx265",
            "-pix_fmt",
            "yuv420p",
            "-tag:v",
            "hvc1",  # x265 default: open GOP
            "-x265-params",
            "log-level=error:keyint=12:bframes=3",
        ],
        {"n": 26},
    ),
    "vp9.webm": (["-c:v", "libvpx-vp9", "-g", "10", "-deadline", "realtime", "-cpu-used", "8"], {}),
    "mpeg4.avi": (["-c:v", "mpeg4", "-g", "10", "-q:v", "3"], {}),  # time base 1/30: one unit per frame
    "vfr.mp4": (X264 + ["-g", "10", "-bf", "2", "-fps_mode", "vfr", "-video_track_timescale", "1000"], {"vf": VFR}),
    "vfr.mkv": (X264 + ["-g", "10", "-bf", "2", "-fps_mode", "vfr"], {"vf": VFR}),
    "starts_late.mp4": (
        X264 + ["-g", "12", "-bf", "2", "-c:a", "aac"],  # video from 0.5 s, audio from 0
        {"vf": "setpts=PTS+0.5/TB", "extra_inputs": SINE},
    ),
    "offset.mkv": (X264 + ["-g", "12", "-bf", "2", "-output_ts_offset", "5"], {}),  # container starts at 5 s
}


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    d = tmp_path_factory.mktemp("seek-videos")
    out = {name: encode(d / name, args, **extra).read_bytes() for name, (args, extra) in VIDEOS.items()}
    rotated = d / "rotated.mp4"
    subprocess.run(
        [
            corpus.ffmpeg_exe(),
            "-v",
            "error",
            "-y",
            "-display_rotation",
            "90",
            "-i",
            str(d / "bframes.mp4"),
            "-c",
            "copy",
            str(rotated),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    out["rotated.mp4"] = rotated.read_bytes()
    # A 30 s 640x360 clip with a 1 s GOP, the index drawn by ffmpeg (fast to make): sparse
    # sampling of it is where "auto" seeks on its own.
    boxes = [f"drawbox=x=0:y=0:w={BITS * BLOCK}:h={BLOCK}:color=black:t=fill"] + [
        f"drawbox=x={b * BLOCK}:y=0:w={BLOCK}:h={BLOCK}:color=white:t=fill:enable='eq(mod(floor(n/{2**b})\\,2)\\,1)'"
        for b in range(BITS)
    ]
    long_path = d / "long.mp4"
    subprocess.run(
        [
            corpus.ffmpeg_exe(),
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=640x360:rate=30:duration=30",
            "-vf",
            ",".join(boxes),
            *X264[:4],
            "-preset",
            "ultrafast",
            "-g",
            "30",
            str(long_path),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    out["long.mp4"] = long_path.read_bytes()
    out["index.mp4"] = corpus.index_video(d / "index.mp4").read_bytes()  # the corpus video (grey levels)
    return out


def extract(
    name: str,
    data: bytes,
    fps: float,
    cap: int,
    method: str,
    settings: Settings = SETTINGS,
) -> tuple[list[inputs.Frame], dict]:
    report: dict = {}
    frames, _, _ = video_io._extract(name, data, fps, cap, settings, method=method, report=report)
    return frames, report


def assert_same(old: list[inputs.Frame], new: list[inputs.Frame]) -> None:
    assert [f.frame_index for f in new] == [f.frame_index for f in old]
    for a, b in zip(old, new):
        assert (b.name, b.note, b.source, b.time_s) == (a.name, a.note, a.source, a.time_s)
        assert b.image.shape == a.image.shape and np.array_equal(b.image, a.image), a.name
        assert not b.image.flags.writeable


# --------------------------------------------------------------------------------------
# Same frames as the old path
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [*VIDEOS, "rotated.mp4"])
def test_a_seek_per_frame_returns_the_old_paths_frames(videos: dict[str, bytes], name: str) -> None:
    data = videos[name]
    old, r_old = extract(name, data, 4, 64, "scan")  # every 7th frame: keyframes and frames between
    new, r_new = extract(name, data, 4, 64, "seek")
    assert r_old["method"] == "scan" and r_new["method"] == "seek"
    assert r_new["runs"] == len(new) and r_new["retries"] == 0  # every seek landed first time
    assert_same(old, new)
    for f in new:
        assert index_of(np.rot90(f.image, -1) if name == "rotated.mp4" else f.image) == f.frame_index


def test_every_frame_of_an_open_gop_video(videos: dict[str, bytes]) -> None:
    """Step 1: every frame, including those shown before a keyframe but stored after it."""
    old, _ = extract("open_gop.mp4", videos["open_gop.mp4"], 30, 64, "scan")
    new, report = extract("open_gop.mp4", videos["open_gop.mp4"], 30, 64, "seek")
    assert len(new) == 26 and report["retries"] == 0
    assert_same(old, new)
    assert [index_of(f.image) for f in new] == list(range(26))


def test_the_corpus_video_and_a_downscale_note(videos: dict[str, bytes]) -> None:
    data = videos["index.mp4"]
    small = Settings(max_side=40)  # 64x48 -> 40x30: the note says so on both paths
    old, _ = extract("index.mp4", data, 10, 6, "scan", small)
    new, _ = extract("index.mp4", data, 10, 6, "seek", small)
    assert_same(old, new)
    assert "downscaled from 64x48 to 40x30" in new[1].note


# --------------------------------------------------------------------------------------
# Which path "auto" takes
# --------------------------------------------------------------------------------------


def test_auto_seeks_a_long_sparsely_sampled_video(videos: dict[str, bytes]) -> None:
    data = videos["long.mp4"]
    old, _ = extract("long.mp4", data, 0.1, 64, "scan")
    new, report = extract("long.mp4", data, 0.1, 64, "auto")
    assert report == {"method": "seek", "runs": 3, "retries": 0}  # one frame every 10 s, one seek each
    assert [f.frame_index for f in new] == [0, 300, 600]
    assert_same(old, new)
    assert [index_of(f.image) for f in new] == [0, 300, 600]


def test_auto_keeps_dense_sampling_in_one_pass(videos: dict[str, bytes]) -> None:
    _, report = extract("long.mp4", videos["long.mp4"], 10, 64, "auto")  # every 3rd frame, thinned: ~28 apart
    assert report["method"] == "scan"
    _, report = extract("bframes.mp4", videos["bframes.mp4"], 1, 64, "auto")  # 3 frames of a 3 s clip
    assert report["method"] == "scan"


def test_auto_mixes_runs_when_frames_cluster(videos: dict[str, bytes]) -> None:
    timeline = _timeline(videos["long.mp4"])
    wanted = [0, 3, 6, 450, 453, 456, 890]
    runs = video_io._plan_runs(wanted, timeline, 640, 360)
    assert runs == [[0, 3, 6], [450, 453, 456], [890]]
    assert video_io._plan_runs(wanted, timeline, 640, 360, every_frame=True) == [
        [0],
        [3],
        [6],
        [450],
        [453],
        [456],
        [890],
    ]
    assert video_io._plan_runs([0, 30, 60], timeline, 64, 48) == [[0, 30, 60]]  # tiny frames: decoding is cheap


def test_one_planned_frame_is_the_old_path(videos: dict[str, bytes]) -> None:
    _, report = extract("long.mp4", videos["long.mp4"], 0.1, 1, "auto")
    assert report["method"] == "scan"


# --------------------------------------------------------------------------------------
# Exactness guards
# --------------------------------------------------------------------------------------


def _timeline(data: bytes, ext: str = "mp4") -> video_io._Timeline:
    with video_io._VideoFile(data, ext) as path:
        tl_path = str(Path(path).with_name("t.txt"))
        info, log = video_io._probe("v", path, tl_path)
        timeline = video_io._read_timeline(tl_path, log, info)
    assert timeline is not None
    return timeline


@pytest.mark.parametrize("name", ["bframes.mp4", "vp9.webm", "mpeg4.avi", "vfr.mkv", "starts_late.mp4", "rotated.mp4"])
def test_the_probe_with_a_timeline_reads_the_same_info(videos: dict[str, bytes], name: str) -> None:
    data = videos[name]
    with video_io._VideoFile(data, video_io._video_ext(name, data)) as path:
        plain = video_io._probe_path(name, path)
        info, _ = video_io._probe(name, path, str(Path(path).with_name("t.txt")))
    assert info == plain


def test_a_timeline_over_its_size_cap_is_dropped_and_the_count_kept(
    videos: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    """ffmpeg stops writing the timeline at the cap (``-fs``), and counting with it: the plain
    probe is run again, so the frame count stays right, and the old path is used."""
    monkeypatch.setattr(video_io, "_MAX_TIMELINE_BYTES", 2000)  # ~30 of the 90 frames' lines
    data = videos["bframes.mp4"]
    with video_io._VideoFile(data, "mp4") as path:
        tl_path = str(Path(path).with_name("t.txt"))
        info, _ = video_io._probe("bframes.mp4", path, tl_path)
        assert info.n_frames == 90 and not info.n_frames_estimated and not Path(tl_path).exists()
    monkeypatch.setattr(video_io, "_SEEK_START_S", 0.0)
    assert extract("bframes.mp4", data, 2, 64, "auto")[1]["method"] == "scan"


def test_timeline_of_an_open_gop_marks_its_leading_frames(videos: dict[str, bytes]) -> None:
    timeline = _timeline(videos["open_gop.mp4"])
    assert len(timeline.pts) == 26 and timeline.keys[0] == 0 and len(timeline.keys) >= 3
    assert timeline.leading  # frames shown before a keyframe stored ahead of them
    for i in timeline.leading:
        assert timeline.run_start(i) == timeline.key_before(i) < i
    assert not _timeline(videos["bframes.mp4"]).leading  # closed GOPs have none


def test_seek_points_survive_a_coarse_time_base() -> None:
    """AVI: one time-base unit per frame. ffmpeg rounds the cut to a unit: it must round to frame i."""
    tl = video_io._Timeline(tb=Fraction(1, 30), pts=(0, 1, 2, 3), keys=(0,), start=Fraction(0))
    for i in (1, 2, 3):
        cut = Fraction(tl.seek_arg(i))
        assert round(cut * 30) == i and cut < Fraction(i, 30)
    fine = video_io._Timeline(tb=Fraction(1, 10_000_000), pts=(0, 333_333, 666_667), keys=(0,), start=Fraction(1, 2))
    cut = Fraction(fine.seek_arg(1)) + fine.start
    assert Fraction(0) < cut < Fraction(333_333, 10_000_000) and Fraction(333_333, 10_000_000) - cut <= Fraction(
        3, 1_000_000
    )


HEAD = "#tb 0: 1/30\n#media_type 0: video\n"
LOG = "  Duration: 00:00:00.10, start: 0.000000, bitrate: 1 kb/s\n"


@pytest.mark.parametrize(
    "text,log,n,why",
    [
        (HEAD + "0, 0, 0, 1, 9, 0x1\n0, 1, 1, 1, 9, 0x1, F=0x0\n", LOG, 2, None),  # usable
        (HEAD + "0, 0, 0, 1, 9, 0x1\n0, 1, 1, 1, 9, 0x1, F=0x0\n", "no start here", 2, "no start time"),
        (HEAD + "0, 0, 0, 1, 9, 0x1\n0, 1, 1, 1, 9, 0x1, F=0x4\n", LOG, 2, "discarded packet"),
        (HEAD + "0, 0, 0, 1, 9, 0x1\n0, 1, 1, 1, 9, 0x1, F=0x2\n", LOG, 2, "corrupt packet"),
        (HEAD + "0, 0, 0, 1, 9, 0x1\n0, 1, -9223372036854775808, 1, 9, 0x1, F=0x0\n", LOG, 2, "no timestamp"),
        (HEAD + "0, 0, 0, 1, 9, 0x1\n0, 1, 1, 1, 9, 0x1, F=0x0\n", LOG, 1, "more packets than the probe counted"),
        (HEAD + "0, 0, 0, 1, 9, 0x1\n", LOG, 2, "fewer packets than the probe counted"),
        ("0, 0, 0, 1, 9, 0x1\n0, 1, 1, 1, 9, 0x1, F=0x0\n", LOG, 2, "no time base"),
        (HEAD + "0, 0, zero, 1, 9, 0x1\n", LOG, 1, "unreadable line"),
        (HEAD + "0, 0, 0, 1, 9, 0x1, F=0x0\n0, 1, 1, 1, 9, 0x1\n", LOG, 2, "first frame not a keyframe"),
        ("#tb 0: 1/100000\n0, 0, 0, 1, 9, 0x1\n0, 1, 50, 1, 9, 0x1, F=0x0\n", LOG, 2, "frames 0.5 ms apart"),
        (HEAD + "0, 0, 0, 1, 9, 0x1\n0, 1, 0, 1, 9, 0x1, F=0x0\n", LOG, 2, "two frames at one time"),
    ],
)
def test_timelines_that_cannot_drive_exact_seeks_are_refused(
    tmp_path: Path, text: str, log: str, n: int, why: str | None
) -> None:
    path = tmp_path / "t.txt"
    path.write_text(text)
    info = video_io.VideoInfo(fps=30.0, n_frames=n, duration_s=0.1, width=64, height=48)
    timeline = video_io._read_timeline(str(path), log, info)
    assert (timeline is None) == (why is not None), why
    assert video_io._read_timeline(str(tmp_path / "missing.txt"), LOG, info) is None
    assert (
        video_io._read_timeline(str(path), LOG, video_io.VideoInfo(30.0, n, 0.1, 64, 48, n_frames_estimated=True))
        is None
    )


def test_a_slow_timeline_probe_falls_back_to_the_plain_one(
    videos: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    real_run = subprocess.run

    def slow(cmd, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202 - subprocess.run's arguments, passed on
        if "framecrc" in cmd:
            raise subprocess.TimeoutExpired(cmd, 1)
        return real_run(cmd, *args, **kwargs)

    monkeypatch.setattr(video_io.subprocess, "run", slow)
    data = videos["long.mp4"]
    frames, report = extract("long.mp4", data, 0.1, 64, "auto")
    assert report["method"] == "scan" and [f.frame_index for f in frames] == [0, 300, 600]


def test_a_run_that_ends_early_is_a_miss(videos: dict[str, bytes]) -> None:
    data = videos["bframes.mp4"]
    timeline = _timeline(data)
    with video_io._VideoFile(data, "mp4") as path:
        assert len(video_io._decode_run(path, timeline, 24, [24, 89], W, H)) == 2
        with pytest.raises(video_io._SeekMiss, match="run from frame 24: ffmpeg exit 0, 1/2 frames"):
            video_io._decode_run(path, timeline, 24, [24, 90], W, H)  # there is no frame 90


def test_packets_without_timestamps_take_the_old_path(tmp_path: Path) -> None:
    """MPEG-4 in AVI with B-frames stores no presentation times: no timeline, so no seeking."""
    path = encode(tmp_path / "packed.avi", ["-c:v", "mpeg4", "-g", "10", "-bf", "2", "-q:v", "3"])
    data = path.read_bytes()
    old, _ = extract("packed.avi", data, 7, 64, "scan")
    new, report = extract("packed.avi", data, 7, 64, "auto")
    assert report["method"] == "scan"
    assert_same(old, new)
    with pytest.raises(RuntimeError, match="packed.avi: no usable frame timeline"):
        extract("packed.avi", data, 7, 64, "seek")


def test_an_edit_list_cut_takes_the_old_path_with_its_notes(videos: dict[str, bytes], tmp_path: Path) -> None:
    """A stream copy cut mid-GOP: its first packets are flagged 'discard' (decoded, never shown),
    so packets and frames differ; the old path (and its 'ended early' note) is kept."""
    src = tmp_path / "b.mp4"
    src.write_bytes(videos["bframes.mp4"])
    cut = tmp_path / "cut.mp4"
    subprocess.run(
        [corpus.ffmpeg_exe(), "-v", "error", "-y", "-ss", "0.5", "-i", str(src), "-c", "copy", str(cut)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    data = cut.read_bytes()
    _, report = extract("cut.mp4", data, 30, 64, "auto")
    assert report["method"] == "scan"
    batch = batches.load_batch([("cut.mp4", data)], SETTINGS, target_fps=30, max_frames=64)
    with_scan = _batch_with_method([("cut.mp4", data)], 30, 64, "scan")
    assert batch.notes == with_scan.notes and batch.names == with_scan.names
    assert "the video ended early" in batch.notes[0]


def test_a_seek_that_misses_is_retried_from_the_keyframe_before(
    videos: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    real = video_io._Timeline.seek_arg
    missed: set[int] = set()

    def once_wrong(self: video_io._Timeline, i: int) -> str:
        if i % 15 == 0 and i not in missed:  # the planned frames' first seek only
            missed.add(i)
            return real(self, i - 1)  # lands one frame early
        return real(self, i)

    monkeypatch.setattr(video_io._Timeline, "seek_arg", once_wrong)
    data = videos["bframes.mp4"]
    old, _ = extract("bframes.mp4", data, 2, 64, "scan")
    new, report = extract("bframes.mp4", data, 2, 64, "seek")  # frames 0, 15, ... 75: each misses once
    assert report["retries"] == len(missed) == 5  # retried from the keyframe before (60 is one: from 48)
    assert_same(old, new)


@pytest.fixture
def seeks_are_free(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make "auto" seek on small clips (gaps longer than the keyframe distance)."""
    monkeypatch.setattr(video_io, "_SEEK_START_S", 0.0)


def test_a_seek_that_misses_twice_falls_back_to_the_old_path(
    videos: dict[str, bytes], seeks_are_free: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = video_io._Timeline.seek_arg
    monkeypatch.setattr(video_io._Timeline, "seek_arg", lambda self, i: real(self, i - 1) if i > 1 else real(self, i))
    data = videos["bframes.mp4"]
    old, _ = extract("bframes.mp4", data, 2, 64, "scan")
    new, report = extract("bframes.mp4", data, 2, 64, "auto")  # frames 0, 15, 30...: a seek each
    assert report["method"] == "scan" and "expected at" in report["miss"]
    assert_same(old, new)
    with pytest.raises(RuntimeError, match="bframes.mp4: run from frame"):
        extract("bframes.mp4", data, 2, 64, "seek")


def test_a_decoder_that_drops_leading_frames_is_caught_by_the_first_run(
    videos: dict[str, bytes], seeks_are_free: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If frame 0 as decoded is not the timeline's frame 0 (leading frames the decoder drops),
    every index would be off: the first run (no seek) checks frame 0 and the old path is used."""
    real = video_io._read_timeline

    def shifted(*args: object) -> video_io._Timeline | None:
        tl = real(*args)
        return tl and video_io._Timeline(tl.tb, tuple(p - 512 for p in tl.pts), tl.keys, tl.start)

    monkeypatch.setattr(video_io, "_read_timeline", shifted)
    _, report = extract("bframes.mp4", videos["bframes.mp4"], 2, 64, "auto")
    assert report["method"] == "scan" and "run from frame 0" in report["miss"]


def test_a_failing_ffmpeg_run_is_a_miss(
    videos: dict[str, bytes], seeks_are_free: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run whose ffmpeg dies or hangs counts as a miss (and is stopped), never as frames."""
    real_popen = subprocess.Popen

    class Hung(real_popen):  # type: ignore[misc, valid-type]  # a variable holding subprocess.Popen
        def wait(self, timeout=None):  # noqa: ANN001, ANN202 - Popen.wait's signature
            if "-ss" in self.args and timeout is not None:
                raise subprocess.TimeoutExpired(self.args, timeout)
            return super().wait(timeout)

    monkeypatch.setattr(video_io.subprocess, "Popen", Hung)
    _, report = extract("bframes.mp4", videos["bframes.mp4"], 2, 64, "auto")
    assert report["method"] == "scan" and "ffmpeg exit -1" in report["miss"]


# --------------------------------------------------------------------------------------
# Plan, notes, errors, cleanup: unchanged
# --------------------------------------------------------------------------------------


def _batch_with_method(files: list[tuple[str, bytes]], fps: float, cap: int, method: str) -> inputs.Batch:
    real = video_io._extract
    mp = pytest.MonkeyPatch()
    mp.setattr(batches, "_extract", lambda *a, **k: real(*a, **k, method=method))
    try:
        return batches.load_batch(files, SETTINGS, target_fps=fps, max_frames=cap)
    finally:
        mp.undo()


def test_batches_plans_and_notes_are_unchanged(videos: dict[str, bytes]) -> None:
    data = videos["long.mp4"]
    files = [("long.mp4", data), ("long.mp4", data)]
    auto = batches.load_batch(files, SETTINGS, target_fps=0.1, max_frames=5)
    scan = _batch_with_method(files, 0.1, 5, "scan")
    assert auto.notes == scan.notes and auto.names == scan.names and auto.rejected == scan.rejected == []
    assert auto.notes[0] == "long.mp4: will make 3 frames (every 300th frame of 900 at 30 fps)."
    assert auto.notes[1] == (
        "long (2).mp4: will make 2 frames (every 300th frame of 900 at 30 fps; 3 sampled, 1 dropped "
        "evenly to fit the cap of 2); only 2 of the batch's 5 frames were left for it."
    )
    assert [f.frame_index for f in auto.frames] == [0, 300, 600, 0, 600]
    assert all(np.array_equal(a, b) for a, b in zip(auto.images, scan.images))
    assert [f.note for f in auto.frames] == [f.note for f in scan.frames]
    plan = video_io.plan_video(video_io.probe_video("long.mp4", data), 0.1, 5)
    assert plan.indices == (0, 300, 600) and plan.summary in auto.notes[0]


@pytest.mark.parametrize("method", ["auto", "seek"])
def test_errors_still_name_the_file(videos: dict[str, bytes], method: str, tmp_path: Path) -> None:
    good = videos["long.mp4"]
    zero = corpus.lavfi_video(tmp_path / "zero.avi", "-frames:v", "0").read_bytes()
    cases = {
        "corrupt.mp4": (good[:32] + bytes(20_000), "damaged"),
        "truncated.mp4": (good[:400], "damaged"),
        "zero.avi": (zero, "no frames"),
        "empty.mp4": (b"", "empty"),
        "photo.mp4": (corpus.encode(corpus.gradient_rgb(), "PNG"), "image"),
    }
    for name, (data, word) in cases.items():
        with pytest.raises(inputs.InputError) as err:
            extract(name, data, 10, 10, method)
        assert str(err.value).startswith(f"{name}: ") and word in err.value.reason
    with pytest.raises(ValueError, match="method must be one of"):
        extract("long.mp4", good, 10, 10, "fastest")


def test_a_truncated_tail_gives_what_the_old_path_gives(videos: dict[str, bytes], tmp_path: Path) -> None:
    """moov up front, the last third of the data missing: both paths agree (frames or error)."""
    src = tmp_path / "long.mp4"
    src.write_bytes(videos["long.mp4"])
    fast = tmp_path / "fast.mp4"
    subprocess.run(
        [corpus.ffmpeg_exe(), "-v", "error", "-y", "-i", str(src), "-c", "copy", "-movflags", "+faststart", str(fast)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    data = fast.read_bytes()
    data = data[: len(data) * 2 // 3]
    outcomes = []
    for method in ("scan", "auto"):
        try:
            frames, report = extract("cut.mp4", data, 0.1, 64, method)
            outcomes.append(([f.name for f in frames], [f.image.tobytes() for f in frames]))
        except inputs.InputError as exc:
            outcomes.append(str(exc))
    assert outcomes[0] == outcomes[1]


def test_no_temp_files_or_ffmpeg_processes_are_left(
    videos: dict[str, bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    private_tmp = tmp_path / "tmp"
    private_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(private_tmp))
    monkeypatch.setattr(video_io, "_SEEK_START_S", 0.0)
    data = videos["bframes.mp4"]
    assert extract("bframes.mp4", data, 2, 64, "auto")[1]["method"] == "seek"
    extract("bframes.mp4", data, 10, 3, "seek")
    real = video_io._Timeline.seek_arg
    monkeypatch.setattr(video_io._Timeline, "seek_arg", lambda self, i: real(self, i - 1) if i > 1 else real(self, i))
    assert extract("bframes.mp4", data, 2, 64, "auto")[1]["method"] == "scan"  # misses, then the old path
    assert list(private_tmp.iterdir()) == []
    left = []
    for child in psutil.Process().children(recursive=True):
        try:
            if "ffmpeg" in " ".join(child.cmdline()) and child.status() != psutil.STATUS_ZOMBIE:
                left.append(child)
        except psutil.NoSuchProcess:
            pass
    assert left == []
