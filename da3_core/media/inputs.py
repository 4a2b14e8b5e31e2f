"""Uploads -> validated frames: images (incl. HEIC), videos, bundled example scenes.

Everything here takes ``(name, data)`` pairs, i.e. what Streamlit's ``UploadedFile`` gives
(``.name``, ``.getvalue()``). A user's file name only ever becomes a *display name*
(`display_name`); it never becomes a filesystem path. The format is detected from the
content, never from the extension.

Choices made here (the page may repeat them to the user):

* Transparency (RGBA, LA, palette with transparency) is composited on white, so the
  transparent area becomes a flat white background that the white-background filter can
  remove. DA3's own loader drops alpha instead (``convert("RGB")``), which shows whatever
  colour hides under the transparent pixels.
* Animated GIF / WebP, multi-page TIFF and HEIF bursts: the first frame is used and a note
  says so (MPO, a JPEG carrying camera previews, gets no note).
* 16-bit images are scaled to 8 bits proportionally (the high byte, as Pillow does for
  16-bit RGB PNGs), never clipped at 255.
* EXIF orientation is applied, so rotated phone photos come out upright.
* Images whose smaller side is under `MIN_SIDE` (14 px, DA3's patch size) are refused.
* Images over ``Settings.max_pixels`` are refused from the header, before any pixel data
  is decoded. Pillow's own guard (``Image.MAX_IMAGE_PIXELS``, left at its default; it
  refuses above twice that, about 179 MP) also applies, so the effective limit is the
  smaller of the two.
* Truncated files are errors: this module never sets ``ImageFile.LOAD_TRUNCATED_IMAGES``
  (and nothing else in the parent process may).
* Video sampling follows DA3's app: one frame every ``max(1, int(fps / target_fps))``,
  but starting at frame 0 (DA3 starts at frame ``step - 1``), then thinned evenly to the
  frame cap (first and last sampled frames kept). Frames far apart are reached by seeking
  (ffmpeg ``-ss``), close ones in one decoding pass; both give the same frames (see
  "Seeking" below).
* Frames are returned as **read-only** numpy views (no extra copy is made to make them
  writable); call ``.copy()`` before editing one in place.

For the page: ``plan_video(probe_video(name, data), fps, cap).summary`` says "will make N
frames (...)" before anything is decoded (ffmpeg demuxes, it does not decode); cache it
by content hash (``st.cache_data``), since every call writes the bytes to a temp file.
"""

from __future__ import annotations

import bisect
import io
import json
import math
import re
import subprocess
import tempfile
import threading
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from da3_core.config import Settings

__all__ = [
    "MIN_SIDE",
    "TARGET_FPS_RANGE",
    "DEFAULT_TARGET_FPS",
    "IMAGE_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "UPLOAD_EXTENSIONS",
    "InputError",
    "Frame",
    "Rejected",
    "Batch",
    "Sniffed",
    "VideoInfo",
    "VideoPlan",
    "Example",
    "display_name",
    "unique_display_names",
    "sniff",
    "looks_like_video",
    "load_image",
    "probe_video",
    "plan_video",
    "extract_frames",
    "load_batch",
    "list_examples",
    "load_example",
]

MIN_SIDE = 14
"""Smallest accepted image side in pixels (DA3's ViT patch size)."""

TARGET_FPS_RANGE = (0.1, 60.0)
"""Allowed sampling rates for video, frames per second (the DA3 app's slider range)."""

DEFAULT_TARGET_FPS = 10.0
"""The DA3 app's default sampling rate."""

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "bmp", "tif", "tiff", "webp", "heic", "heif", "avif", "gif")
VIDEO_EXTENSIONS = ("mp4", "mov", "avi", "mkv", "webm")
UPLOAD_EXTENSIONS = IMAGE_EXTENSIONS + VIDEO_EXTENSIONS
"""Extensions for ``st.file_uploader(type=...)``. Content decides; these only filter the picker."""

MAX_NAME_CHARS = 80
"""Longest display name kept (longer names are shortened in the middle, extension kept)."""

