"""COLMAP models in (text, binary or zipped): checked byte by byte first, then read by pycolmap
in a child process with its own memory limit, so a hostile file cannot take the server down.
"""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from da3_core.media.cameras import (
    _REFUSED_HELP,
    DISTORTION_MODELS,
    MAX_FILE_BYTES,
    PINHOLE_MODELS,
    CameraEntry,
    CameraFileError,
    CameraSet,
    _check_extrinsic,
    _check_intrinsic,
    focal_note,
)

COLMAP_TIMEOUT_S = 60.0


COLMAP_MEMORY_BYTES = 4 * 2**30


def _ext(name: str) -> str:
    stem, dot, ext = name.rpartition(".")
    return ext.lower() if dot and stem else ""


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
