"""Images in: decode (HEIC/AVIF through pillow-heif, registered lazily), orient, convert to RGB,
limit the side, and refuse what cannot be a frame with an `InputError` naming the file.
"""

from __future__ import annotations

import io
import threading

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from da3_core.config import Settings
from da3_core.media.filenames import _extension, sniff
from da3_core.media.inputs import _MB, MIN_SIDE, VIDEO_EXTENSIONS, Frame, InputError

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