# Pillow plugins we let identify a file. Restricting them keeps odd formats (EPS, which
# runs Ghostscript on load; PSD; ICNS; ...) away from uploads.
_PIL_FORMATS = ("JPEG", "MPO", "PNG", "BMP", "TIFF", "WEBP", "GIF", "HEIF", "AVIF")
_FORMAT_EXTENSIONS = {
    "JPEG": ("jpg", "jpeg", "jpe", "jfif"),
    "MPO": ("jpg", "jpeg", "mpo"),
    "PNG": ("png", "apng"),
    "BMP": ("bmp", "dib"),
    "TIFF": ("tif", "tiff"),
    "WEBP": ("webp",),
    "GIF": ("gif",),
    "HEIF": ("heic", "heif", "hif"),
    "AVIF": ("avif",),
}

_PROBE_TIMEOUT_S = 120.0
_MB = 1024 * 1024


# --------------------------------------------------------------------------------------
# Types
# --------------------------------------------------------------------------------------


class InputError(ValueError):
    """An upload cannot be used. ``str(err)`` names the file and says what to do.

    Attributes:
        name: The display name of the file (sanitised, safe to show).
        reason: What is wrong and what to do, without the name.
    """

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.reason = reason
        super().__init__(f"{name}: {reason}")


@dataclass(frozen=True, eq=False)  # eq=False: compare by identity (arrays have no truth value)
class Frame:
    """One validated frame, ready for `ReconstructRequest`.

    Attributes:
        name: Display name, unique within a batch (``"a.jpg"``, ``"clip.mp4 #0030"``).
        image: (H, W, 3) uint8 RGB, read-only (``.copy()`` before editing in place).
        source: Display name of the upload it came from (the video's name for video frames).
        note: What was done to it (orientation applied, first frame of an animation, ...);
            empty when nothing worth saying.
        frame_index: For video frames, the index of the frame in the video; else None.
        time_s: For video frames, its time in seconds (index / fps); else None.
    """

    name: str
    image: np.ndarray
    source: str
    note: str = ""
    frame_index: int | None = None
    time_s: float | None = None

    def __post_init__(self) -> None:
        img = self.image
        if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(
                f"Frame {self.name!r}: image must be (H, W, 3) uint8, got "
                f"{getattr(img, 'shape', None)} {getattr(img, 'dtype', type(img).__name__)}"
            )

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])


@dataclass(frozen=True)
class Rejected:
    """An upload that was not used.

    Attributes:
        name: Display name of the file.
        reason: The full message: names the file, says what is wrong and what to do.
    """

    name: str
    reason: str


@dataclass(frozen=True)
class Batch:
    """The result of `load_batch`.

    Attributes:
        frames: The usable frames, in upload order (video frames in time order).
        rejected: The files that were not used, with reasons.
        notes: Batch-level remarks (video sampling, frame caps), one sentence each.
    """

    frames: list[Frame]
    rejected: list[Rejected]
    notes: list[str] = field(default_factory=list)

    @property
    def images(self) -> tuple[np.ndarray, ...]:
        """The frames' images, for ``ReconstructRequest.images``."""
        return tuple(f.image for f in self.frames)

    @property
    def names(self) -> tuple[str, ...]:
        """The frames' display names, for ``ReconstructRequest.names``."""
        return tuple(f.name for f in self.frames)


@dataclass(frozen=True)
class Sniffed:
    """What the first bytes of a file say it is.

    Attributes:
        kind: ``"image"``, ``"video"`` or None (unknown).
        ext: Canonical extension for the content (``"jpg"``, ``"mp4"``...), or None.
    """

    kind: str | None
    ext: str | None


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


@dataclass(frozen=True, eq=False)
class Example:
    """A bundled example scene (see ``scripts/make_examples.py``).

    Attributes:
        key: Folder name, e.g. ``"room"``.
        title: Short title for the page.
        description: One line.
        folder: The scene's folder.
        files: The image files, in view order.
        extrinsics: (N, 3, 4) float64 ground-truth world-to-camera [R|t], OpenCV axes.
        intrinsics: (N, 3, 3) float64 ground-truth pinhole K, in pixels of the files.
        meta: The whole ``scene.json``.
    """

    key: str
    title: str
    description: str
    folder: Path
    files: tuple[Path, ...]
    extrinsics: np.ndarray
    intrinsics: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict, repr=False)


