"""Known cameras in: read, check, match to frames, rescale. Parent side, pure, no torch.

Two forms are read (``docs/CONVENTIONS.md``, "Known cameras"):

* a COLMAP sparse model: ``cameras`` + ``images``, text (``.txt``) or binary (``.bin``),
  loose or in a ``.zip``; read with ``pycolmap.Reconstruction`` in a child process with a
  memory and time limit (a crafted binary file can make the C++ reader allocate without
  bound; the Streamlit server must not be the process that does). Only cameras and images
  are read: an empty ``points3D`` file is written beside them, and rigs/frames/points files
  that came along are ignored (``images`` holds every pose);
* a JSON or NPZ file with DA3's field names: ``extrinsics`` (N, 4, 4) or (N, 3, 4)
  world-to-camera, OpenCV axes; ``intrinsics`` (N, 3, 3) or one (3, 3) for all, in pixels;
  ``names`` (N,) the image names; optionally ``width`` and ``height`` (one value or N), the
  image size the intrinsics refer to (an NPZ's ``image`` array gives it too, so this
  dashboard's own NPZ export reads back). NPZ is read with ``allow_pickle=False``.

Every problem raises `CameraFileError`, whose message names the file and the field or line.

Decisions (also in the conventions):

* Camera models: ``SIMPLE_PINHOLE`` and ``PINHOLE`` are used as they are. The radial and
  tangential models (``SIMPLE_RADIAL``, ``RADIAL``, ``OPENCV``, ``FULL_OPENCV``) give their
  pinhole part; DA3 takes pinhole cameras only, so the distortion is ignored and the match
  table says so for each frame whose coefficients are not all zero (undistort the images,
  e.g. ``colmap image_undistorter``, for exact results). Fisheye and other non-pinhole
  models (``*FISHEYE*``, ``FOV``, ``*DIVISION``, ``EUCM``, ``EQUIRECTANGULAR``) are refused.
* COLMAP's principal point is taken as written, as DA3's own COLMAP exporter writes it (no
  half-pixel shift), so this dashboard's COLMAP export reads back exactly.
* Matching is by image name: exact, then the last path part, then case-insensitively, then
  by the name without its extension (``a.png`` matches a camera named ``a.jpg``) when that
  is unique. A camera serves one frame.
* When a camera's width/height differ from the frame's (frames may be downscaled on upload,
  ``DA3_MAX_SIDE``), the intrinsics are scaled the way DA3 scales them (``K[0] *= W/w``,
  ``K[1] *= H/h``); an aspect ratio that differs by more than 1 % is refused for that frame.
* Implausible focal lengths are refused, naming the camera: fx and fy more than
  `MAX_FOCAL_RATIO` apart, or a field of view outside `FOV_RANGE_DEG` for the image size
  (the file's, else the frame's: that camera is then not used); fx and fy more than 10 %
  apart are taken and noted. A ``.bin`` that ends early or runs on past its last record is
  refused as truncated or corrupt before pycolmap reads it.
* Cameras for only some frames: DA3's ``inference()`` takes extrinsics and intrinsics for
  all views or for none (its input processor checks the lengths; the camera encoder embeds
  every view). `Match.known` is then None; the page offers to run only the frames that
  have cameras, or to estimate every camera.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

CAMERA_EXTENSIONS = ("txt", "bin", "json", "npz", "zip")


ROTATION_TOL = 1e-3


"""Largest |det R - 1| and max |R R^T - I| accepted (files rounded to 4+ decimals pass)."""


ASPECT_TOL = 0.01


MAX_FILE_BYTES = 256 * 2**20


MAX_VALUES = 10_000_000


"""Most numbers one NPZ field may hold (a declared shape larger than this is refused unread)."""


PINHOLE_MODELS = ("SIMPLE_PINHOLE", "PINHOLE")


DISTORTION_MODELS = ("SIMPLE_RADIAL", "RADIAL", "OPENCV", "FULL_OPENCV")


"""Pinhole plus radial/tangential distortion: the pinhole part is used, the distortion ignored."""


_REFUSED_HELP = (
    "DA3 takes pinhole cameras only. Undistort the images to a pinhole model first "
    "(e.g. `colmap image_undistorter`) and upload that model."
)


class CameraFileError(ValueError):
    """A camera file DA3 cannot use. The message names the file and the field or line.

    Attributes:
        file: The file's name as uploaded.
        where: The field or line (``"extrinsics[2]"``, ``"line 7"``), or "".
        problem: What is wrong, in words.
    """

    def __init__(self, file: str, where: str, problem: str) -> None:
        self.file, self.where, self.problem = file, where, problem
        super().__init__(f"{file}" + (f", {where}" if where else "") + f": {problem}")


@dataclass(frozen=True, eq=False)
class CameraEntry:
    """One camera of a file, for one image.

    Attributes:
        name: The image name as the file gives it.
        extrinsic: (4, 4) float64 world-to-camera, OpenCV axes.
        intrinsic: (3, 3) float64 pinhole K in pixels of a ``width`` x ``height`` image.
        width / height: The image size ``intrinsic`` refers to, or None (then the frame's).
        model: Camera model (COLMAP's name, or ``"PINHOLE"`` for JSON/NPZ).
        note: What was done or ignored (distortion), or "".
        where: The record in the file (``"images.txt line 5"``, ``"extrinsics[3]"``).
    """

    name: str
    extrinsic: np.ndarray
    intrinsic: np.ndarray
    width: int | None
    height: int | None
    model: str = "PINHOLE"
    note: str = ""
    where: str = ""


@dataclass(frozen=True)
class CameraSet:
    """The cameras read from one upload (`read_camera_files`)."""

    source: str
    files: tuple[str, ...]
    entries: tuple[CameraEntry, ...]

    @property
    def label(self) -> str:
        """``"given (COLMAP)"`` and so on."""
        return f"given ({self.source})"


@dataclass(frozen=True, eq=False)
class KnownCameras:
    """Cameras for every frame of a run, as `ReconstructRequest` takes them.

    Attributes:
        extrinsics: (N, 4, 4) float64 world-to-camera.
        intrinsics: (N, 3, 3) float64 in pixels of each frame (the arrays DA3 is given).
        source: ``"COLMAP"``, ``"JSON"`` or ``"NPZ"``.
    """

    extrinsics: np.ndarray
    intrinsics: np.ndarray
    source: str

    @property
    def label(self) -> str:
        return f"given ({self.source})"

    def subset(self, indices: Sequence[int]) -> KnownCameras:
        idx = list(indices)
        return KnownCameras(self.extrinsics[idx].copy(), self.intrinsics[idx].copy(), self.source)


def rotation_problem(r: np.ndarray, tol: float = ROTATION_TOL) -> str | None:
    """Why a 3x3 is not a rotation (det != 1 or not orthonormal), or None."""
    det = float(np.linalg.det(r))
    off = float(np.abs(r @ r.T - np.eye(3)).max())
    if abs(det - 1.0) <= tol and off <= tol:
        return None
    if abs(det + 1.0) <= tol and off <= tol:
        return "the 3x3 part is a reflection (det -1), not a rotation: left-handed axes?"
    return f"the 3x3 part is not a rotation (det {det:.4g}, max |R Rᵀ − I| {off:.3g}; tolerance {tol:g})"


def _check_extrinsic(e: np.ndarray, file: str, where: str, full: np.ndarray | None = None) -> None:
    if not np.isfinite(e).all() or (full is not None and not np.isfinite(full).all()):
        raise CameraFileError(file, where, "NaN or inf in the pose")
    if full is not None and np.abs(full[3] - [0.0, 0.0, 0.0, 1.0]).max() > 1e-9:
        raise CameraFileError(
            file, where, f"the last row of a 4x4 must be [0, 0, 0, 1], got {np.round(full[3], 6).tolist()}"
        )
    problem = rotation_problem(e[:3, :3])
    if problem:
        raise CameraFileError(file, where, problem)


def _check_intrinsic(k: np.ndarray, file: str, where: str, size: tuple[int | None, int | None] = (None, None)) -> None:
    if not np.isfinite(k).all():
        raise CameraFileError(file, where, "NaN or inf in the intrinsics")
    if k[0, 0] <= 0 or k[1, 1] <= 0:
        sign = "negative" if min(k[0, 0], k[1, 1]) < 0 else "zero"
        raise CameraFileError(
            file, where, f"{sign} focal length (fx={k[0, 0]:g}, fy={k[1, 1]:g}): focal lengths must be > 0"
        )
    if abs(k[1, 0]) > 1e-9 or abs(k[2, 0]) > 1e-9 or abs(k[2, 1]) > 1e-9 or abs(k[2, 2] - 1.0) > 1e-9:
        raise CameraFileError(file, where, "not a pinhole K: expected [[fx, s, cx], [0, fy, cy], [0, 0, 1]]")
    problem = focal_problem(k, *size)
    if problem:
        raise CameraFileError(file, where, problem)


MAX_FOCAL_RATIO = 3.0


"""Largest fx/fy (or fy/fx) taken: square pixels give 1, anamorphic lenses up to about 2."""


NOTED_FOCAL_RATIO = 1.1


"""An fx/fy beyond this is taken but said in the match table (non-square pixels?)."""


FOV_RANGE_DEG = (0.5, 170.0)


"""Fields of view a pinhole camera can have: narrower is a telescope, wider no pinhole model."""


def _fov_deg(focal: float, side: float) -> float:
    return float(np.degrees(2.0 * np.arctan2(side / 2.0, focal)))


def focal_problem(k: np.ndarray, width: int | None = None, height: int | None = None) -> str | None:
    """Why K's focal lengths are not a plausible camera, or None: fx and fy further apart
    than `MAX_FOCAL_RATIO`, or (with the image size) a field of view outside `FOV_RANGE_DEG`.
    Such a K is a typo or a damaged file, and DA3 would read it as the camera's field of view."""
    fx, fy = float(k[0, 0]), float(k[1, 1])
    ratio = max(fx, fy) / min(fx, fy)
    if ratio > MAX_FOCAL_RATIO:
        return (
            f"implausible focal lengths fx={fx:.6g} and fy={fy:.6g} px (they differ {ratio:,.3g}-fold; a real camera's "
            f"differ by at most {MAX_FOCAL_RATIO:g}x): a typo or a damaged file?"
        )
    lo, hi = FOV_RANGE_DEG
    for axis, focal, side in (("horizontal", fx, width), ("vertical", fy, height)):
        if side:
            fov = _fov_deg(focal, side)
            if not lo <= fov <= hi:
                return (
                    f"implausible focal length {'fx' if axis == 'horizontal' else 'fy'}={focal:.6g} px for an image "
                    f"{side} px {'wide' if axis == 'horizontal' else 'high'}: a {axis} field of view of {fov:.3g}° "
                    f"(a pinhole camera has {lo:g}° to {hi:g}°): a typo, or intrinsics of another image size?"
                )
    return None


def focal_note(k: np.ndarray) -> str:
    """A note for the match table when fx and fy differ noticeably but plausibly, else ""."""
    fx, fy = float(k[0, 0]), float(k[1, 1])
    ratio = max(fx, fy) / min(fx, fy)
    return f"fx and fy differ {ratio:.2f}-fold (non-square pixels?)" if ratio > NOTED_FOCAL_RATIO else ""


def describe(params: dict[str, Any] | None, has_poses: bool = True) -> str:
    """How a run got its cameras, for the pages: ``given (COLMAP)``, ``estimated``, ...

    Runs saved before known cameras existed have no ``cameras`` entry: they were estimated
    (or there were none, for monocular presets).
    """
    label = (params or {}).get("cameras")
    if isinstance(label, str) and label:
        if label.startswith("given") and (params or {}).get("align_to_input_ext_scale") is False:
            return label + ", DA3's frame (align_to_input_ext_scale off)"
        return label
    if not has_poses:
        return "none (monocular preset)"
    return "estimated" + (" (ray head)" if (params or {}).get("use_ray_pose") else "")
