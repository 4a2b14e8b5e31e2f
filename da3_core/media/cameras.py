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

import collections
import io
import json
import os
import struct
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

CAMERA_EXTENSIONS = ("txt", "bin", "json", "npz", "zip")
ROTATION_TOL = 1e-3
"""Largest |det R - 1| and max |R R^T - I| accepted (files rounded to 4+ decimals pass)."""
ASPECT_TOL = 0.01
MAX_FILE_BYTES = 256 * 2**20
MAX_VALUES = 10_000_000
"""Most numbers one NPZ field may hold (a declared shape larger than this is refused unread)."""
COLMAP_TIMEOUT_S = 60.0
COLMAP_MEMORY_BYTES = 4 * 2**30

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


# --------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------


def _ext(name: str) -> str:
    stem, dot, ext = name.rpartition(".")
    return ext.lower() if dot and stem else ""


def read_camera_files(files: Sequence[tuple[str, bytes]]) -> CameraSet:
    """Read one upload of camera files.

    Args:
        files: (name, content) pairs: one ``.json``, one ``.npz``, one ``.zip`` holding a
            COLMAP model, or loose COLMAP files (``cameras.txt`` + ``images.txt``, or the
            ``.bin`` pair; ``points3D``/``rigs``/``frames`` files are accepted and ignored).

    Returns:
        The cameras, checked (`CameraSet`).

    Raises:
        CameraFileError: Anything DA3 cannot use; the message names the file and the field or line.
    """
    files = [(str(n), bytes(d)) for n, d in files]
    if not files:
        raise CameraFileError("camera files", "", "no file was given")
    for name, data in files:
        if _ext(name) not in CAMERA_EXTENSIONS:
            raise CameraFileError(
                name, "", "not a camera file: give a COLMAP model (.txt/.bin, or a .zip of them), a .json or a .npz"
            )
        if len(data) > MAX_FILE_BYTES:
            raise CameraFileError(
                name, "", f"{len(data) / 2**20:.0f} MB is more than the {MAX_FILE_BYTES // 2**20} MB allowed"
            )
    kinds = {_ext(n) for n, _ in files}
    if kinds & {"json", "npz", "zip"} and len(files) > 1:
        raise CameraFileError(
            ", ".join(n for n, _ in files),
            "",
            "give one .json, one .npz, one .zip, or the loose COLMAP files, not a mix",
        )
    name, data = files[0]
    if kinds == {"json"}:
        return read_json(name, data)
    if kinds == {"npz"}:
        return read_npz(name, data)
    if kinds == {"zip"}:
        return read_colmap(_colmap_files_from_zip(name, data))
    return read_colmap({n: d for n, d in files})


def _colmap_files_from_zip(zip_name: str, data: bytes) -> dict[str, bytes]:
    """The COLMAP files of a zip (by their last path part), size-checked before reading."""
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise CameraFileError(zip_name, "", f"not a readable zip ({exc})") from None
    found: dict[str, bytes] = {}
    with zf:
        for info in zf.infolist():
            base = PurePosixPath(info.filename.replace("\\", "/")).name
            stem = base.rpartition(".")[0]
            if info.is_dir() or stem not in ("cameras", "images") or _ext(base) not in ("txt", "bin"):
                continue
            if base in found:
                raise CameraFileError(zip_name, info.filename, f"a second {base}: the zip must hold one COLMAP model")
            if info.file_size > MAX_FILE_BYTES:
                raise CameraFileError(zip_name, info.filename, f"{info.file_size / 2**20:.0f} MB is more than allowed")
            found[base] = zf.read(info)
    if not found:
        raise CameraFileError(
            zip_name, "", "no COLMAP cameras/images file (cameras.txt + images.txt, or .bin) in the zip"
        )
    return {f"{zip_name}/{n}": d for n, d in found.items()}


def _colmap_role(name: str) -> tuple[str, str]:
    base = PurePosixPath(name.replace("\\", "/")).name
    return base.rpartition(".")[0], _ext(base)


