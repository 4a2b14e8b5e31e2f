"""Names and sniffing: a user's file name made a safe display name, and what a file really is,
read from its first bytes (never from its extension).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

from da3_core.media.inputs import MAX_NAME_CHARS


@dataclass(frozen=True)
class Sniffed:
    """What the first bytes of a file say it is.

    Attributes:
        kind: ``"image"``, ``"video"`` or None (unknown).
        ext: Canonical extension for the content (``"jpg"``, ``"mp4"``...), or None.
    """

    kind: str | None
    ext: str | None


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