# --------------------------------------------------------------------------------------
# Names
# --------------------------------------------------------------------------------------

# Invisible characters that reorder or hide text (bidi controls, BOM); ZWJ/ZWNJ are kept
# because emoji and some scripts need them.
_HIDDEN = {0x061C, 0x200E, 0x200F, 0x202A, 0x202B, 0x202C, 0x202D, 0x202E, 0x2066, 0x2067, 0x2068, 0x2069, 0xFEFF}


def display_name(raw: object, max_chars: int = MAX_NAME_CHARS) -> str:
    """Turn a user-supplied file name into a display name (never a path).

    Drops any directory part (``/`` and ``\\``, so ``../`` and absolute paths go), control
    and bidi-override characters; keeps unicode letters, emoji and inner spaces (runs of
    whitespace become one space); cuts long names short, keeping the extension.

    Args:
        raw: The name as uploaded (anything; ``str()`` is applied).
        max_chars: Longest result.

    Returns:
        A non-empty name (``"upload"`` when nothing printable is left).
    """
    text = unicodedata.normalize("NFC", str(raw))
    text = text.replace("\\", "/").rsplit("/", 1)[-1]
    kept = []
    for ch in text:
        cat = unicodedata.category(ch)
        if ch.isspace():
            kept.append(" ")
        elif cat in ("Cc", "Cs", "Co") or ord(ch) in _HIDDEN:
            continue
        else:
            kept.append(ch)
    text = re.sub(r" {2,}", " ", "".join(kept)).strip()
    if text.strip(".") == "":
        text = "upload"
    if len(text) > max_chars:
        stem, dot, ext = text.rpartition(".")
        if dot and 0 < len(ext) <= 8 and stem:
            keep = max_chars - len(ext) - 2
            text = stem[:keep].rstrip() + "\u2026." + ext
        else:
            text = text[: max_chars - 1].rstrip() + "\u2026"
    return text


def unique_display_names(raw_names: Iterable[object]) -> list[str]:
    """Display names for a batch, made unique: ``a.jpg``, ``a (2).jpg``, ``a (3).jpg``.

    Args:
        raw_names: The names as uploaded, in order.

    Returns:
        One display name per input, in order, all distinct.
    """
    out: list[str] = []
    taken: set[str] = set()
    for raw in raw_names:
        name = display_name(raw)
        if name in taken:
            stem, dot, ext = name.rpartition(".")
            if not dot or not stem:
                stem, dot, ext = name, "", ""
            n = 2
            while True:
                candidate = f"{stem} ({n}){dot}{ext}"
                if candidate not in taken:
                    name = candidate
                    break
                n += 1
        taken.add(name)
        out.append(name)
    return out


def _extension(name: str) -> str:
    stem, dot, ext = name.rpartition(".")
    return ext.lower() if dot and stem else ""