def read_colmap(files: dict[str, bytes]) -> CameraSet:
    """Read a COLMAP sparse model's cameras and images (text or binary) with pycolmap.

    Args:
        files: File name (as uploaded; its last part says which file it is) -> content.
            ``cameras`` and ``images`` are needed, in the same format.

    Raises:
        CameraFileError: Missing or mixed files, a file pycolmap cannot read, or a camera
            DA3 cannot take (the message names the file and line or record).
    """
    roles: dict[str, tuple[str, bytes]] = {}
    for name, data in files.items():
        stem, suffix = _colmap_role(name)
        if stem in ("cameras", "images"):
            if stem in roles:
                raise CameraFileError(name, "", f"two {stem} files were given ({roles[stem][0]} and {name})")
            roles[stem] = (name, data)
        elif stem not in ("points3D", "rigs", "frames") or suffix not in ("txt", "bin"):
            raise CameraFileError(
                name, "", "not a COLMAP model file (cameras, images, points3D, rigs or frames .txt/.bin)"
            )
    for needed in ("cameras", "images"):
        if needed not in roles:
            other = "images" if needed == "cameras" else "cameras"
            raise CameraFileError(
                roles[other][0] if other in roles else "COLMAP model",
                "",
                f"the {needed} file is missing: upload {needed}.txt or {needed}.bin as well",
            )
    (cam_name, cam_data), (img_name, img_data) = roles["cameras"], roles["images"]
    fmt = _colmap_role(cam_name)[1]
    if _colmap_role(img_name)[1] != fmt:
        raise CameraFileError(
            img_name, "", f"{cam_name} and {img_name} are in different formats: give both as .txt or both as .bin"
        )
    if fmt == "bin":  # before pycolmap, which blames a cut-off file on a missing rig or camera
        check_colmap_binary(cam_name, cam_data, "cameras")
        check_colmap_binary(img_name, img_data, "images")
    with tempfile.TemporaryDirectory(prefix="da3-colmap-") as tmp:
        Path(tmp, f"cameras.{fmt}").write_bytes(cam_data)
        Path(tmp, f"images.{fmt}").write_bytes(img_data)
        Path(tmp, f"points3D.{fmt}").write_bytes(struct.pack("<Q", 0) if fmt == "bin" else b"")
        out = _read_colmap_isolated(tmp, fmt, cam_name, img_name)
    texts = None if fmt == "bin" else (cam_data.decode("utf-8", "replace"), img_data.decode("utf-8", "replace"))
    if "error" in out:
        raise _colmap_error(out["error"], cam_name, img_name, texts)
    cams = {int(c["id"]): c for c in out["cameras"]}
    if texts is not None:  # COLMAP's text reader skips an image whose 2D-points line is missing: say so
        read_ids = {str(int(im["id"])) for im in out["images"]}
        for n, tokens in _image_pose_lines(texts[1]):
            if tokens and tokens[0] not in read_ids:
                name = tokens[9] if len(tokens) > 9 else tokens[0]
                raise CameraFileError(
                    img_name,
                    f"line {n}",
                    f"image {name!r} was not read: COLMAP needs two lines per image "
                    "(the pose, then its 2D points, which may be an empty line)",
                )
    entries = []
    for im in sorted(out["images"], key=lambda r: int(r["id"])):
        cam = cams.get(int(im["camera_id"]))
        img_where = _image_where(img_name, int(im["id"]), texts)
        if cam is None:  # pycolmap refuses this itself; kept for safety
            raise CameraFileError(
                img_name,
                img_where,
                f"image {im['name']!r} uses camera {im['camera_id']}, which {cam_name} does not have",
            )
        cam_where = _camera_where(int(cam["id"]), texts)
        model = str(cam["model"])
        if model not in PINHOLE_MODELS + DISTORTION_MODELS:
            kind = "a fisheye model" if "FISHEYE" in model or model == "FOV" else "not a pinhole model"
            raise CameraFileError(cam_name, cam_where, f"camera {cam['id']} is {model}, {kind}: {_REFUSED_HELP}")
        k = np.asarray(cam["K"], dtype=np.float64)
        ext = np.eye(4)
        ext[:3, :] = np.asarray(im["cam_from_world"], dtype=np.float64)
        if int(cam["width"]) <= 0 or int(cam["height"]) <= 0:
            raise CameraFileError(cam_name, cam_where, f"camera {cam['id']} has size {cam['width']}x{cam['height']}")
        _check_intrinsic(k, cam_name, cam_where + f" (camera {cam['id']})", (int(cam["width"]), int(cam["height"])))
        _check_extrinsic(ext, img_name, img_where + f" ({im['name']})")
        note = focal_note(k)
        extra = [float(v) for v in cam["extra"]]
        if model in DISTORTION_MODELS and any(v != 0.0 for v in extra):
            names = cam["extra_names"]
            coeffs = ", ".join(f"{n}={v:.3g}" for n, v in zip(names, extra))
            note = "; ".join(filter(None, [note, f"{model} distortion ignored ({coeffs}): DA3 takes pinhole cameras"]))
        entries.append(
            CameraEntry(
                str(im["name"]),
                ext,
                k,
                int(cam["width"]),
                int(cam["height"]),
                model,
                note,
                f"{img_name} {img_where}".strip(),
            )
        )
    if not entries:
        raise CameraFileError(img_name, "", "holds no image")
    return CameraSet("COLMAP", (cam_name, img_name), tuple(entries))


