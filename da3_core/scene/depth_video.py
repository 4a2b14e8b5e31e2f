"""Depth of many frames as one colour-mapped video and as 16-bit PNGs, with ONE depth scale.

Chunked runs keep their (N, H, W) depth on disk as memory-mapped ``.npy``; everything here
reads it one frame at a time (``depth[i]``), so memory stays flat whatever N is. Unlike
`da3_core.scene.export.colorize_depth` and `da3_core.scene.export.depth_png_zip_bytes`, which stretch each
view over its own range, every frame shares one range, so a colour (or a PNG code) means
the same depth in every frame of the video.

Colours: near = start of the colour map (red for Spectral), as DA3's depth pictures; with
``inverse`` the colour is spaced in inverse depth (1/d), which spreads the near field out.
Invalid depth (not finite, or <= 0; see docs/CONVENTIONS.md) is black.
"""

from __future__ import annotations

import functools
import json
import math
import os
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from PIL.PngImagePlugin import PngInfo

from da3_core.scene import export

VIDEO_FILENAME = "depth_video.mp4"
"""File name of `write_depth_video`'s output in a run folder's ``exports/``."""

PNG_SEQUENCE_FILENAME = "depth_png16.zip"
"""File name of `write_depth_png_sequence`'s output in a run folder's ``exports/``."""

PNG_ENCODING = "depth = value * scale + offset for value > 0; value 0 = no valid depth"


# --------------------------------------------------------------------------------------
# Frames of an array-like, one at a time
# --------------------------------------------------------------------------------------


def _shape(depth: Any) -> tuple[int, int, int]:
    """(N, H, W) of ``depth`` without reading it (anything with ``.shape`` and ``[i]``)."""
    shape = tuple(int(s) for s in np.shape(depth))  # np.shape reads .shape when there is one
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"depth must be (N, H, W) with N, H, W >= 1, got shape {shape}")
    return shape


def _frame(depth: Any, i: int) -> np.ndarray:
    """Frame ``i`` as (H, W) float64; only this frame is read from a memmap."""
    return np.asarray(depth[i], dtype=np.float64)


def _valid(d: np.ndarray) -> np.ndarray:
    return np.isfinite(d) & (d > 0)


# --------------------------------------------------------------------------------------
# One range for all frames
# --------------------------------------------------------------------------------------


def global_depth_range(
    depth: Any,
    *,
    percentiles: tuple[float, float] = (2.0, 98.0),
    sample_pixels: int = 200_000,
    seed: int = 0,
) -> tuple[float, float]:
    """One depth range for all frames: percentiles of a subsample of valid depth.

    Each frame gives the same number of sampled pixel positions (about
    ``sample_pixels / N``, all pixels when a frame has fewer), drawn from one seeded
    generator, so the result is deterministic; the invalid ones are then dropped, so a frame
    weighs in proportion to its valid pixels, as in percentiles over all pixels. Memory is
    one frame plus the sample, whatever N is.

    Args:
        depth: (N, H, W) z-depth, any array-like with ``.shape`` and ``[i]`` (a memmap is
            read one frame at a time).
        percentiles: (low, high) percentiles in 0..100.
        sample_pixels: Pixels sampled over all frames (at least one per frame).
        seed: Seed of the sample.

    Returns:
        (lo, hi) in depth units, 0 < lo <= hi.

    Raises:
        ValueError: No pixel of the sample is valid (finite and > 0).
    """
    n, h, w = _shape(depth)
    p_lo, p_hi = (float(p) for p in percentiles)
    if not 0.0 <= p_lo <= p_hi <= 100.0:
        raise ValueError(f"percentiles must satisfy 0 <= low <= high <= 100, got {percentiles}")
    per_frame = min(h * w, max(1, math.ceil(int(sample_pixels) / n)))
    rng = np.random.default_rng(seed)
    sample = np.empty(n * per_frame, dtype=np.float64)  # filled in place: no list of pieces to join
    filled = 0
    for i in range(n):
        if per_frame == h * w:
            values = _frame(depth, i).reshape(-1)
        else:
            # Sorted positions read a memmap in order; fancy indexing reads only them.
            idx = np.sort(rng.choice(h * w, per_frame, replace=False))
            values = np.asarray(depth[i]).reshape(-1)[idx].astype(np.float64)
        values = values[_valid(values)]
        sample[filled : filled + values.size] = values
        filled += values.size
    if filled == 0:
        raise ValueError("No valid depth (finite and > 0) in any frame: cannot choose a depth range")
    lo, hi = np.percentile(sample[:filled], [p_lo, p_hi], overwrite_input=True)  # sorts in place, no copy
    return float(lo), float(hi)