def _ordinal(n: int) -> str:
    if 10 <= n % 100 <= 20:
        suffix = "th"
    else:
        suffix = {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


# --------------------------------------------------------------------------------------
# Content sniffing
# --------------------------------------------------------------------------------------

_HEIF_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs", b"mif1", b"msf1", b"mif2"}
_AVIF_BRANDS = {b"avif", b"avis"}
_HEVC_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs"}
_QUICKTIME_ATOMS = {b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot"}


def sniff(data: bytes) -> Sniffed:
    """Classify bytes by their signature (no decoding).

    Args:
        data: The file's bytes (only the first few dozen are read).

    Returns:
        `Sniffed` with ``kind`` ``"image"``/``"video"``/None and a canonical extension.
    """
    head = bytes(data[:64])
    if head.startswith(b"\xff\xd8\xff"):
        return Sniffed("image", "jpg")
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return Sniffed("image", "png")
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return Sniffed("image", "gif")
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return Sniffed("image", "tif")
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return Sniffed("image", "webp")
    if head.startswith(b"RIFF") and head[8:12] == b"AVI ":
        return Sniffed("video", "avi")
    if head[4:8] == b"ftyp":  # ISO base media: HEIF/AVIF stills or MP4/MOV video
        brand = head[8:12]
        if brand in _AVIF_BRANDS:
            return Sniffed("image", "avif")
        if brand in _HEIF_BRANDS:
            # A generic major brand (mif1/msf1) with only AV1 brands listed is an AVIF.
            box_end = min(len(head), max(16, int.from_bytes(head[0:4], "big")))
            compatible = {head[i : i + 4] for i in range(16, box_end - 3, 4)}
            if compatible & _AVIF_BRANDS and not compatible & _HEVC_BRANDS:
                return Sniffed("image", "avif")
            return Sniffed("image", "heic")
        return Sniffed("video", "mov" if brand == b"qt  " else "mp4")
    if head[4:8] in _QUICKTIME_ATOMS:
        return Sniffed("video", "mov")
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return Sniffed("video", "webm" if b"webm" in head else "mkv")
    if head.startswith(b"BM") and len(head) >= 26:
        return Sniffed("image", "bmp")
    return Sniffed(None, None)


# --------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------

_heif_lock = threading.Lock()
_heif_registered = False


def _register_heif() -> None:
    """Register pillow-heif's opener once, on first need (it costs an import)."""
    global _heif_registered
    with _heif_lock:
        if not _heif_registered:
            from pillow_heif import register_heif_opener

            register_heif_opener()
            _heif_registered = True


def _pil_formats() -> list[str]:
    """The allowed Pillow formats that are registered (``Image.open`` fails on unknown ones)."""
    Image.init()  # registers every bundled plugin once (MPO, TIFF, WebP, AVIF...); later calls are no-ops
    return [fmt for fmt in _PIL_FORMATS if fmt in Image.OPEN]


def _check_upload_size(name: str, data: bytes, settings: Settings) -> None:
    if len(data) == 0:
        raise InputError(name, "the file is empty (0 bytes). Upload it again, or pick another file.")
    limit = settings.max_upload_mb * _MB
    if len(data) > limit:
        raise InputError(
            name,
            f"the file is {len(data) / _MB:.1f} MB, over the upload limit of {settings.max_upload_mb} MB "
            "(DA3_MAX_UPLOAD_MB). Upload a smaller file (shorter video, smaller image).",
        )


_UNREADABLE_VIDEO = (
    "this is a video that could not be read: the file is damaged or incomplete (content not recognised). "
    "Re-export it as MP4 (H.264), or upload images instead."
)


def looks_like_video(name: str, data: bytes) -> bool:
    """The upload is a video by its content, or by its name when the content is not
    recognised at all (a damaged ``.mp4`` is a video that cannot be read, not an image)."""
    kind = sniff(data).kind
    return kind == "video" or (kind is None and _extension(name) in VIDEO_EXTENSIONS)


def _wrong_extension_note(name: str, fmt: str) -> str:
    ext = _extension(name)
    allowed = _FORMAT_EXTENSIONS.get(fmt, ())
    if ext and ext not in allowed:
        return f"named .{ext} but the content is {fmt} (read by content)"
    return ""


def load_image(name: str, data: bytes, settings: Settings | None = None) -> Frame:
    """Decode one uploaded image into a validated frame.

    The format comes from the content (Pillow, restricted to JPEG/MPO, PNG, BMP, TIFF,
    WebP, GIF, HEIF/HEIC, AVIF); EXIF orientation is applied; transparency is composited
    on white; 16-bit data is scaled to 8 bits; the first frame of an animation is used.

    Args:
        name: Display name (already sanitised; only used in messages and the result).
        data: The file's bytes.
        settings: Limits (``max_upload_mb``, ``max_pixels``); defaults when None.

    Returns:
        A `Frame` whose image is (H, W, 3) uint8 RGB, read-only.

    Raises:
        InputError: Empty, too large (bytes or pixels), too small, not an image we read,
            damaged or truncated. The message names the file and what to do.
    """
    settings = settings or Settings()
    _check_upload_size(name, data, settings)
    sniffed = sniff(data)
    if sniffed.ext in ("heic", "avif"):
        _register_heif()  # AVIF: Pillow 13 reads it natively; pillow-heif covers HEIC.
    notes: list[str] = []
    try:
        im = Image.open(io.BytesIO(data), formats=_pil_formats())
    except Image.DecompressionBombError as exc:
        raise InputError(
            name,
            f"the image is too large to open safely ({exc}); this app's limit is "
            f"{settings.max_pixels / 1e6:.1f} MP (DA3_MAX_PIXELS). Downscale it before uploading.",
        ) from None
    except UnidentifiedImageError:
        if looks_like_video(name, data):
            raise InputError(name, _UNREADABLE_VIDEO) from None
        raise InputError(
            name,
            "this is not an image format this app reads (content not recognised). Use JPEG, PNG, BMP, TIFF, WebP, "
            "HEIC/HEIF or AVIF images, or MP4, MOV, AVI, MKV or WebM videos.",
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InputError(name, f"the image header is damaged ({exc}). Re-export or re-download the file.") from None
    with im:
        fmt = str(im.format or "?")
        width, height = im.size
        if width * height > settings.max_pixels:
            raise InputError(
                name,
                f"the image is {width}x{height} = {width * height / 1e6:.1f} MP, over the limit of "
                f"{settings.max_pixels / 1e6:.1f} MP (DA3_MAX_PIXELS); it was not decoded. "
                "Downscale it before uploading.",
            )
        if min(width, height) < MIN_SIDE:
            raise InputError(
                name,
                f"the image is only {width}x{height} pixels; each side must be at least {MIN_SIDE} px "
                "(DA3's patch size). Use a larger image.",
            )
        note = _wrong_extension_note(name, fmt)
        if note:
            notes.append(note)
        try:
            n_frames = int(getattr(im, "n_frames", 1) or 1)
        except Exception:  # noqa: BLE001 - counting frames is a courtesy; frame 0 still loads
            n_frames = 1
        if n_frames > 1 and fmt != "MPO":
            notes.append(f"{fmt} with {n_frames} frames: the first frame is used")
        if fmt == "JPEG" and max(width, height) > settings.max_side:
            # Decode at 1/2, 1/4 or 1/8 scale right away: faster and far less memory.
            scale = settings.max_side / max(width, height)
            im.draft("RGB", (max(1, int(width * scale)), max(1, int(height * scale))))
        try:
            im.seek(0)
            im.load()
        except Image.DecompressionBombError as exc:
            raise InputError(name, f"the image is too large to decode safely ({exc}). Downscale it.") from None
        except MemoryError:
            raise InputError(name, "not enough memory to decode this image. Downscale it before uploading.") from None
        except Exception as exc:  # noqa: BLE001 - any decoder failure means a damaged file
            raise InputError(
                name,
                f"the {fmt} data is damaged or truncated ({exc}). Re-export or re-download the file.",
            ) from None
        try:
            orientation = int(im.getexif().get(0x0112, 1) or 1)
        except Exception:  # noqa: BLE001 - unreadable EXIF: keep pixels as stored
            orientation = 1
            notes.append("EXIF data unreadable; orientation left as stored")
        transposed = False
        if 2 <= orientation <= 8:
            try:
                ImageOps.exif_transpose(im, in_place=True)
                transposed = orientation >= 5  # 5-8 swap width and height
                notes.append(f"EXIF orientation {orientation} applied")
            except Exception:  # noqa: BLE001 - keep the pixels as stored rather than fail
                notes.append(f"EXIF orientation {orientation} could not be applied; left as stored")
        array, convert_note = _to_rgb(im)
        if convert_note:
            notes.append(convert_note)
    # The size the user knows, in the orientation shown: EXIF orientations 5-8 swap the sides.
    shown_wh = (height, width) if transposed else (width, height)
    array, size_note = limit_side(array, settings.max_side, shown_wh)
    if size_note:
        notes.append(size_note)
    array.setflags(write=False)  # one contract for every frame: read-only (most already are)
    return Frame(name=name, image=array, source=name, note="; ".join(notes))


def limit_side(image: np.ndarray, max_side: int, original_wh: tuple[int, int] | None = None) -> tuple[np.ndarray, str]:
    """Downscale (H, W, 3) uint8 so its long side is at most ``max_side`` (DA3_MAX_SIDE).

    The model sees ``process_res`` pixels anyway; this bounds the memory of many frames.

    Returns:
        The image (unchanged when small enough) and a note ("" when unchanged).
    """
    h, w = image.shape[:2]
    ow, oh = original_wh or (w, h)
    if max(h, w) <= max_side:
        return image, ("" if (ow, oh) == (w, h) else f"downscaled from {ow}x{oh} to {w}x{h} (DA3_MAX_SIDE={max_side})")
    scale = max_side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    small = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.LANCZOS, reducing_gap=2.0))
    return small, f"downscaled from {ow}x{oh} to {size[0]}x{size[1]} (DA3_MAX_SIDE={max_side})"


def _to_rgb(im: Image.Image) -> tuple[np.ndarray, str]:
    """Pillow image (loaded) -> ((H, W, 3) uint8 RGB array, note)."""
    mode = im.mode
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode in ("P", "L", "RGB") and "transparency" in im.info)
    if mode == "RGB" and not has_alpha:
        return np.asarray(im), ""
    if has_alpha:
        rgba = im if mode == "RGBA" else im.convert("RGBA")
        alpha = rgba.getchannel("A")
        if alpha.getextrema() == (255, 255):
            return np.asarray(rgba.convert("RGB")), ""
        canvas = Image.new("RGB", rgba.size, (255, 255, 255))
        canvas.paste(rgba, mask=alpha)
        return np.asarray(canvas), "transparent areas composited on white"
    if mode.startswith("I;16"):
        grey16 = np.asarray(im)
        grey8 = (grey16 >> 8).astype(np.uint8)
        return _grey_to_rgb(grey8), "16-bit greyscale scaled to 8 bits"
    if mode == "I":
        values = np.asarray(im)
        lo, hi = int(values.min()), int(values.max())
        if lo >= 0 and hi <= 65535:
            return _grey_to_rgb((values >> 8).astype(np.uint8)), "16-bit greyscale scaled to 8 bits"
        return _grey_to_rgb(_stretch(values)), f"32-bit values {lo}..{hi} stretched to 0..255"
    if mode == "F":
        values = np.asarray(im)
        finite = values[np.isfinite(values)]
        flo, fhi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        if flo >= 0.0 and fhi <= 1.0:
            scaled = np.clip(np.nan_to_num(values, nan=0.0) * 255.0 + 0.5, 0, 255).astype(np.uint8)
            return _grey_to_rgb(scaled), "float values 0..1 scaled to 0..255"
        return _grey_to_rgb(_stretch(values)), f"float values {flo:g}..{fhi:g} stretched to 0..255"
    converted = im.convert("RGB")
    note = {"CMYK": "CMYK converted to RGB", "P": "", "L": "", "1": "", "YCbCr": "", "LAB": "Lab converted to RGB"}.get(
        mode, ""
    )
    return np.asarray(converted), note