# COLMAP's camera model ids and their parameter counts (colmap/sensor/models.h), for
# walking cameras.bin; an id not listed is left to pycolmap.
_COLMAP_PARAMS = {
    0: 3,
    1: 4,
    2: 4,
    3: 5,
    4: 8,
    5: 8,
    6: 12,
    7: 5,
    8: 4,
    9: 5,
    10: 12,
    11: 16,
    12: 4,
    13: 5,
    14: 3,
    15: 4,
    16: 6,
    17: 2,
}
_IMAGE_FIXED = struct.calcsize("<I4d3dI")  # image_id, qvec, tvec, camera_id
_POINT2D = struct.calcsize("<ddq")  # x, y, point3D_id
_CAMERA_FIXED = struct.calcsize("<IiQQ")  # camera_id, model_id, width, height


def check_colmap_binary(name: str, data: bytes, kind: str) -> None:
    """Walk a COLMAP ``cameras.bin`` or ``images.bin`` record by record, reading only the
    counts and lengths, and refuse a file that ends early or goes on past its last record.

    pycolmap reads a cut-off file as far as it goes and then reports something else
    ("Rig with ID 0 does not exist") or, for cameras.bin, reads garbage focal lengths.

    Args:
        name: The file's name as uploaded (named in the message).
        data: Its bytes.
        kind: ``"cameras"`` or ``"images"``.

    Raises:
        CameraFileError: The file is truncated or corrupt (the message says where).
    """
    what = "camera" if kind == "cameras" else "image"
    size = len(data)

    def broken(detail: str) -> CameraFileError:
        return CameraFileError(
            name,
            "",
            f"the file is truncated or corrupt: {detail}. Export the COLMAP model again (or upload the .txt files)",
        )

    if size < 8:
        raise broken(f"it has {size} byte(s), too few for even the {kind} count")
    count = struct.unpack_from("<Q", data, 0)[0]
    at = 8
    for i in range(count):
        if kind == "cameras":
            if at + _CAMERA_FIXED > size:
                raise broken(f"it declares {count} {kind} and ends inside {what} {i + 1} (byte {size})")
            cid, model_id = struct.unpack_from("<Ii", data, at)[:2]
            n_params = _COLMAP_PARAMS.get(model_id)
            if n_params is None:
                return  # a model this walk does not know: pycolmap says what it makes of it
            at += _CAMERA_FIXED + 8 * n_params
        else:
            if at + _IMAGE_FIXED > size:
                raise broken(f"it declares {count} {kind} and ends inside {what} {i + 1} (byte {size})")
            end = data.find(b"\0", at + _IMAGE_FIXED)
            if end < 0:
                raise broken(f"it declares {count} {kind} and ends inside the name of {what} {i + 1}")
            if end + 1 + 8 > size:
                raise broken(f"it declares {count} {kind} and ends inside {what} {i + 1} (byte {size})")
            points = struct.unpack_from("<Q", data, end + 1)[0]
            at = end + 1 + 8
            if points > (size - at) // _POINT2D:
                raise broken(f"{what} {i + 1} declares {points:,} 2D points but only {size - at:,} bytes follow")
            at += points * _POINT2D
        if at > size:
            raise broken(f"it declares {count} {kind} and ends inside {what} {i + 1} (byte {size})")
    if at != size:
        raise broken(f"{size - at:,} byte(s) follow its last {what} ({count} declared)")


