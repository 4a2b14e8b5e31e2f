"""Long videos: sampling a few frames by seeking vs decoding everything up to the last one.

Run: ``.venv/bin/python -m benchmarks.bench_video``. The video is a synthetic 10-minute
1280x720 30 fps H.264 MP4 (ffmpeg's ``testsrc2``, libx264 ultrafast, CRF 40 to stay under the
200 MB upload limit, a keyframe every 2 s as phones do), made once (about a minute) and kept in
``test-artifacts/bench-video/``. Both paths get the same upload bytes and plan: 10 frames spread
over the whole video (0.1 fps, the slider's lowest, capped at 10 frames: frames 0 ... 17700),
through ``video_io._extract`` as the page calls it (temp file, probe, decode).

* ``video_sample_10_of_600s_s``: the new path (``method="auto"``, which seeks here), median.
* ``video_scan_10_of_600s_s``: the old decode-everything path (``method="scan"``).
* ``video_seek_speedup``: old / new, measured side by side in this run (goal >= 10).

The two paths' frames are checked to be identical, pixel for pixel.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from da3_core.config import Settings  # noqa: E402 - run as a script: the repo root joins sys.path first
from da3_core.media import (
    inputs,  # noqa: E402 - run as a script: the repo root joins sys.path first
    video_io,  # noqa: E402 - run as a script: the repo root joins sys.path first
)

GOALS = {"video_seek_speedup": 10.0}

CACHE = Path(__file__).resolve().parents[1] / "test-artifacts" / "bench-video"
VIDEO = CACHE / "testsrc2_1280x720_30fps_600s_g60_crf40.mp4"
TARGET_FPS, MAX_FRAMES = 0.1, 10


def long_video() -> Path:
    """The 10-minute 720p video, made on first use."""
    if VIDEO.exists():
        return VIDEO
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = VIDEO.with_suffix(".part.mp4")
    print(f"making {VIDEO.name} (once, about a minute) ...", file=sys.stderr, flush=True)
    subprocess.run(
        [
            video_io._ffmpeg_exe(),
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=1280x720:rate=30:duration=600",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-crf",
            "40",
            "-g",
            "60",
            "-pix_fmt",
            "yuv420p",
            str(tmp),
        ],
        check=True,
        timeout=1800,
    )
    tmp.replace(VIDEO)
    return VIDEO


def _timed(data: bytes, method: str) -> tuple[float, list[inputs.Frame], dict]:
    report: dict = {}
    t0 = time.perf_counter()
    frames, _, _ = video_io._extract("long.mp4", data, TARGET_FPS, MAX_FRAMES, Settings(), method=method, report=report)
    return time.perf_counter() - t0, frames, report


def run(repeats: int = 1) -> dict[str, float]:
    """Time both paths on the same bytes, interleaved: new, old, new (x ``repeats``)."""
    data = long_video().read_bytes()
    new_times: list[float] = []
    old_times: list[float] = []
    t, new_frames, report = _timed(data, "auto")
    assert report["method"] == "seek", report
    new_times.append(t)
    for _ in range(repeats):
        t, old_frames, _ = _timed(data, "scan")
        old_times.append(t)
        t, _, _ = _timed(data, "auto")
        new_times.append(t)
    assert [f.frame_index for f in new_frames] == [f.frame_index for f in old_frames] and len(new_frames) == MAX_FRAMES
    assert all(
        np.array_equal(a.image, b.image) and a.name == b.name and a.note == b.note
        for a, b in zip(new_frames, old_frames)
    ), "seek and scan frames differ"
    new, old = statistics.median(new_times), statistics.median(old_times)
    return {
        "video_sample_10_of_600s_s": new,
        "video_scan_10_of_600s_s": old,
        "video_seek_speedup": old / new,
        "video_upload_mb": len(data) / 1e6,
    }


if __name__ == "__main__":
    results = run()
    print(f"{'metric':<28}{'value':>12}{'goal':>10}")
    for key, value in results.items():
        goal = GOALS.get(key)
        mark = "" if goal is None else ("  ok" if value >= goal else "  MISSED")
        print(f"{key:<28}{value:>12.3f}{'' if goal is None else f'{goal:>10.2f}'}{mark}")