def _grey_to_rgb(grey: np.ndarray) -> np.ndarray:
    return np.repeat(grey[:, :, None], 3, axis=2)


def _stretch(values: np.ndarray) -> np.ndarray:
    v = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = float(v.min()), float(v.max())
    if hi <= lo:
        return np.zeros(v.shape, np.uint8)
    return ((v - lo) * (255.0 / (hi - lo)) + 0.5).astype(np.uint8)


# --------------------------------------------------------------------------------------
# Video
# --------------------------------------------------------------------------------------


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


# Seeking with ffmpeg's -ss (not PyAV): same binary, filters, scaler as the old path = identical frames; no new dependency.
# (PyAV is not installed here; its wheels bundle a second FFmpeg build, and it leaves the
# rotation flag and the RGB conversion to us, so its frames could differ from the old path's.
# What PyAV does better, seeking without starting a process, costs ~0.02-0.04 s a run here.)
#
# Exactness. The old path defines "frame i" as the i-th frame the decoder outputs. The packet
# timeline (`_read_timeline`, written by the same probe pass, at demux cost) gives frame i's
# presentation timestamp; a run seeking to frame s asks for ``-ss`` just before frame s
# (`_Timeline.seek_arg`), where ffmpeg's accurate seek (the default when decoding) decodes from
# the keyframe before and drops every frame stamped earlier, so frame s is the first one
# through and the ``select`` filter counts from it. Every frame a run returns is then checked
# against the timeline (``showinfo`` prints its timestamp and size): the first run (from frame
# 0, no seek) checks that the decoder's frame 0 is the timeline's frame 0 (no dropped leading
# frames), and each seek checks that it landed on its frame. A run that misses is retried from
# the keyframe before; if that misses too, or the timeline is unusable (packets without
# timestamps, as MPEG-4 with B-frames in AVI; frames under 1 ms apart; discarded packets, as an
# MP4 cut mid-GOP; corrupt packets; a packet count other than the probe's), the whole video
# goes through the old decode-everything path. The plan, the names, the notes and the errors
# are the old path's in every case (tests/unit/test_video_seek.py compares pixels on H.264 with
# and without B-frames, HEVC open GOPs, VP9/WebM, MPEG-4/AVI, VFR MP4 and MKV, rotated video,
# video starting after its audio, a container starting at 5 s).
#
# Which is faster. Frames are grouped into runs, one ffmpeg process each. Walking the planned
# frames in order, the next frame i (after frame p) starts a new run, with a seek, when the
# frames a run would decode to get there, i - p, are more than a seek costs: the frames from
# the keyframe before i to i, plus the start of a process (`_SEEK_START_S`) counted in frames
# of this video (`_frame_decode_s`). Dense sampling of a short clip therefore stays one run
# from frame 0, which is exactly the old path; sparse sampling of a long video seeks per frame.