# The child process that runs pycolmap: limits its own memory first, prints JSON.
_CHILD = r"""
import json, resource, sys
limit = int(sys.argv[3])
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
try:
    import pycolmap
    r = pycolmap.Reconstruction()
    (r.read_binary if sys.argv[2] == "bin" else r.read_text)(sys.argv[1])
    cams = []
    for cid, c in r.cameras.items():
        extra = list(c.extra_params_idxs())
        names = [s.strip() for s in c.params_info.split(",")]
        cams.append({"id": int(cid), "model": c.model.name, "width": int(c.width), "height": int(c.height),
                     "K": c.calibration_matrix().tolist(), "extra": [float(c.params[i]) for i in extra],
                     "extra_names": [names[i] if i < len(names) else str(i) for i in extra]})
    ims = [{"id": int(iid), "name": im.name, "camera_id": int(im.camera_id),
            "cam_from_world": im.cam_from_world().matrix().tolist()} for iid, im in r.images.items()]
    out = {"cameras": cams, "images": ims}
except BaseException as exc:
    out = {"error": {"type": type(exc).__name__, "message": str(exc)}}
sys.stdout.write(json.dumps(out))
"""


def _read_colmap_isolated(folder: str, fmt: str, cam_name: str, img_name: str) -> dict[str, Any]:
    """pycolmap's reading of ``folder`` done in a child process (memory and time limited)."""
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _CHILD, folder, fmt, str(COLMAP_MEMORY_BYTES)],
            capture_output=True,
            timeout=COLMAP_TIMEOUT_S,
            text=True,
            env={**os.environ, "PYTHONSAFEPATH": "1"},
        )
    except subprocess.TimeoutExpired:
        raise CameraFileError(
            f"{cam_name} + {img_name}", "", f"reading the model took more than {COLMAP_TIMEOUT_S:.0f} s"
        ) from None
    try:
        return json.loads(proc.stdout)
    except ValueError:
        tail = (proc.stderr or "").strip().splitlines()[-1:] or [f"exit status {proc.returncode}"]
        raise CameraFileError(
            f"{cam_name} + {img_name}", "", f"pycolmap could not read the model ({tail[0][:300]})"
        ) from None


def _data_lines(text: str) -> list[tuple[int, str]]:
    return [(i + 1, ln) for i, ln in enumerate(text.splitlines()) if ln.strip() and not ln.lstrip().startswith("#")]


def _image_pose_lines(text: str) -> list[tuple[int, list[str]]]:
    """(line number, tokens) of each image's first line, as COLMAP's text reader pairs lines:
    a data line, then the next line whatever it holds (the 2D points)."""
    lines = text.splitlines()
    out, i = [], 0
    while i < len(lines):
        ln = lines[i].strip()
        if ln and not ln.startswith("#"):
            out.append((i + 1, ln.split()))
            i += 2
        else:
            i += 1
    return out


def _camera_where(cid: int, texts: tuple[str, str] | None) -> str:
    if texts is None:
        return f"camera {cid}"
    for n, ln in _data_lines(texts[0]):
        if ln.split()[0] == str(cid):
            return f"line {n}"
    return f"camera {cid}"


def _image_where(img_name: str, iid: int, texts: tuple[str, str] | None) -> str:
    if texts is None:
        return f"image {iid}"
    for n, tokens in _image_pose_lines(texts[1]):
        if tokens and tokens[0] == str(iid):
            return f"line {n}"
    return f"image {iid}"


def _is_int(s: str) -> bool:
    try:
        int(s)
        return True
    except ValueError:
        return False


def _is_c_float(s: str) -> bool:
    """A number as C++'s ``>>`` reads it (no nan/inf words)."""
    try:
        float(s)
    except ValueError:
        return False
    return s.strip().lstrip("+-").lower()[:1] not in ("n", "i")


def _colmap_error(err: dict[str, str], cam_name: str, img_name: str, texts: tuple[str, str] | None) -> CameraFileError:
    """pycolmap's error turned into one naming the file and, for text files, the line."""
    message = err.get("message", "")
    if "]" in message and message.startswith("["):
        message = message.split("]", 1)[1].strip()
    if err.get("type") == "MemoryError":
        return CameraFileError(
            f"{cam_name} + {img_name}", "", "the model declares more data than can be read (a damaged or crafted file)"
        )
    if texts is not None:
        for n, ln in _data_lines(texts[0]):
            t = ln.split()
            if (
                len(t) < 5
                or not _is_int(t[0])
                or not _is_int(t[2])
                or not _is_int(t[3])
                or not all(_is_c_float(v) for v in t[4:])
            ):
                return CameraFileError(
                    cam_name, f"line {n}", "expected CAMERA_ID MODEL WIDTH HEIGHT PARAMS... (numbers; no nan or inf)"
                )
        known = {ln.split()[0] for _, ln in _data_lines(texts[0])}
        for n, t in _image_pose_lines(texts[1]):
            if len(t) < 10 or not _is_int(t[0]) or not _is_int(t[8]) or not all(_is_c_float(v) for v in t[1:8]):
                return CameraFileError(
                    img_name,
                    f"line {n}",
                    "expected IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME (numbers; no nan or inf)",
                )
            if t[8] not in known:
                return CameraFileError(
                    img_name, f"line {n}", f"image {t[9]!r} uses camera {t[8]}, which {cam_name} does not have"
                )
        if "model" in message.lower():
            return CameraFileError(cam_name, "", f"unknown camera model ({message})")
        return CameraFileError(f"{cam_name} + {img_name}", "", f"pycolmap could not read the model: {message}")
    if "Rig with ID" in message or "Camera with ID" in message:
        return CameraFileError(
            img_name, "", f"an image names a camera that {cam_name} does not have, or the file is damaged ({message})"
        )
    return CameraFileError(
        f"{cam_name} + {img_name}", "", f"pycolmap could not read the binary model (damaged or not COLMAP): {message}"
    )


