"""Known-camera files in: which reader a set of uploads needs (COLMAP, JSON or NPZ), and the JSON
and NPZ readers, each value checked and every error naming the file and the field.
"""

from __future__ import annotations

import collections
import io
import json
import zipfile
from collections.abc import Sequence
from typing import Any

import numpy as np

from da3_core.media.cameras import (
    CAMERA_EXTENSIONS,
    MAX_FILE_BYTES,
    MAX_VALUES,
    CameraEntry,
    CameraFileError,
    CameraSet,
    _check_extrinsic,
    _check_intrinsic,
    focal_note,
)
from da3_core.media.colmap import _colmap_files_from_zip, _ext, read_colmap


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