def _full_range(depth: Any) -> tuple[float, float]:
    """(min, max) of every valid depth of every frame, one frame at a time."""
    lo, hi = math.inf, -math.inf
    for i in range(_shape(depth)[0]):
        d = _frame(depth, i)
        v = d[_valid(d)]
        if v.size:
            lo, hi = min(lo, float(v.min())), max(hi, float(v.max()))
    if lo > hi:
        raise ValueError("No valid depth (finite and > 0) in any frame")
    return lo, hi


# --------------------------------------------------------------------------------------
# Colours with a fixed range, and the legend
# --------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=16)
def _cached_lut(colormap: str) -> np.ndarray:
    # export._lut samples Plotly's colour scale each call: once per colour map, not per frame.
    lut = export._lut(colormap)
    lut.flags.writeable = False
    return lut


def _widen(lo: float, hi: float) -> tuple[float, float]:
    """A non-empty range: a constant depth sits mid-scale (as export.colorize_depth does)."""
    if hi > lo:
        return lo, hi
    eps = max(abs(lo) * 1e-6, 1e-12)
    return lo - eps, hi + eps


def _position(d: np.ndarray, lo: float, hi: float, inverse: bool) -> np.ndarray:
    """Colour-scale position in 0..1 of depth ``d``: 0 at ``lo`` (near), 1 at ``hi`` (far),
    spaced linearly in 1/d with ``inverse``. Caller masks invalid depth."""
    lo, hi = _widen(float(lo), float(hi))
    with np.errstate(divide="ignore", invalid="ignore"):
        if inverse:
            if lo <= 0:
                raise ValueError(f"inverse colouring needs lo > 0, got lo={lo}")
            t = (1.0 / lo - 1.0 / d) / (1.0 / lo - 1.0 / hi)
        else:
            t = (d - lo) / (hi - lo)
    return np.clip(np.nan_to_num(t, nan=0.0), 0.0, 1.0)


def colorize_fixed(
    depth_frame: np.ndarray, lo: float, hi: float, colormap: str = "Spectral", inverse: bool = True
) -> np.ndarray:
    """One depth frame in colour over a FIXED range (the same for every frame of a video).

    Depth ``lo`` (near) gets the first colour of ``colormap`` and ``hi`` the last; depth
    outside the range takes the end colour. Same 256-entry table as
    `da3_core.scene.export.colorize_depth`.

    Args:
        depth_frame: (H, W) z-depth.
        lo: Near end of the range, depth units (> 0 with ``inverse``).
        hi: Far end of the range, depth units.
        colormap: Plotly colour scale name.
        inverse: Space the colours in inverse depth (as DA3's depth pictures) rather than
            in depth.

    Returns:
        (H, W, 3) uint8 RGB; invalid depth (not finite, or <= 0) is black.
    """
    d = np.asarray(depth_frame, dtype=np.float64)
    valid = _valid(d)
    t = _position(np.where(valid, d, 1.0), lo, hi, inverse)  # invalid pixels are blacked out below
    out = _cached_lut(colormap)[np.rint(t * 255).astype(np.intp)]
    out[~valid] = 0
    return out


def _font_px(height: int) -> int:
    """Text size for a panel beside a frame ``height`` pixels high."""
    return int(min(28, max(10, round(height / 28))))


