"""A batch of uploads to frames (images and videos together, each failure kept with its reason),
and the bundled example scenes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from da3_core.config import Settings
from da3_core.media.filenames import unique_display_names
from da3_core.media.image_io import load_image, looks_like_video
from da3_core.media.inputs import Batch, Example, Frame, InputError, Rejected
from da3_core.media.video_io import DEFAULT_TARGET_FPS, TARGET_FPS_RANGE, _extract, _short


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
