"""Videos in: probe (ffmpeg from imageio-ffmpeg), plan which frames to sample, and decode them by
seeking or by one scan, whichever is faster for the plan; frames come out as `Frame`s.
"""

from __future__ import annotations

import bisect
import math
import re
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from da3_core.config import Settings
from da3_core.media.filenames import _extension, _ordinal, sniff
from da3_core.media.image_io import _check_upload_size, limit_side
from da3_core.media.inputs import MIN_SIDE, VIDEO_EXTENSIONS, Frame, InputError

TARGET_FPS_RANGE = (0.1, 60.0)


DEFAULT_TARGET_FPS = 10.0


_PROBE_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class VideoInfo:
    """Facts about a video, from its header (cheap: no frame is decoded).

    Attributes:
        fps: Frames per second of the video stream (0 when unknown).
        n_frames: Number of frames: counted from the container's packets (exact for
            ordinary files), or duration x fps when that count failed (``n_frames_estimated``).
        duration_s: Duration in seconds (0 when unknown).
        width: Width of the frames as displayed (after the rotation flag is applied).
        height: Height of the frames as displayed.
        n_frames_estimated: ``n_frames`` is an estimate.
        codec: Codec name as ffmpeg reports it (``"h264"``...).
        rotation: Display rotation in degrees from the file's metadata (0, 90, 180, 270).
    """

    fps: float
    n_frames: int
    duration_s: float
    width: int
    height: int
    n_frames_estimated: bool = False
    codec: str = ""
    rotation: int = 0


@dataclass(frozen=True)
class VideoPlan:
    """Which frames of a video a run takes.

    Attributes:
        indices: Frame indices to extract, ascending.
        step: DA3's step, ``max(1, int(fps / target_fps))``.
        n_sampled: Frames the step rule picks, before the cap.
        n_dropped: Frames removed by the cap (``n_sampled - len(indices)``).
        target_fps: The requested sampling rate.
        max_frames: The cap applied.
        fps: The video's frame rate.
        n_video_frames: The video's frame count (see ``VideoInfo.n_frames``).
    """

    indices: tuple[int, ...]
    step: int
    n_sampled: int
    n_dropped: int
    target_fps: float
    max_frames: int
    fps: float
    n_video_frames: int

    @property
    def n_frames(self) -> int:
        """How many frames the run will get from this video."""
        return len(self.indices)

    @property
    def summary(self) -> str:
        """One sentence for the page, e.g. ``"will make 34 frames (every 3rd of 100 frames at 30 fps)"``."""
        every = "every frame" if self.step == 1 else f"every {_ordinal(self.step)} frame"
        fps = f"{self.fps:g} fps" if self.fps > 0 else "unknown fps"
        text = f"will make {self.n_frames} frame{'s' if self.n_frames != 1 else ''} ({every} of {self.n_video_frames} at {fps}"
        if self.n_dropped:
            text += f"; {self.n_sampled} sampled, {self.n_dropped} dropped evenly to fit the cap of {self.max_frames}"
        return text + ")"


def _ffmpeg_exe() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


class _VideoFile:
    """The video's bytes in a private temp folder (ffmpeg needs to seek), always removed."""

    def __init__(self, data: bytes, ext: str) -> None:
        self._data = data
        self._ext = ext if re.fullmatch(r"[a-z0-9]{2,5}", ext or "") else "bin"
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self.path = ""

    def __enter__(self) -> str:
        self._dir = tempfile.TemporaryDirectory(prefix="da3-video-")
        try:
            path = Path(self._dir.name) / f"video.{self._ext}"
            path.write_bytes(self._data)
        except BaseException:
            self._dir.cleanup()
            raise
        self.path = str(path)
        return self.path

    def __exit__(self, *exc: object) -> None:
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None


_RE_DURATION = re.compile(r"Duration:\s*(\d+):(\d{2}):(\d{2}(?:\.\d+)?)")


_RE_VIDEO_STREAM = re.compile(r"Stream #\d+:\d+[^\n]*?: Video: ([^\n]*)")


_RE_SIZE = re.compile(r"\b(\d{1,6})x(\d{1,6})\b")


_RE_FPS = re.compile(r"([\d.]+)(k?) fps")