_SEEK_START_S = 0.04
"""What a run costs beyond its decoding: start ffmpeg, open the file, seek, set up the
decoder (measured 0.02 s for a 64x48 clip, 0.04 s for a 10-minute 720p MP4, 2 cores)."""

_DECODE_S_PER_FRAME = 5e-5
_DECODE_S_PER_PIXEL = 1e-9
"""Decode cost model, ``per frame + per pixel * width * height`` (measured with H.264 on 2
cores: 0.65-0.95 ms per 720p frame, 0.05-0.07 ms per 64x48 frame). Only its order matters:
a seek is worth ~40 frames of 720p, ~750 of 64x48."""

_MIN_FRAME_GAP_S = Fraction(1, 1000)
"""Frames closer than this have no seek point that tells them apart reliably (``-ss`` is in
microseconds): such videos take the old path."""

_MAX_TIMELINE_FRAMES = 1_000_000
_MAX_TIMELINE_BYTES = 100 * _MAX_TIMELINE_FRAMES
"""The timeline is written for videos of up to a million frames (9 h at 30 fps; ~70 bytes a
frame); ffmpeg stops writing at this size (``-fs``) and such videos take the old path."""
_PKT_CORRUPT, _PKT_DISCARD = 0x2, 0x4  # AV_PKT_FLAG_*; key 0x1, trusted 0x8, disposable 0x10 are fine

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