def read_json(name: str, data: bytes) -> CameraSet:
    """Read a JSON camera file (DA3's field names; see the module doc).

    Raises:
        CameraFileError: Not JSON, a missing or malformed field, or a bad camera.
    """
    try:
        doc = json.loads(data.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise CameraFileError(name, "", f"not valid JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise CameraFileError(name, "", "expected an object with extrinsics, intrinsics and names")

    def array(key: str) -> np.ndarray | None:
        if key not in doc:
            return None
        try:
            return np.asarray(doc[key], dtype=np.float64)
        except (ValueError, TypeError):
            raise CameraFileError(name, key, "must be an array of numbers (nested lists of equal lengths)") from None

    return _from_fields(
        name,
        "JSON",
        array("extrinsics"),
        array("intrinsics"),
        _names_field(name, doc),
        array("width"),
        array("height"),
        None,
    )


def _names_field(name: str, doc: Any) -> list[str] | None:
    key = "names" if "names" in doc else "image_names" if "image_names" in doc else None
    if key is None:
        return None
    raw = doc[key]
    values = raw.tolist() if isinstance(raw, np.ndarray) else raw
    if isinstance(values, str) or not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise CameraFileError(name, key, "must be a list of image names (strings)")
    return values


def read_npz(name: str, data: bytes) -> CameraSet:
    """Read an NPZ camera file (DA3's field names; ``allow_pickle=False``).

    Raises:
        CameraFileError: Not an NPZ, an object array, a field too large, or a bad camera.
    """
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise CameraFileError(name, "", "not an NPZ (numpy .npz) file") from None
    members = {m.filename[:-4]: m for m in zf.infolist() if m.filename.endswith(".npy")}
    out: dict[str, np.ndarray] = {}
    image_hw: tuple[int, int] | None = None
    with zf:
        for key in ("extrinsics", "intrinsics", "names", "image_names", "width", "height", "image"):
            if key not in members:
                continue
            with zf.open(members[key]) as f:
                try:
                    shape, dtype = _npy_header(f)  # the header only: nothing is allocated yet
                except ValueError as exc:
                    raise CameraFileError(name, key, f"not a numpy array ({exc})") from None
            if key == "image":
                if len(shape) == 4:
                    image_hw = (int(shape[1]), int(shape[2]))
                continue
            if dtype.hasobject:
                raise CameraFileError(
                    name, key, "holds Python objects; save it without pickling (plain numbers or unicode strings)"
                )
            if int(np.prod(shape, dtype=np.int64)) > MAX_VALUES:
                raise CameraFileError(name, key, f"shape {tuple(shape)} is too large")
            with zf.open(members[key]) as f:
                try:
                    out[key] = np.lib.format.read_array(f, allow_pickle=False)
                except ValueError as exc:
                    raise CameraFileError(name, key, f"unreadable ({exc})") from None
    names = None
    for key in ("names", "image_names"):
        if key in out:
            if out[key].dtype.kind not in "US":
                raise CameraFileError(name, key, "must be an array of strings")
            names = [str(v) for v in out[key].reshape(-1).tolist()]
            break

    def num(key: str) -> np.ndarray | None:
        if key not in out:
            return None
        if out[key].dtype.kind not in "biuf":
            raise CameraFileError(name, key, f"must hold numbers, not {out[key].dtype}")
        return out[key].astype(np.float64)

    return _from_fields(name, "NPZ", num("extrinsics"), num("intrinsics"), names, num("width"), num("height"), image_hw)


def _npy_header(f: Any) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) from an open ``.npy`` member's header."""
    fmt = np.lib.format
    version = fmt.read_magic(f)
    read = {(1, 0): fmt.read_array_header_1_0, (2, 0): fmt.read_array_header_2_0}.get(version)
    if read is None:
        raise ValueError(f"unsupported .npy version {version}")
    shape, _, dtype = read(f)
    return tuple(shape), dtype


def _from_fields(
    name: str,
    source: str,
    ext: np.ndarray | None,
    ixt: np.ndarray | None,
    names: list[str] | None,
    width: np.ndarray | None,
    height: np.ndarray | None,
    image_hw: tuple[int, int] | None,
) -> CameraSet:
    """Check DA3-named fields and make the entries."""
    if ext is None:
        raise CameraFileError(name, "extrinsics", "missing: give (N, 4, 4) or (N, 3, 4) world-to-camera matrices")
    if ixt is None:
        raise CameraFileError(name, "intrinsics", "missing: give (N, 3, 3) pinhole matrices in pixels")
    if names is None:
        raise CameraFileError(name, "names", "missing: give one image name per camera, to match them to the frames")
    if ext.ndim != 3 or ext.shape[1:] not in ((4, 4), (3, 4)):
        raise CameraFileError(name, "extrinsics", f"shape {ext.shape}: expected (N, 4, 4) or (N, 3, 4)")
    n = ext.shape[0]
    if n == 0:
        raise CameraFileError(name, "extrinsics", "holds no camera")
    if ixt.shape == (3, 3):
        ixt = np.broadcast_to(ixt, (n, 3, 3)).copy()
    if ixt.shape != (n, 3, 3):
        raise CameraFileError(
            name, "intrinsics", f"shape {ixt.shape}: expected ({n}, 3, 3) or (3, 3), one per extrinsic"
        )
    if len(names) != n:
        raise CameraFileError(name, "names", f"{len(names)} names for {n} cameras")
    for i, nm in enumerate(names):
        if not nm.strip():
            raise CameraFileError(name, f"names[{i}]", "an empty image name")
    dupes = sorted(nm for nm, c in collections.Counter(names).items() if c > 1)
    if dupes:
        raise CameraFileError(name, "names", f"image name(s) given twice: {', '.join(dupes[:5])}")
    sizes: list[tuple[int | None, int | None]] = [(None, None)] * n
    if (width is None) != (height is None):
        raise CameraFileError(name, "width" if width is None else "height", "give width and height together")
    if width is not None and height is not None:
        w = np.broadcast_to(width.reshape(-1), (n,)) if width.size == 1 else width.reshape(-1)
        h = np.broadcast_to(height.reshape(-1), (n,)) if height.size == 1 else height.reshape(-1)
        if w.shape != (n,) or h.shape != (n,):
            raise CameraFileError(
                name, "width" if w.shape != (n,) else "height", f"one value, or {n} values (one per camera)"
            )
        if not (np.isfinite(w).all() and np.isfinite(h).all() and (w >= 1).all() and (h >= 1).all()):
            raise CameraFileError(name, "width/height", "must be positive pixel counts")
        sizes = [(int(round(a)), int(round(b))) for a, b in zip(w, h)]
    elif image_hw is not None:
        sizes = [(image_hw[1], image_hw[0])] * n
    entries = []
    for i in range(n):
        e = np.eye(4)
        e[: ext.shape[1], :] = ext[i]
        _check_extrinsic(e, name, f"extrinsics[{i}] ({names[i]})", full=ext[i] if ext.shape[1] == 4 else None)
        _check_intrinsic(ixt[i], name, f"intrinsics[{i}] ({names[i]})", sizes[i])
        entries.append(
            CameraEntry(
                names[i], e, ixt[i].copy(), sizes[i][0], sizes[i][1], "PINHOLE", focal_note(ixt[i]), f"{name} [{i}]"
            )
        )
    return CameraSet(source, (name,), tuple(entries))


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


# --------------------------------------------------------------------------------------
# Matching
# --------------------------------------------------------------------------------------


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


def names_and_sizes(frames: Iterable[Any]) -> tuple[list[str], list[tuple[int, int]]]:
    """(names, (width, height) sizes) of `da3_core.media.inputs.Frame`-like objects."""
    frames = list(frames)
    return [f.name for f in frames], [(int(f.image.shape[1]), int(f.image.shape[0])) for f in frames]
