"""Known cameras matched to frames by name (with or without extension, case, folders) and
rescaled to the frame size; what matched and what did not, row by row, for the page.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from da3_core.media.cameras import ASPECT_TOL, CameraSet, KnownCameras, focal_problem


@dataclass(frozen=True)
class MatchRow:
    """One line of the match table."""

    frame: str
    camera: str | None
    fx: float | None = None
    fy: float | None = None
    cx: float | None = None
    cy: float | None = None
    note: str = ""

    def as_dict(self) -> dict[str, str]:
        """The row as the page shows it (strings: "—" where there is no camera)."""
        focal = (
            "—"
            if self.fx is None
            else (f"{self.fx:.1f}" if abs(self.fx - (self.fy or 0)) < 0.05 else f"{self.fx:.1f} / {self.fy:.1f}")
        )
        centre = "—" if self.cx is None else f"({self.cx:.1f}, {self.cy:.1f})"
        return {
            "frame": self.frame,
            "camera found": self.camera or "— none",
            "focal length (px)": focal,
            "centre (px)": centre,
            "note": self.note,
        }


@dataclass(frozen=True, eq=False)
class Match:
    """Cameras matched to frames (`match_cameras`).

    Attributes:
        source: Where the cameras came from (``"COLMAP"``, ...).
        rows: One per frame, frame order.
        extrinsics / intrinsics: (N, 4, 4) and (N, 3, 3), NaN for frames without a camera;
            intrinsics already in each frame's pixels.
        unused: Names of cameras in the file that matched no frame.
    """

    source: str
    rows: tuple[MatchRow, ...]
    extrinsics: np.ndarray
    intrinsics: np.ndarray
    unused: tuple[str, ...] = field(default_factory=tuple)

    @property
    def matched(self) -> list[int]:
        """Indices of the frames that have a camera."""
        return [i for i, r in enumerate(self.rows) if r.camera is not None]

    @property
    def complete(self) -> bool:
        return len(self.matched) == len(self.rows) > 0

    @property
    def known(self) -> KnownCameras | None:
        """The cameras of every frame, or None unless every frame has one (DA3: all or none)."""
        if not self.complete:
            return None
        return KnownCameras(self.extrinsics.copy(), self.intrinsics.copy(), self.source)

    def known_for_matched(self) -> KnownCameras | None:
        """The cameras of the frames that have one (for a run of only those frames)."""
        idx = self.matched
        return KnownCameras(self.extrinsics[idx].copy(), self.intrinsics[idx].copy(), self.source) if idx else None

    def table(self) -> list[dict[str, str]]:
        return [r.as_dict() for r in self.rows]

    def summary(self) -> str:
        """What DA3 will do with these cameras, in plain words."""
        n, k = len(self.rows), len(self.matched)
        extra = (
            f" {len(self.unused)} camera(s) in the file name no frame: {', '.join(self.unused[:5])}"
            + (" …" if len(self.unused) > 5 else "")
            + "."
            if self.unused
            else ""
        )
        implausible = [r for r in self.rows if r.camera is None and "implausible" in r.note]
        if implausible:
            extra += "".join(f" Frame {r.frame}: {r.note}." for r in implausible[:3]) + (
                " …" if len(implausible) > 3 else ""
            )
        if n and k == n:
            return f"Every frame ({n}) has a camera: DA3 runs with them (cameras: given ({self.source})).{extra}"
        if k == 0:
            return f"No frame has a camera in this file (matched by image name): DA3 estimates every camera.{extra}"
        return (
            f"{k} of {n} frames have a camera. DA3's inference() takes cameras for all views or for none, "
            f"so DA3 cannot use them for only some frames: run only the {k} frames with cameras, or let DA3 "
            f"estimate every camera (the file is then ignored).{extra}"
        )


def _keys(name: str) -> tuple[str, str, str, str]:
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    low = base.lower()
    stem = low.rpartition(".")[0] or low
    return name, base, low, stem


def rescale_intrinsic(k: np.ndarray, from_wh: tuple[int, int], to_wh: tuple[int, int]) -> np.ndarray:
    """K for the same camera at another image size, as DA3 scales it (``_resize_ixt``):
    row 0 (fx, skew, cx) times ``W/w``, row 1 (fy, cy) times ``H/h``."""
    out = np.array(k, dtype=np.float64, copy=True)
    out[:1] *= to_wh[0] / float(from_wh[0])
    out[1:2] *= to_wh[1] / float(from_wh[1])
    return out


def match_cameras(cams: CameraSet, names: Sequence[str], sizes: Sequence[tuple[int, int]]) -> Match:
    """Match cameras to frames by image name and bring their intrinsics to the frames' sizes.

    Args:
        cams: The cameras read.
        names: The frames' display names, in order.
        sizes: The frames' (width, height), in order.

    Returns:
        The `Match` (its ``known`` is set only when every frame has a camera).
    """
    levels: list[dict[str, int | None]] = [{}, {}, {}, {}]
    for j, entry in enumerate(cams.entries):
        for level, key in zip(levels, _keys(entry.name)):
            level[key] = None if key in level else j  # None: ambiguous at this level
    n = len(names)
    ext = np.full((n, 4, 4), np.nan)
    ixt = np.full((n, 3, 3), np.nan)
    rows: list[MatchRow] = []
    used: dict[int, str] = {}
    refused: set[int] = set()
    for i, (frame, (w, h)) in enumerate(zip(names, sizes)):
        found = next((level[key] for level, key in zip(levels, _keys(frame)) if level.get(key) is not None), None)
        if found is None:
            rows.append(MatchRow(frame, None, note=f"no camera named like this frame in {', '.join(cams.files)}"))
            continue
        j = found
        entry = cams.entries[j]
        if j in used:
            rows.append(MatchRow(frame, None, note=f"camera {entry.name!r} already serves frame {used[j]!r}"))
            continue
        k, notes = entry.intrinsic, [entry.note] if entry.note else []
        if entry.width is not None and entry.height is not None and (entry.width, entry.height) != (w, h):
            a_cam, a_frame = entry.width / entry.height, w / h
            if abs(a_cam - a_frame) / a_frame > ASPECT_TOL:
                rows.append(
                    MatchRow(
                        frame,
                        None,
                        note=(
                            f"camera {entry.name!r} is {entry.width}x{entry.height}, the frame "
                            f"{w}x{h}: the aspect ratios differ (a rotated photo?), so it is not used"
                        ),
                    )
                )
                continue
            k = rescale_intrinsic(k, (entry.width, entry.height), (w, h))
            notes.append(f"intrinsics rescaled from {entry.width}x{entry.height} to the frame's {w}x{h}")
        problem = focal_problem(k, w, h)  # the file gave no image size: judged against the frame's
        if problem:
            rows.append(MatchRow(frame, None, note=f"camera {entry.name!r} not used: {problem}"))
            refused.add(j)
            continue
        used[j] = frame
        ext[i], ixt[i] = entry.extrinsic, k
        rows.append(
            MatchRow(
                frame, entry.name, float(k[0, 0]), float(k[1, 1]), float(k[0, 2]), float(k[1, 2]), "; ".join(notes)
            )
        )
    unused = tuple(e.name for j, e in enumerate(cams.entries) if j not in used and j not in refused)
    return Match(cams.source, tuple(rows), ext, ixt, unused)


def names_and_sizes(frames: Iterable[Any]) -> tuple[list[str], list[tuple[int, int]]]:
    """(names, (width, height) sizes) of `da3_core.media.inputs.Frame`-like objects."""
    frames = list(frames)
    return [f.name for f in frames], [(int(f.image.shape[1]), int(f.image.shape[0])) for f in frames]
