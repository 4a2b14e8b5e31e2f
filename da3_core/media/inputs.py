"""Uploads -> validated frames: the types (`Frame`, `Batch`, `Rejected`, `InputError`, ...) and
the choices every reader follows. The readers: `da3_core.media.batches` (a batch of uploads,
the example scenes), `image_io` (images, incl. HEIC), `video_io` (probe, plan, seek) and
`filenames` (display names, sniffing).

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

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

MIN_SIDE = 14


"""Smallest accepted image side in pixels (DA3's ViT patch size)."""


"""Allowed sampling rates for video, frames per second (the DA3 app's slider range)."""


"""The DA3 app's default sampling rate."""


IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "bmp", "tif", "tiff", "webp", "heic", "heif", "avif", "gif")


VIDEO_EXTENSIONS = ("mp4", "mov", "avi", "mkv", "webm")


UPLOAD_EXTENSIONS = IMAGE_EXTENSIONS + VIDEO_EXTENSIONS


"""Extensions for ``st.file_uploader(type=...)``. Content decides; these only filter the picker."""


MAX_NAME_CHARS = 80


"""Longest display name kept (longer names are shortened in the middle, extension kept)."""


_MB = 1024 * 1024


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


"""What a run costs beyond its decoding: start ffmpeg, open the file, seek, set up the
decoder (measured 0.02 s for a 64x48 clip, 0.04 s for a 10-minute 720p MP4, 2 cores)."""


"""Decode cost model, ``per frame + per pixel * width * height`` (measured with H.264 on 2
cores: 0.65-0.95 ms per 720p frame, 0.05-0.07 ms per 64x48 frame). Only its order matters:
a seek is worth ~40 frames of 720p, ~750 of 64x48."""


"""Frames closer than this have no seek point that tells them apart reliably (``-ss`` is in
microseconds): such videos take the old path."""


"""The timeline is written for videos of up to a million frames (9 h at 30 fps; ~70 bytes a
frame); ffmpeg stops writing at this size (``-fs``) and such videos take the old path."""