_RE_TBR = re.compile(r"([\d.]+)(k?) tbr")


_RE_ROTATION = re.compile(r"rotation of (-?[\d.]+) degrees")


_RE_FRAMES = re.compile(r"frame=\s*(\d+)")


def _last_error_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for ln in reversed(lines):
        if "rror" in ln or "nvalid" in ln or "End of file" in ln:
            return ln
    return lines[-1] if lines else "no output"


def _file_size(path: str) -> int:
    try:
        return Path(path).stat().st_size
    except OSError:
        return 0


def _probe_path(name: str, path: str) -> VideoInfo:
    """Read a video file's header and count its packets with ffmpeg (no decoding)."""
    return _probe(name, path)[0]


def _probe(name: str, path: str, timeline_path: str | None = None) -> tuple[VideoInfo, str]:
    """`_probe_path`, also returning ffmpeg's log (for the container's start time).

    With ``timeline_path``, the same pass also writes every packet's timestamps and flags
    there (ffmpeg's ``framecrc`` muxer, original timestamps kept: ``-copyts``), for
    `_read_timeline`; the header and the count are read exactly as without it. If that
    pass fails, the plain pass is run instead and the file is removed.
    """
    if timeline_path is not None:
        out = ["-copyts", "-f", "framecrc", "-fs", str(_MAX_TIMELINE_BYTES), "-y", timeline_path]
    else:
        out = ["-f", "null", "-"]
    cmd = [_ffmpeg_exe(), "-nostdin", "-hide_banner", "-i", path, "-map", "0:v:0?", "-c", "copy", *out]
    try:
        proc = subprocess.run(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=_PROBE_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        if timeline_path is not None:
            Path(timeline_path).unlink(missing_ok=True)
            return _probe(name, path)
        raise InputError(
            name, f"reading the video's header took over {_PROBE_TIMEOUT_S:.0f} s; the file may be damaged."
        ) from None
    text = proc.stderr.decode("utf-8", errors="replace")
    if timeline_path is not None and (proc.returncode != 0 or _file_size(timeline_path) >= _MAX_TIMELINE_BYTES):
        # The plain pass decides what is wrong, as always; at the size cap ffmpeg stopped
        # early, so its count is short.
        Path(timeline_path).unlink(missing_ok=True)
        return _probe(name, path)
    if "Input #0" not in text:
        raise InputError(
            name,
            f"the video cannot be read; it is damaged or not a video ({_last_error_line(text)}). "
            "Re-export it as MP4 (H.264), or upload images instead.",
        )
    inputs = text.split("Stream mapping:", 1)[0].split("Output #0", 1)[0]
    stream = _RE_VIDEO_STREAM.search(inputs)
    if stream is None:
        raise InputError(
            name, "the file has no video stream (audio only or empty container). Upload a video with picture."
        )
    desc = stream.group(1)
    codec = desc.split(" ", 1)[0].strip(",")
    size = None
    for found in _RE_SIZE.finditer(desc):
        if int(found.group(1)) > 0 and int(found.group(2)) > 0:
            size = (int(found.group(1)), int(found.group(2)))
            break
    fps = 0.0
    for rx in (_RE_FPS, _RE_TBR):
        m = rx.search(desc)
        if m:
            fps = float(m.group(1)) * (1000.0 if m.group(2) else 1.0)
            break
    duration = 0.0
    m = _RE_DURATION.search(inputs)
    if m:
        duration = int(m.group(1)) * 3600 + int(m.group(2)) * 60 + float(m.group(3))
    rotation = 0
    m = _RE_ROTATION.search(inputs[stream.start() :])
    if m:
        rotation = int(round(float(m.group(1)))) % 360
    counts = _RE_FRAMES.findall(text.split("Stream mapping:", 1)[-1])
    if counts and proc.returncode == 0:
        n_frames, estimated = int(counts[-1]), False
    elif duration > 0 and fps > 0:
        n_frames, estimated = int(round(duration * fps)), True
    else:
        raise InputError(
            name,
            f"the video's frames cannot be counted; it is damaged ({_last_error_line(text)}). Re-export it as MP4 (H.264).",
        )
    if size is None:
        raise InputError(name, "the video's frame size is unknown; it is damaged. Re-export it as MP4 (H.264).")
    width, height = size
    if rotation in (90, 270):
        width, height = height, width
    if n_frames <= 0:
        raise InputError(name, "the video contains no frames. Upload a video with at least one frame.")
    info = VideoInfo(
        fps=fps,
        n_frames=n_frames,
        duration_s=duration,
        width=width,
        height=height,
        n_frames_estimated=estimated,
        codec=codec,
        rotation=rotation,
    )
    return info, inputs


def _video_ext(name: str, data: bytes) -> str:
    sniffed = sniff(data)
    if sniffed.kind == "image":
        raise InputError(name, f"this is an image ({sniffed.ext}), not a video; upload it as an image.")
    if sniffed.kind == "video" and sniffed.ext:
        return sniffed.ext
    ext = _extension(name)
    return ext if ext in VIDEO_EXTENSIONS else "bin"


def _check_video_frame_size(name: str, info: VideoInfo, settings: Settings) -> None:
    if info.width * info.height > settings.max_pixels:
        raise InputError(
            name,
            f"the video's frames are {info.width}x{info.height} = {info.width * info.height / 1e6:.1f} MP, "
            f"over the limit of {settings.max_pixels / 1e6:.1f} MP (DA3_MAX_PIXELS). Downscale the video.",
        )
    if min(info.width, info.height) < MIN_SIDE:
        raise InputError(
            name,
            f"the video's frames are only {info.width}x{info.height} pixels; each side must be at least "
            f"{MIN_SIDE} px (DA3's patch size).",
        )


def probe_video(name: str, data: bytes, settings: Settings | None = None) -> VideoInfo:
    """Read a video's frame rate, frame count, duration and size, without decoding frames.

    Cheap enough to run on every page rerun for small files (it writes the bytes to a
    temp file and lets ffmpeg demux them: ~30 ms for a 10 s 640x480 MP4); cache the
    result by content hash for large files.

    Args:
        name: Display name (for messages).
        data: The file's bytes.
        settings: Limits; defaults when None.

    Returns:
        The `VideoInfo`.

    Raises:
        InputError: Empty, too large, damaged, no video stream, no frames, frames too
            large or too small.
    """
    settings = settings or Settings()
    _check_upload_size(name, data, settings)
    with _VideoFile(data, _video_ext(name, data)) as path:
        info = _probe_path(name, path)
    _check_video_frame_size(name, info, settings)
    return info


def plan_video(info: VideoInfo, target_fps: float = DEFAULT_TARGET_FPS, max_frames: int = 64) -> VideoPlan:
    """Decide which frames a run takes from a video (pure; no file access).

    DA3's rule picks one frame every ``step = max(1, int(fps / target_fps))``; here the
    picks start at frame 0. When more than ``max_frames`` are picked they are thinned
    evenly (``linspace`` over the picks, first and last kept).

    Args:
        info: From `probe_video`.
        target_fps: Frames per second to sample, 0.1..60 (DA3's slider range).
        max_frames: The most frames to keep, >= 1.

    Returns:
        The `VideoPlan`.

    Raises:
        ValueError: ``target_fps`` or ``max_frames`` out of range.
    """
    target_fps = float(target_fps)
    lo, hi = TARGET_FPS_RANGE
    if not (lo <= target_fps <= hi):
        raise ValueError(f"target_fps must be in {lo:g}..{hi:g}, got {target_fps:g}")
    if int(max_frames) < 1:
        raise ValueError(f"max_frames must be >= 1, got {max_frames}")
    max_frames = int(max_frames)
    fps = float(info.fps) if info.fps and math.isfinite(info.fps) and info.fps > 0 else 0.0
    step = max(1, int(fps / target_fps)) if fps > 0 else 1
    n_video = max(0, int(info.n_frames))
    n_sampled = len(range(0, n_video, step))
    if n_sampled <= max_frames:
        indices = tuple(range(0, n_video, step))
    else:
        picks = np.floor(np.linspace(0, n_sampled - 1, max_frames) + 0.5).astype(np.int64)  # half up
        indices = tuple(int(p) * step for p in picks)
    return VideoPlan(
        indices=indices,
        step=step,
        n_sampled=n_sampled,
        n_dropped=n_sampled - len(indices),
        target_fps=target_fps,
        max_frames=max_frames,
        fps=fps,
        n_video_frames=n_video,
    )


def _select_filter(indices: Sequence[int]) -> str:
    """ffmpeg ``select`` filter passing exactly ``indices`` (decoded-frame numbers).

    An explicit list keeps every unneeded frame out of the pipe. ffmpeg's expression
    parser refuses deep nesting (a flat ``a+b+...`` chain fails past ~100 terms), so the
    sum is built as a balanced tree: depth ~2*log2(n) for up to 2000 indices.
    """

    def tree(lo: int, hi: int) -> str:
        if hi - lo == 1:
            return f"eq(n\\,{int(indices[lo])})"
        mid = (lo + hi) // 2
        return f"({tree(lo, mid)}+{tree(mid, hi)})"

    return "select='" + tree(0, len(indices)) + "'"


_PKT_CORRUPT, _PKT_DISCARD = 0x2, 0x4  # AV_PKT_FLAG_*; key 0x1, trusted 0x8, disposable 0x10 are fine

_SEEK_START_S = 0.04


_DECODE_S_PER_FRAME = 5e-5


_DECODE_S_PER_PIXEL = 1e-9


_MIN_FRAME_GAP_S = Fraction(1, 1000)


_MAX_TIMELINE_FRAMES = 1_000_000


_MAX_TIMELINE_BYTES = 100 * _MAX_TIMELINE_FRAMES


_RE_START = re.compile(r"Duration:[^\n]*?, start: (-?\d+(?:\.\d+)?)")


_RE_SHOWINFO = re.compile(r"\] n:\s*(\d+) pts:\s*(-?\d+) .*? s:(\d+)x(\d+) ")


_RE_SHOWINFO_TB = re.compile(r"config in time_base: (\d+)/(\d+)")


def _frame_decode_s(width: int, height: int) -> float:
    return _DECODE_S_PER_FRAME + _DECODE_S_PER_PIXEL * width * height


@dataclass(frozen=True)
class _Timeline:
    """The video stream's frames in presentation order, from its packets (no decoding).

    Attributes:
        tb: Time base of ``pts`` (seconds per unit).
        pts: Presentation timestamp of frame i (as stored in the file), strictly increasing.
        keys: Indices of the keyframes (seek points), ascending; ``keys[0] == 0``.
        start: The container's start time in seconds (``-ss`` counts from it).
        leading: Indices of frames shown before a keyframe that is stored before them (open
            GOPs); a seek to one of them may land on that keyframe, which cannot decode it,
            so runs for them start at the keyframe shown before them.
    """

    tb: Fraction
    pts: tuple[int, ...]
    keys: tuple[int, ...]
    start: Fraction
    leading: frozenset[int] = frozenset()

    def run_start(self, i: int) -> int:
        """Where a run that needs frame i seeks to."""
        return self.key_before(i) if i in self.leading else i

    def key_before(self, i: int) -> int:
        """The last keyframe at or before frame i."""
        return self.keys[bisect.bisect_right(self.keys, i) - 1]

    def seek_arg(self, i: int) -> str:
        """``-ss`` value that cuts between frames i-1 and i (i >= 1), in seconds from the start.

        Just before frame i: a quarter of a time-base unit, at least 2 us (``-ss`` is in
        microseconds), never more than half the gap to frame i-1. ffmpeg rounds the cut to
        the nearest time-base unit, so a cut half-way between frames one unit apart (AVI's
        1/fps) could land on frame i-1.
        """
        t_i, t_prev = self.pts[i] * self.tb, self.pts[i - 1] * self.tb
        margin = min((t_i - t_prev) / 2, max(self.tb / 4, Fraction(2, 1_000_000)))
        return f"{float(t_i - margin - self.start):.6f}"


def _read_timeline(timeline_path: str, probe_log: str, info: VideoInfo) -> _Timeline | None:
    """Parse the probe's ``framecrc`` file; None when it cannot drive exact seeks (see above)."""
    if info.n_frames_estimated or info.n_frames > _MAX_TIMELINE_FRAMES:
        return None
    m = _RE_START.search(probe_log)
    if m is None:
        return None
    start = Fraction(m.group(1))
    tb: Fraction | None = None
    stamps: list[tuple[int, bool]] = []  # in decode (file) order
    leading_pts: set[int] = set()
    last_key_pts: int | None = None
    try:
        with open(timeline_path, encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("#tb 0:"):
                    num, _, den = line.split(":", 1)[1].strip().partition("/")
                    tb = Fraction(int(num), int(den))
                    continue
                if not line.startswith("0,"):
                    continue
                # "0, dts, pts, duration, size, crc[, F=0xFLAGS][, side data...]"; no F=: key only
                fields = line.split(",", 6)
                pts = int(fields[2])
                rest = fields[6] if len(fields) > 6 else ""
                flags = int(rest.split("F=0x", 1)[1].split(",", 1)[0], 16) if "F=0x" in rest else 1
                if flags & (_PKT_CORRUPT | _PKT_DISCARD) or pts == -(2**63):  # or no timestamp
                    return None
                stamps.append((pts, bool(flags & 1)))
                if flags & 1:
                    last_key_pts = pts
                elif last_key_pts is not None and pts < last_key_pts:
                    leading_pts.add(pts)
                if len(stamps) > info.n_frames:
                    return None
    except (OSError, ValueError, IndexError, ZeroDivisionError):
        return None
    if tb is None or tb <= 0 or len(stamps) != info.n_frames:
        return None
    stamps.sort()
    times = tuple(p for p, _ in stamps)
    keys = tuple(i for i, (_, key) in enumerate(stamps) if key)
    if not keys or keys[0] != 0:
        return None
    if len(times) > 1 and min(b - a for a, b in zip(times, times[1:])) * tb < _MIN_FRAME_GAP_S:
        return None
    leading = frozenset(i for i, p in enumerate(times) if p in leading_pts)
    return _Timeline(tb=tb, pts=times, keys=keys, start=start, leading=leading)


def _plan_runs(
    wanted: Sequence[int], timeline: _Timeline, width: int, height: int, every_frame: bool = False
) -> list[list[int]]:
    """Group the planned frames into runs (see "Which is faster" above); the first run starts at 0.

    With ``every_frame``, each frame after the first run's gets its own seek (for tests and
    benchmarks).
    """
    seek_frames = _SEEK_START_S / _frame_decode_s(width, height)
    runs = [[int(wanted[0])]]
    for prev, i in zip(wanted, wanted[1:]):
        seek = every_frame or (i - prev) > seek_frames + (i - timeline.key_before(i))
        if seek:
            runs.append([int(i)])
        else:
            runs[-1].append(int(i))
    return runs


class _SeekMiss(Exception):
    """A run did not return the frames the timeline says it should."""


def _read_exact(stream: Any, size: int) -> bytes | None:
    buf = stream.read(size)
    return buf if len(buf) == size else None


def _decode_run(
    path: str, timeline: _Timeline, start: int, indices: Sequence[int], width: int, height: int
) -> list[bytes]:
    """Decode frames ``indices`` (ascending, all >= start), seeking to frame ``start`` first.

    Returns:
        One raw rgb24 frame per index, each checked against the timeline.

    Raises:
        _SeekMiss: ffmpeg failed, or returned other frames (timestamps) or another size.
    """
    rel = [i - start for i in indices]
    seek = ["-ss", timeline.seek_arg(start)] if start > 0 else []
    log_path = Path(path).with_name(f"run-{start}.log")
    cmd = [
        _ffmpeg_exe(),
        "-nostdin",
        "-hide_banner",
        "-nostats",
        "-copyts",
        *seek,
        "-i",
        path,
        "-map",
        "0:v:0",
        "-vf",
        _select_filter(rel) + ",showinfo",
        "-fps_mode",
        "passthrough",
        "-frames:v",
        str(len(rel)),
        "-an",
        "-sn",
        "-dn",
        "-pix_fmt",
        "rgb24",
        "-vcodec",
        "rawvideo",
        "-f",
        "image2pipe",
        "-",
    ]
    size = width * height * 3
    raws: list[bytes] = []
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log)
        try:
            for _ in rel:
                raw = _read_exact(proc.stdout, size)
                if raw is None:
                    break
                raws.append(raw)
            if proc.stdout is not None:
                proc.stdout.close()
            rc = proc.wait(timeout=_PROBE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            rc = -1
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    text = log_path.read_text(encoding="utf-8", errors="replace")
    log_path.unlink(missing_ok=True)
    shown = _RE_SHOWINFO.findall(text)
    m = _RE_SHOWINFO_TB.search(text)
    if rc != 0 or m is None or len(raws) != len(rel) or len(shown) != len(rel):
        raise _SeekMiss(f"run from frame {start}: ffmpeg exit {rc}, {len(raws)}/{len(rel)} frames")
    tb = Fraction(int(m.group(1)), int(m.group(2)))
    for k, (n, pts, w, h) in enumerate(shown):
        want = timeline.pts[indices[k]] * timeline.tb
        if int(n) != k or int(pts) * tb != want or (int(w), int(h)) != (width, height):
            raise _SeekMiss(
                f"run from frame {start}: frame {indices[k]} expected at {float(want):.6f} s "
                f"{width}x{height}, got {float(int(pts) * tb):.6f} s {w}x{h}"
            )
    return raws


def _seek_frames(
    path: str,
    timeline: _Timeline,
    runs: Sequence[Sequence[int]],
    width: int,
    height: int,
    make: Callable[[int, bytes], Frame],
    report: dict[str, Any],
) -> list[Frame]:
    """Decode every run (`_decode_run`) into frames (``make(index, raw)``).

    A missed seek is retried once from the keyframe at or before its first frame (the one
    before, if that frame is a keyframe), counted in ``report["retries"]``. Seen with open
    GOPs in MP4 (HEVC's default): the demuxer seeks by decode time, so a frame shown just
    before a keyframe but decoded after it is asked for from that keyframe, which cannot
    decode it.
    """
    frames: list[Frame] = []
    report["retries"] = 0
    for k, run in enumerate(runs):
        start = 0 if k == 0 else timeline.run_start(run[0])
        try:
            raws = _decode_run(path, timeline, start, run, width, height)
        except _SeekMiss:
            if start == 0:
                raise
            report["retries"] += 1
            earlier = timeline.key_before(start)
            if earlier == start:
                earlier = timeline.key_before(start - 1)
            raws = _decode_run(path, timeline, earlier, run, width, height)
        frames.extend(make(idx, raw) for idx, raw in zip(run, raws))
    return frames


def _video_frame(
    name: str, idx: int, raw: bytes, width: int, height: int, fps: float, digits: int, settings: Settings
) -> Frame:
    image, size_note = limit_side(np.frombuffer(raw, dtype=np.uint8).reshape(height, width, 3), settings.max_side)
    t = idx / fps if fps > 0 else None
    return Frame(
        name=f"{name} #{idx:0{digits}d}",
        image=image,
        source=name,
        note=f"video frame {idx}"
        + (f" at {t:.2f} s" if t is not None else "")
        + (f"; {size_note}" if size_note else ""),
        frame_index=idx,
        time_s=t,
    )


def _scan_frames(name: str, path: str, plan: VideoPlan, settings: Settings) -> list[Frame]:
    """The decode-everything path: one ffmpeg decodes up to the last planned frame, a ``select``
    filter passes the planned ones."""
    import imageio_ffmpeg

    wanted = plan.indices
    frames: list[Frame] = []
    digits = max(4, len(str(max(wanted[-1], 1))))
    reader = imageio_ffmpeg.read_frames(
        path,
        input_params=["-nostdin"],
        output_params=[
            "-map",
            "0:v:0",
            "-vf",
            _select_filter(wanted),
            "-fps_mode",
            "passthrough",
            "-frames:v",
            str(len(wanted)),
            "-an",
            "-sn",
            "-dn",
        ],
    )
    try:
        try:
            meta = next(reader)
        except (OSError, RuntimeError) as exc:
            raise InputError(
                name, f"the video cannot be decoded ({_short(exc)}). Re-export it as MP4 (H.264)."
            ) from None
        w, h = (int(v) for v in meta["size"])
        for k, raw in enumerate(reader):
            idx = wanted[k] if k < len(wanted) else wanted[-1]
            frames.append(_video_frame(name, idx, raw, w, h, plan.fps, digits, settings))
            if len(frames) >= len(wanted):
                break
    except RuntimeError as exc:
        raise InputError(
            name, f"the video broke off while decoding ({_short(exc)}). Re-export it as MP4 (H.264)."
        ) from None
    finally:
        reader.close()  # stops ffmpeg before the temp folder goes
    return frames


_METHODS = ("auto", "scan", "seek")


def _extract(
    name: str,
    data: bytes,
    target_fps: float,
    max_frames: int,
    settings: Settings,
    method: str = "auto",
    report: dict[str, Any] | None = None,
) -> tuple[list[Frame], VideoPlan, VideoInfo]:
    """Probe, plan and decode a video's planned frames.

    Args:
        method: ``"auto"`` (seek or scan, whichever is faster; see "Which is faster"),
            ``"scan"`` (the decode-everything path), or ``"seek"`` (a seek for every planned
            frame after the first, no fallback: a miss raises RuntimeError; for tests and
            benchmarks).
        report: If given, gets ``"method"`` (``"scan"`` or ``"seek"``, what was used) and
            ``"runs"`` (ffmpeg decoding processes started).
    """
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
    _check_upload_size(name, data, settings)
    with _VideoFile(data, _video_ext(name, data)) as path:
        timeline_path = str(Path(path).with_name("timeline.txt"))
        info, log = _probe(name, path, None if method == "scan" else timeline_path)
        _check_video_frame_size(name, info, settings)
        plan = plan_video(info, target_fps, max_frames)
        wanted = plan.indices
        timeline = None if method == "scan" else _read_timeline(timeline_path, log, info)
        runs: list[list[int]] = [list(wanted)]
        if timeline is not None:
            runs = _plan_runs(wanted, timeline, info.width, info.height, every_frame=method == "seek")
        elif method == "seek":
            raise RuntimeError(f"{name}: no usable frame timeline for seeking")
        report = {} if report is None else report
        frames: list[Frame] | None = None
        if timeline is not None and (len(runs) > 1 or method == "seek"):
            digits = max(4, len(str(max(wanted[-1], 1))))

            def make(idx: int, raw: bytes) -> Frame:
                return _video_frame(name, idx, raw, info.width, info.height, plan.fps, digits, settings)

            try:
                frames = _seek_frames(path, timeline, runs, info.width, info.height, make, report)
                report.update(method="seek", runs=len(runs))
            except _SeekMiss as exc:
                if method == "seek":
                    raise RuntimeError(f"{name}: {exc}") from None
                report["miss"] = str(exc)
        if frames is None:
            frames = _scan_frames(name, path, plan, settings)
            report.update(method="scan", runs=1)
    if not frames:
        raise InputError(
            name, "no frame could be decoded from the video; it is damaged or empty. Re-export it as MP4 (H.264)."
        )
    return frames, plan, info


def _short(exc: BaseException, limit: int = 200) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def extract_frames(
    name: str,
    data: bytes,
    target_fps: float = DEFAULT_TARGET_FPS,
    max_frames: int | None = None,
    settings: Settings | None = None,
) -> list[Frame]:
    """Decode the planned frames of a video (`plan_video`).

    Frames far apart are reached by seeking (one ffmpeg per group of nearby frames, decoding
    from the keyframe before), frames close together in one pass; either way ffmpeg pipes out
    only the planned frames (a ``select`` filter), so the whole video is never held. Both
    give the same frames, bit for bit (see "Seeking" in the source).

    Args:
        name: Display name (frames are named ``"<name> #<index>"``).
        data: The file's bytes.
        target_fps: Frames per second to sample, 0.1..60.
        max_frames: The most frames to keep; ``settings.max_frames`` when None, and never
            more than it.
        settings: Limits; defaults when None.

    Returns:
        The frames in time order, each (H, W, 3) uint8 RGB (displayed orientation), read-only.

    Raises:
        InputError: As `probe_video`, or decoding failed / produced no frame.
        ValueError: ``target_fps`` or ``max_frames`` out of range.
    """
    settings = settings or Settings()
    cap = settings.max_frames if max_frames is None else min(int(max_frames), settings.max_frames)
    frames, _, _ = _extract(name, data, target_fps, cap, settings)
    return frames