# --------------------------------------------------------------------------------------
# Batches
# --------------------------------------------------------------------------------------


def _name_and_bytes(item: Any) -> tuple[str, bytes]:
    if isinstance(item, tuple) and len(item) == 2:
        name, data = item
    else:
        name, data = getattr(item, "name", "upload"), item.getvalue()
    if isinstance(data, (bytearray, memoryview)):
        data = bytes(data)
    if not isinstance(data, bytes):
        raise TypeError(f"upload {name!r}: expected bytes, got {type(data).__name__}")
    return str(name), data


def load_batch(
    files: Iterable[Any],
    settings: Settings | None = None,
    target_fps: float = DEFAULT_TARGET_FPS,
    max_frames: int | None = None,
) -> Batch:
    """Turn uploads (images and videos, mixed) into frames; keep the good, list the bad.

    Files are read in order. Each image gives one frame; each video gives the frames of
    its `plan_video`, capped to what is left of the batch's frame budget. Once the budget
    is used up, later files are listed as rejected with the reason.

    Args:
        files: ``(name, bytes)`` pairs or objects with ``.name`` and ``.getvalue()``
            (Streamlit ``UploadedFile``).
        settings: Limits; defaults when None.
        target_fps: Video sampling rate, 0.1..60.
        max_frames: Frame budget of the whole batch; ``settings.max_frames`` when None,
            and never more than it.

    Returns:
        The `Batch`. Names are display names, unique within the batch.

    Raises:
        ValueError: ``target_fps`` or ``max_frames`` out of range (a caller bug, not a file problem).
    """
    settings = settings or Settings()
    lo, hi = TARGET_FPS_RANGE
    if not (lo <= float(target_fps) <= hi):
        raise ValueError(f"target_fps must be in {lo:g}..{hi:g}, got {target_fps}")
    budget = settings.max_frames if max_frames is None else min(int(max_frames), settings.max_frames)
    if budget < 1:
        raise ValueError(f"max_frames must be >= 1, got {max_frames}")
    pairs = [_name_and_bytes(item) for item in files]
    names = unique_display_names(name for name, _ in pairs)
    frames: list[Frame] = []
    rejected: list[Rejected] = []
    notes: list[str] = []
    for (raw_name, data), name in zip(pairs, names):
        left = budget - len(frames)
        if left <= 0:
            rejected.append(
                Rejected(
                    name,
                    (
                        f"{name}: not used: the batch already has {budget} frames, the most one run takes "
                        f"(frame cap; DA3_MAX_FRAMES={settings.max_frames}). Remove some files, lower the video "
                        "frames per second, or raise the cap."
                    ),
                )
            )
            continue
        try:
            if data and looks_like_video(raw_name, data):
                got, plan, _ = _extract(name, data, target_fps, left, settings)
                frames.extend(got)
                text = f"{name}: {plan.summary}"
                if plan.n_dropped and left < budget:
                    text += f"; only {left} of the batch's {budget} frames were left for it"
                if len(got) < plan.n_frames:
                    text += f"; the video ended early, {len(got)} frames decoded"
                notes.append(text + ".")
            else:
                frames.append(load_image(name, data, settings))
        except InputError as exc:
            rejected.append(Rejected(name, str(exc)))
        except MemoryError:
            rejected.append(Rejected(name, f"{name}: not enough memory to read it. Use a smaller file."))
        except Exception as exc:  # noqa: BLE001 - one bad file must not sink the batch
            rejected.append(
                Rejected(
                    name,
                    f"{name}: could not be read ({type(exc).__name__}: {_short(exc)}). "
                    "Re-export the file or use another one.",
                )
            )
    return Batch(frames=frames, rejected=rejected, notes=notes)


