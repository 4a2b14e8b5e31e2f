"""Builders for the input test corpus: good and bad images and videos, made on the fly.

Nothing here is checked in; tests write what they need into pytest tmp dirs.
"""

from __future__ import annotations

import io
import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def encode(im: Image.Image, fmt: str, **kwargs: object) -> bytes:
    """Pillow image -> file bytes in ``fmt``."""
    buf = io.BytesIO()
    im.save(buf, fmt, **kwargs)
    return buf.getvalue()


def noise_rgb(width: int = 200, height: int = 150, seed: int = 0) -> Image.Image:
    """Random RGB image (incompressible, so truncation always cuts pixel data)."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def gradient_rgb(width: int = 96, height: int = 64) -> Image.Image:
    """Smooth RGB gradient (survives lossy codecs nearly unchanged)."""
    y, x = np.mgrid[0:height, 0:width]
    arr = np.stack([x * 255 // (width - 1), y * 255 // (height - 1), np.full_like(x, 128)], axis=2)
    return Image.fromarray(arr.astype(np.uint8))


def quadrants(width: int, height: int, top_left: tuple[int, int, int], rest: tuple[int, int, int]) -> Image.Image:
    """An image whose top-left quadrant is one colour and the rest another."""
    arr = np.empty((height, width, 3), np.uint8)
    arr[:] = rest
    arr[: height // 2, : width // 2] = top_left
    return Image.fromarray(arr)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG with a valid IHDR claiming ``width`` x ``height`` RGB and no pixel data at all."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IEND", b"")


def png16_rgb(arr: np.ndarray) -> bytes:
    """(H, W, 3) uint16 -> a real 16-bit-per-channel RGB PNG (Pillow cannot write one)."""
    h, w, _ = arr.shape
    raw = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))
    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(raw))
        + _png_chunk(b"IEND", b"")
    )


def jpeg_with_orientation(im: Image.Image, orientation: int) -> bytes:
    """JPEG whose EXIF Orientation tag is ``orientation`` (pixels stored as given)."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(im, "JPEG", quality=95, exif=exif.tobytes())


def animated_gif(colors: list[tuple[int, int, int]], size: tuple[int, int] = (32, 24)) -> bytes:
    frames = [Image.new("RGB", size, c) for c in colors]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return buf.getvalue()


def ffmpeg_exe() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def index_video(path: Path, n_frames: int = 90, fps: int = 30, size: tuple[int, int] = (64, 48)) -> Path:
    """An H.264 MP4 (written with imageio-ffmpeg) whose frame i is flat grey ``2 * i + 20``.

    The grey level identifies the frame after decoding (to within codec error).
    """
    import imageio_ffmpeg

    width, height = size
    writer = imageio_ffmpeg.write_frames(
        str(path),
        (width, height),
        fps=fps,
        codec="libx264",
        pix_fmt_out="yuv420p",
        quality=9,
        macro_block_size=16,
        output_params=["-g", "10"],
    )
    writer.send(None)
    for i in range(n_frames):
        writer.send(np.full((height, width, 3), 2 * i + 20, np.uint8))
    writer.close()
    return path


def frame_index_from_grey(image: np.ndarray) -> int:
    """Invert `index_video`'s coding."""
    return int(round((float(image.mean()) - 20.0) / 2.0))


def lavfi_video(path: Path, *args: str) -> Path:
    """Run ffmpeg with a lavfi test source; ``args`` go between the input and the output."""
    cmd = [
        ffmpeg_exe(),
        "-v",
        "error",
        "-y",
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=64x48:rate=10:duration=1",
        *args,
        str(path),
    ]
    subprocess.run(cmd, check=True, capture_output=True, timeout=60)
    return path