def _font(px: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=px)  # Pillow's bundled scalable font
    except (TypeError, OSError, ImportError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _short_unit(unit: str) -> str:
    """Unit as written after a number: 'm' stays, DA3's 'relative units' is left off."""
    return unit if len(unit) <= 3 else ""


def _title(unit: str) -> str:
    # docs/CONVENTIONS.md: colour bars read "depth (m)" or "depth (relative)".
    return "depth (relative)" if unit == "relative units" else f"depth ({unit})"


def _label(value: float, digits: int, unit: str) -> tuple[float, str]:
    """``value`` rounded to ``digits`` significant digits, and its text (no exponent in the
    usual range)."""
    if value == 0 or not math.isfinite(value):
        return value, "0"
    decimals = digits - 1 - math.floor(math.log10(abs(value)))
    rounded = round(value, decimals)
    if 1e-3 <= abs(rounded) < 1e6:
        text = f"{rounded:.{max(0, decimals)}f}"
    else:
        text = f"{rounded:.{digits - 1}e}"
    suffix = _short_unit(unit)
    return rounded, f"{text} {suffix}" if suffix else text


def _depth_at(t: np.ndarray, lo: float, hi: float, inverse: bool) -> np.ndarray:
    """Inverse of `_position`: depth at colour-scale position ``t``."""
    lo, hi = _widen(lo, hi)
    if inverse:
        return 1.0 / (1.0 / lo - t * (1.0 / lo - 1.0 / hi))
    return lo + t * (hi - lo)


def _ticks(lo: float, hi: float, unit: str, n: int, inverse: bool) -> list[tuple[float, str]]:
    """``n`` (position, label) pairs: evenly spaced along the bar (so inverse spacing does not
    crowd them at the far end), each at the exact position of its rounded depth value."""
    raw = _depth_at(np.linspace(0.0, 1.0, n), lo, hi, inverse)
    for digits in range(2, 9):  # fewest significant digits that keep the labels distinct
        labelled = [_label(float(v), digits, unit) for v in raw]
        if len({text for _, text in labelled}) == n:
            break
    return [(float(_position(np.array(v), lo, hi, inverse)), text) for v, text in labelled]


def _legend(
    lo: float, hi: float, unit: str, height: int, colormap: str, inverse: bool, width: int | None, font_px: int
) -> np.ndarray:
    font = _font(font_px)
    draw_probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))

    def text_w(s: str) -> int:
        return int(math.ceil(draw_probe.textlength(s, font=font)))

    margin, bar_w, tick_w, gap = max(4, font_px // 2), max(8, font_px), max(3, font_px // 3), max(3, font_px // 3)
    title = _title(unit)
    title_h = font_px + margin
    y0 = title_h + font_px // 2 + 2  # room for the top label, centred on the bar's end
    y1 = height - font_px // 2 - 3
    if y1 - y0 < 8:
        raise ValueError(f"height {height} is too small for a colour bar with {font_px}px text")
    n_ticks = int(np.clip((y1 - y0) // int(1.6 * font_px) + 1, 2, 5))
    ticks = _ticks(lo, hi, unit, n_ticks, inverse)
    needed = 2 * margin + max(text_w(title), bar_w + tick_w + gap + max(text_w(t) for _, t in ticks))
    width = int(width) if width is not None else needed
    img = np.zeros((height, width, 3), dtype=np.uint8)
    x0 = margin
    # The bar: far (hi) at the top, near (lo) at the bottom, the colours `colorize_fixed` gives.
    t_rows = (y1 - np.arange(y0, y1 + 1)) / (y1 - y0)
    img[y0 : y1 + 1, x0 : x0 + bar_w] = _cached_lut(colormap)[np.rint(t_rows * 255).astype(np.intp)][:, None, :]
    pil = Image.fromarray(img)
    draw = ImageDraw.Draw(pil)
    draw.text((margin, margin // 2), title, fill=(255, 255, 255), font=font)
    for t, text in ticks:
        y = round(y1 - t * (y1 - y0))
        draw.line([(x0 + bar_w, y), (x0 + bar_w + tick_w, y)], fill=(255, 255, 255), width=1)
        draw.text((x0 + bar_w + tick_w + gap, y), text, fill=(255, 255, 255), font=font, anchor="lm")
    return np.asarray(pil)


def legend_image(
    lo: float,
    hi: float,
    unit: str,
    height: int,
    colormap: str = "Spectral",
    inverse: bool = True,
    width: int | None = None,
) -> np.ndarray:
    """A vertical colour bar with 2..5 tick labels (5 from about 100 px high), to stand
    beside each frame.

    Far (``hi``) at the top, near (``lo``) at the bottom, coloured exactly as
    `colorize_fixed` colours those depths. Ticks are evenly spaced along the bar, each drawn
    at the exact position of its label's rounded depth; labels carry the unit when it is
    short (``"m"``), and the title reads "depth (m)" or "depth (relative)"
    (docs/CONVENTIONS.md). White on black, text size from ``height`` (Pillow's bundled font).

    Args:
        lo: Near end of the range (depth units).
        hi: Far end of the range.
        unit: ``"m"`` or ``"relative units"`` (`Reconstruction.depth_unit`), or any unit.
        height: Panel height in pixels (the frame's height).
        colormap: Plotly colour scale name.
        inverse: As in `colorize_fixed`.
        width: Panel width in pixels; None fits the widest label (a narrower one clips text).

    Returns:
        (height, width, 3) uint8 RGB.
    """
    return _legend(float(lo), float(hi), unit, int(height), colormap, inverse, width, _font_px(int(height)))


def _name_strip(text: str, width: int, height: int, font_px: int) -> np.ndarray:
    """(height, width, 3) uint8: ``text`` (shortened with an ellipsis to fit), grey on black."""
    font = _font(font_px)
    pil = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(pil)
    room = width - 2 * max(4, font_px // 2)
    if draw.textlength(text, font=font) > room:
        while text and draw.textlength("…" + text, font=font) > room:
            text = text[1:]  # keep the end: frame names differ at their end (frame_000123.png)
        text = "…" + text
    draw.text((max(4, font_px // 2), height // 2), text, fill=(200, 200, 200), font=font, anchor="lm")
    return np.asarray(pil)


# --------------------------------------------------------------------------------------
# Writers: temporary name, then rename
# --------------------------------------------------------------------------------------


def _temp_beside(out: Path, suffix: str) -> Path:
    """A new hidden file next to ``out`` (same folder, so the final rename is atomic; hidden,
    so the Exports page's listing skips it)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=suffix, dir=out.parent)
    os.close(fd)
    return Path(tmp)


def write_depth_video(
    depth: Any,
    out_path: str | os.PathLike[str],
    *,
    fps: float = 10.0,
    lo: float | None = None,
    hi: float | None = None,
    unit: str = "relative units",
    colormap: str = "Spectral",
    crf: int = 20,
    names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """A colour-mapped mp4 of every frame, one depth scale for the whole video, legend beside.

    Each video frame is ``colorize_fixed(depth[i], lo, hi)`` with `legend_image` on its
    right (and, with ``names``, the frame's name under the bar); a black row/column pads
    it to even dimensions (x264 with yuv420p needs them). Frames go one at a time through
    imageio's ffmpeg writer (imageio-ffmpeg ships the binary), so memory stays flat. H.264
    (libx264, ``crf``), yuv420p, ``+faststart`` so a browser plays it while downloading.
    The file is written under a hidden temporary name beside ``out_path`` and renamed when
    complete: ``out_path`` never holds a partial video.

    Args:
        depth: (N, H, W) z-depth, any array-like with ``.shape`` and ``[i]`` (memmap ok).
        out_path: The mp4 to write (its folder is created).
        fps: Frames per second.
        lo: Near end of the colour range; None: `global_depth_range`'s (2nd percentile).
        hi: Far end; None: `global_depth_range`'s (98th percentile).
        unit: Depth unit for the legend (`Reconstruction.depth_unit`).
        colormap: Plotly colour scale name.
        crf: x264 constant rate factor (lower is better and bigger; 18..28 is usual).
        names: N frame names drawn under the legend, or None.

    Returns:
        ``{"path", "frames", "lo", "hi", "unit", "fps", "seconds", "width", "height"}``:
        ``path`` a str, ``seconds`` the video's duration (frames / fps), ``width`` and
        ``height`` the video's size in pixels (frame + legend, padded to even).
    """
    import imageio.v2 as imageio

    n, h, w = _shape(depth)
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    if names is not None and len(names) != n:
        raise ValueError(f"names has {len(names)} entries for {n} frames")
    if lo is None or hi is None:
        auto_lo, auto_hi = global_depth_range(depth)
        lo = auto_lo if lo is None else lo
        hi = auto_hi if hi is None else hi
    lo, hi = float(lo), float(hi)
    out = Path(out_path)
    height = h + h % 2
    font_px = _font_px(height)
    strip_h = font_px + 8 if names is not None and height >= 64 else 0
    legend = legend_image(lo, hi, unit, height - strip_h, colormap)
    legend_w = legend.shape[1] + (w + legend.shape[1]) % 2
    if legend_w != legend.shape[1]:
        legend = np.pad(legend, ((0, 0), (0, 1), (0, 0)))
    canvas = np.zeros((height, w + legend_w, 3), dtype=np.uint8)
    canvas[: legend.shape[0], w:] = legend
    tmp = _temp_beside(out, ".mp4")  # ffmpeg picks the container from the extension
    try:
        writer = imageio.get_writer(
            tmp,
            format="FFMPEG",
            mode="I",
            fps=float(fps),
            codec="libx264",
            quality=None,
            pixelformat="yuv420p",
            macro_block_size=1,
            ffmpeg_log_level="error",
            output_params=["-crf", str(int(crf)), "-preset", "medium", "-movflags", "+faststart"],
        )
        # Not `with`: imageio's writer closes only on a clean exit; after an error ffmpeg would
        # live on and write (re-create, with +faststart) the temporary file after we remove it.
        try:
            for i in range(n):
                canvas[:h, :w] = colorize_fixed(depth[i], lo, hi, colormap)
                if strip_h and names is not None:  # strip_h > 0 only with names
                    canvas[height - strip_h :, w:] = _name_strip(str(names[i]), legend_w, strip_h, font_px)
                writer.append_data(canvas)
        finally:
            writer.close()  # waits for ffmpeg to finish the file
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return {
        "path": str(out),
        "frames": n,
        "lo": lo,
        "hi": hi,
        "unit": unit,
        "fps": float(fps),
        "seconds": n / float(fps),
        "width": int(canvas.shape[1]),
        "height": int(canvas.shape[0]),
    }


def write_depth_png_sequence(
    depth: Any,
    out_zip: str | os.PathLike[str],
    *,
    names: Sequence[str],
    unit: str,
    lo: float | None = None,
    hi: float | None = None,
) -> dict[str, Any]:
    """A zip of one 16-bit PNG per frame, with ONE scale for every frame.

    Same layout and ``depth_scale.json`` as `da3_core.scene.export.depth_png_zip_bytes`, so
    `da3_core.scene.export.read_depth_png_zip` reads it back: ``depth/0000.png``, ... (more
    digits past 10,000 frames), each view's ``scale``/``offset`` (here all equal), ``min``
    and ``max`` (that frame's own valid depth, None when it has none), and the PNGs'
    ``depth_scale``/``depth_offset``/``depth_unit`` text chunks. Code
    ``value = round((d - offset) / scale)`` in 1..65535 with ``scale = (hi - lo) / 65534``,
    ``offset = lo - scale``; 0 = no valid depth. The json also holds ``"shared_scale": true``
    and ``"range": [lo, hi]``. Written one frame at a time under a hidden temporary name,
    then renamed.

    Args:
        depth: (N, H, W) z-depth, any array-like with ``.shape`` and ``[i]`` (memmap ok).
        out_zip: The zip to write (its folder is created).
        names: N frame names (stored per view).
        unit: Depth unit (`Reconstruction.depth_unit`).
        lo: Smallest depth encoded; None: the smallest valid depth of all frames.
        hi: Largest depth encoded; None: the largest. With the defaults every valid depth
            comes back within ``scale / 2``; given ones clip depth outside them to the ends.

    Returns:
        ``{"path", "frames", "lo", "hi", "scale", "offset", "unit"}`` (``path`` a str).
    """
    n, h, w = _shape(depth)
    if len(names) != n:
        raise ValueError(f"names has {len(names)} entries for {n} frames")
    if lo is None or hi is None:
        auto_lo, auto_hi = _full_range(depth)
        lo = auto_lo if lo is None else lo
        hi = auto_hi if hi is None else hi
    lo, hi = float(lo), float(hi)
    if hi < lo:
        raise ValueError(f"hi must be >= lo, got lo={lo}, hi={hi}")
    # As export.encode_depth_u16, over the shared range instead of each frame's own.
    scale = (hi - lo) / (export.DEPTH_PNG_MAX - 1) if hi > lo else 1.0
    offset = lo - scale
    digits = max(4, len(str(n - 1)))
    out = Path(out_zip)
    tmp = _temp_beside(out, ".zip")
    views = []
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
            for i in range(n):
                d = _frame(depth, i)
                valid = _valid(d)
                codes = np.zeros(d.shape, dtype=np.uint16)
                codes[valid] = np.clip(np.rint((d[valid] - offset) / scale), 1, export.DEPTH_PNG_MAX).astype(np.uint16)
                info = PngInfo()
                info.add_text("depth_scale", repr(scale))
                info.add_text("depth_offset", repr(offset))
                info.add_text("depth_unit", unit)
                name = f"depth/{i:0{digits}d}.png"
                # PNG is already deflated: storing avoids compressing twice (as export does).
                zf.writestr(name, export._png_bytes(Image.fromarray(codes), info))
                own = d[valid]
                views.append(
                    {
                        "file": name,
                        "name": str(names[i]),
                        "min": float(own.min()) if own.size else None,
                        "max": float(own.max()) if own.size else None,
                        "scale": scale,
                        "offset": offset,
                    }
                )
            doc = {
                "format": "da3-depth-png-v1",
                "encoding": PNG_ENCODING,
                "unit": unit,
                "shared_scale": True,
                "range": [lo, hi],
                "views": views,
            }
            zf.writestr(export.DEPTH_SCALE_FILE, json.dumps(doc, indent=2), compress_type=zipfile.ZIP_DEFLATED)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return {"path": str(out), "frames": n, "lo": lo, "hi": hi, "scale": scale, "offset": offset, "unit": unit}