# --------------------------------------------------------------------------------------
# Bundled examples
# --------------------------------------------------------------------------------------

_EXAMPLE_FILE = re.compile(r"[A-Za-z0-9_-]{1,40}\.(jpg|jpeg|png)")


def list_examples(root: Path) -> list[Example]:
    """The example scenes under ``root`` (each a folder with ``scene.json`` and images).

    Folders whose ``scene.json`` is missing or malformed are skipped.

    Args:
        root: The examples folder (``examples/`` in the repository).

    Returns:
        The examples, sorted by key.
    """
    root = Path(root)
    out: list[Example] = []
    if not root.is_dir():
        return out
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.is_symlink()):
        meta_path = folder / "scene.json"
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            views = meta["frames"]
            files = []
            for view in views:
                fname = str(view["file"])
                if not _EXAMPLE_FILE.fullmatch(fname):
                    raise ValueError(f"bad file name {fname!r}")
                path = folder / fname
                if not path.is_file():
                    raise ValueError(f"missing {fname}")
                files.append(path)
            extrinsics = np.asarray([v["extrinsics"] for v in views], dtype=np.float64).reshape(len(views), 3, 4)
            intrinsics = np.asarray([v["intrinsics"] for v in views], dtype=np.float64).reshape(len(views), 3, 3)
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if not files:
            continue
        out.append(
            Example(
                key=folder.name,
                title=str(meta.get("title", folder.name)),
                description=str(meta.get("description", "")),
                folder=folder,
                files=tuple(files),
                extrinsics=extrinsics,
                intrinsics=intrinsics,
                meta=meta,
            )
        )
    return out


def load_example(example: Example, settings: Settings | None = None) -> list[Frame]:
    """Decode an example's images.

    Args:
        example: From `list_examples`.
        settings: Limits; defaults when None.

    Returns:
        One frame per view, named by file (``"00.jpg"``), source ``"example:<key>"``.
    """
    frames = []
    for path in example.files:
        frame = load_image(path.name, path.read_bytes(), settings)
        frames.append(Frame(name=frame.name, image=frame.image, source=f"example:{example.key}", note=frame.note))
    return frames
