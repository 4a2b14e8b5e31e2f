"""Known cameras in (`da3_core.media.cameras`): COLMAP text/binary/zip, JSON and NPZ read; matching
by name; rescaling to the frames' size; every bad-file case with its own test (the error
names the file and the field or line); the request's checks; old runs still load."""

from __future__ import annotations

import io
import json
import math
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest

from da3_core.contract import ModelSpec, ReconstructRequest
from da3_core.media import camera_files, camera_match, colmap
from da3_core.media import cameras as C
from da3_core.media.cameras import CameraFileError

W, H = 64, 48


def pose(deg: float, centre) -> np.ndarray:
    """(4, 4) world-to-camera of a camera turned ``deg`` about y, at ``centre``."""
    a = math.radians(deg)
    r_c2w = np.array([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])
    e = np.eye(4)
    e[:3, :3] = r_c2w.T
    e[:3, 3] = -r_c2w.T @ np.asarray(centre, float)
    return e


def K(fx=50.0, fy=52.0, cx=31.0, cy=24.5) -> np.ndarray:
    return np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1.0]])


EXT = np.stack([pose(0, [0, 0, 0]), pose(15, [1.0, 0.2, -0.3]), pose(-30, [-2.0, 0.1, 0.5])])
IXT = np.stack([K(), K(45, 45, 30, 22), K(60, 61, 33, 25)])
NAMES = ["a.jpg", "b.jpg", "c.jpg"]


def json_bytes(**over) -> bytes:
    doc = {"names": NAMES, "extrinsics": EXT.tolist(), "intrinsics": IXT.tolist(), **over}
    return json.dumps(doc).encode()


def npz_bytes(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **{"names": np.array(NAMES), "extrinsics": EXT, "intrinsics": IXT, **arrays})
    return buf.getvalue()


def colmap_model(
    folder: Path, fmt: str = "txt", models=None, ext=EXT, ixt=IXT, names=NAMES, size=(W, H)
) -> dict[str, bytes]:
    """A COLMAP model written by pycolmap (one camera per image); returns {file name: bytes}."""
    import pycolmap

    rec = pycolmap.Reconstruction()
    for i, name in enumerate(names):
        model = (models or {}).get(i, "PINHOLE")
        k = ixt[i]
        cam = pycolmap.Camera.create_from_model_name(i + 1, model, float(k[0, 0]), size[0], size[1])
        params = list(cam.params)
        info = [p.strip() for p in cam.params_info.split(",")]
        for j, p in enumerate(info):
            params[j] = {"f": k[0, 0], "fx": k[0, 0], "fy": k[1, 1], "cx": k[0, 2], "cy": k[1, 2]}.get(
                p, 0.0 if p != "k" else 0.05
            )
        cam.params = params
        rec.add_camera_with_trivial_rig(cam)
        im = pycolmap.Image(image_id=i + 1, name=name, camera_id=i + 1)
        rec.add_image_with_trivial_frame(im, pycolmap.Rigid3d(pycolmap.Rotation3d(ext[i][:3, :3]), ext[i][:3, 3]))
    folder.mkdir(parents=True, exist_ok=True)
    (rec.write_text if fmt == "txt" else rec.write_binary)(str(folder))
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def read_error(files) -> CameraFileError:
    with pytest.raises(CameraFileError) as info:
        camera_files.read_camera_files(list(files.items()) if isinstance(files, dict) else files)
    return info.value


def edit_line(text: bytes, startswith: str, new: str) -> tuple[bytes, int]:
    """``text`` with its first data line starting with ``startswith`` replaced; and its 1-based number."""
    lines = text.decode().splitlines()
    n = next(i for i, ln in enumerate(lines) if ln.startswith(startswith))
    lines[n] = new
    return ("\n".join(lines) + "\n").encode(), n + 1


# --------------------------------------------------------------------------------------
# Reading each form
# --------------------------------------------------------------------------------------


def check_cameras(cs: C.CameraSet, source: str, atol: float = 1e-9) -> None:
    assert cs.source == source and cs.label == f"given ({source})"
    assert [e.name for e in cs.entries] == NAMES
    for i, e in enumerate(cs.entries):
        np.testing.assert_allclose(e.extrinsic, EXT[i], atol=atol)
        np.testing.assert_allclose(e.intrinsic, IXT[i], atol=atol)


def test_json_4x4_and_3x4():
    check_cameras(camera_files.read_camera_files([("cams.json", json_bytes())]), "JSON")
    check_cameras(camera_files.read_camera_files([("cams.json", json_bytes(extrinsics=EXT[:, :3].tolist()))]), "JSON")
    one_k = camera_files.read_camera_files([("cams.json", json_bytes(intrinsics=IXT[0].tolist(), width=W, height=H))])
    assert all(np.array_equal(e.intrinsic, IXT[0]) and (e.width, e.height) == (W, H) for e in one_k.entries)


def test_npz_with_names_and_image_size():
    check_cameras(camera_files.read_camera_files([("cams.npz", npz_bytes())]), "NPZ")
    # This dashboard's NPZ export: (N, 3, 4), intrinsics at the processed size, the processed images.
    cs = camera_files.read_camera_files(
        [("results.npz", npz_bytes(extrinsics=EXT[:, :3], image=np.zeros((3, 24, 32, 3), np.uint8)))]
    )
    assert [(e.width, e.height) for e in cs.entries] == [(32, 24)] * 3


@pytest.mark.parametrize("fmt", ["txt", "bin"])
def test_colmap_text_and_binary(tmp_path, fmt):
    files = colmap_model(tmp_path / fmt, fmt)
    assert {"cameras." + fmt, "images." + fmt, "points3D." + fmt} <= set(files)
    cs = camera_files.read_camera_files(list(files.items()))  # rigs/frames/points files come along and are ignored
    check_cameras(cs, "COLMAP", atol=1e-9)
    assert all((e.width, e.height, e.model, e.note) == (W, H, "PINHOLE", "") for e in cs.entries)
    # Only cameras + images: an empty points3D is made for pycolmap.
    only = {k: v for k, v in files.items() if k.startswith(("cameras", "images"))}
    check_cameras(camera_files.read_camera_files(list(only.items())), "COLMAP")


def test_colmap_in_a_zip_with_folders(tmp_path):
    files = colmap_model(tmp_path / "m", "bin")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in files.items():
            zf.writestr(f"run-x-colmap/sparse/0/{name}", data)
    check_cameras(camera_files.read_camera_files([("run-x-colmap.zip", buf.getvalue())]), "COLMAP")


def test_simple_pinhole_and_radial_distortion_is_ignored_and_said(tmp_path):
    ixt = IXT.copy()
    ixt[:, 1, 1] = ixt[:, 0, 0]  # one focal length for the SIMPLE_* models
    files = colmap_model(tmp_path / "m", "txt", models={0: "SIMPLE_PINHOLE", 1: "SIMPLE_RADIAL", 2: "OPENCV"}, ixt=ixt)
    cs = camera_files.read_camera_files(list(files.items()))
    assert [e.model for e in cs.entries] == ["SIMPLE_PINHOLE", "SIMPLE_RADIAL", "OPENCV"]
    np.testing.assert_allclose(cs.entries[1].intrinsic, ixt[1])
    assert cs.entries[0].note == ""
    assert "SIMPLE_RADIAL distortion ignored (k=0.05)" in cs.entries[1].note and "pinhole" in cs.entries[1].note
    assert cs.entries[2].note == ""  # OPENCV with all coefficients 0: nothing to say
    match = camera_match.match_cameras(cs, NAMES, [(W, H)] * 3)
    assert "distortion ignored" in match.rows[1].note


# --------------------------------------------------------------------------------------
# Matching and rescaling
# --------------------------------------------------------------------------------------


def test_match_by_name_exact_basename_case_and_stem():
    cs = camera_files.read_camera_files([("c.json", json_bytes(names=["images/A.JPG", "b.jpg", "sub/c.tif"]))])
    m = camera_match.match_cameras(cs, ["a.jpg", "b.jpg", "c.png"], [(W, H)] * 3)
    assert [r.camera for r in m.rows] == ["images/A.JPG", "b.jpg", "sub/c.tif"]
    assert m.complete and m.known is not None and m.known.source == "JSON"
    np.testing.assert_allclose(m.known.extrinsics, EXT)
    np.testing.assert_allclose(m.known.intrinsics, IXT)
    assert m.summary().startswith("Every frame (3) has a camera: DA3 runs with them (cameras: given (JSON)).")
    row = m.table()[0]
    assert row == {
        "frame": "a.jpg",
        "camera found": "images/A.JPG",
        "focal length (px)": "50.0 / 52.0",
        "centre (px)": "(31.0, 24.5)",
        "note": "",
    }
    assert m.table()[1]["focal length (px)"] == "45.0"


def test_a_frame_without_a_camera_is_all_or_none():
    """DA3's inference() takes cameras for all views or none: with some missing, no cameras
    are given unless the user runs only the frames that have one."""
    cs = camera_files.read_camera_files([("c.json", json_bytes())])
    m = camera_match.match_cameras(cs, ["a.jpg", "zzz.jpg", "c.jpg", "d.jpg"], [(W, H)] * 4)
    assert m.matched == [0, 2] and not m.complete and m.known is None
    assert m.rows[1].camera is None and "no camera named like this frame in c.json" in m.rows[1].note
    assert m.table()[1]["camera found"] == "— none" and m.table()[1]["focal length (px)"] == "—"
    s = m.summary()
    assert s.startswith("2 of 4 frames have a camera. DA3's inference() takes cameras for all views or for none")
    assert "b.jpg" in s  # the camera that named no frame is listed
    some = m.known_for_matched()
    np.testing.assert_allclose(some.extrinsics, EXT[[0, 2]])
    assert some.subset([1]).extrinsics.shape == (1, 4, 4)
    none = camera_match.match_cameras(cs, ["x.jpg"], [(W, H)])
    assert (
        none.known is None and none.known_for_matched() is None and none.summary().startswith("No frame has a camera")
    )


def test_ambiguous_stems_and_one_camera_per_frame():
    cs = camera_files.read_camera_files([("c.json", json_bytes(names=["a.jpg", "a.png", "b.jpg"]))])
    m = camera_match.match_cameras(cs, ["a.tif", "b.png", "B.jpg"], [(W, H)] * 3)
    assert m.rows[0].camera is None  # "a" names two cameras: no guess
    assert m.rows[1].camera == "b.jpg" and m.rows[2].camera is None and "already serves frame 'b.png'" in m.rows[2].note


def test_intrinsics_rescaled_to_a_downscaled_frame_as_da3_does():
    cs = camera_files.read_camera_files(
        [("c.json", json_bytes(width=640, height=480, intrinsics=[K(500, 510, 320, 240).tolist()] * 3))]
    )
    m = camera_match.match_cameras(cs, NAMES, [(320, 240), (640, 480), (160, 120)])
    np.testing.assert_allclose(m.known.intrinsics[0], K(250, 255, 160, 120))
    np.testing.assert_allclose(m.known.intrinsics[1], K(500, 510, 320, 240))
    np.testing.assert_allclose(m.known.intrinsics[2], K(125, 127.5, 80, 60))
    assert "rescaled from 640x480 to the frame's 320x240" in m.rows[0].note and m.rows[1].note == ""
    np.testing.assert_allclose(
        camera_match.rescale_intrinsic(K(500, 510, 320, 240), (640, 480), (700, 420)), K(546.875, 446.25, 350, 210)
    )


def test_an_aspect_ratio_that_differs_is_not_used():
    cs = camera_files.read_camera_files([("c.json", json_bytes(width=640, height=480))])
    m = camera_match.match_cameras(cs, NAMES, [(480, 640), (640, 480), (640, 480)])
    assert m.rows[0].camera is None and "aspect ratios differ" in m.rows[0].note and not m.complete


def test_describe_old_and_new_runs():
    assert C.describe({"cameras": "given (COLMAP)", "align_to_input_ext_scale": True}) == "given (COLMAP)"
    assert C.describe({"cameras": "given (JSON)", "align_to_input_ext_scale": False}).startswith(
        "given (JSON), DA3's frame"
    )
    assert C.describe({"process_res": 504}) == "estimated"  # saved before known cameras existed
    assert C.describe({}, has_poses=False) == "none (monocular preset)"
    assert C.describe({"use_ray_pose": True}) == "estimated (ray head)"

    class F:
        name = "a.jpg"
        image = np.zeros((H, W, 3), np.uint8)

    assert camera_match.names_and_sizes([F()]) == (["a.jpg"], [(W, H)])


# --------------------------------------------------------------------------------------
# Bad files: each case, its own test; the message names the file and the field or line
# --------------------------------------------------------------------------------------


def test_missing_image_names_field():
    err = read_error([("cams.json", json.dumps({"extrinsics": EXT.tolist(), "intrinsics": IXT.tolist()}).encode())])
    assert (err.file, err.where) == ("cams.json", "names") and "one image name per camera" in str(err)
    assert str(err).startswith("cams.json, names: missing")


def test_missing_image_colmap_image_names_a_camera_that_is_not_there(tmp_path):
    files = colmap_model(tmp_path / "m", "txt")
    lines = files["images.txt"].decode().splitlines()
    n = next(i for i, ln in enumerate(lines) if ln.startswith("2 "))
    t = lines[n].split()
    t[8] = "7"
    lines[n] = " ".join(t)
    files["images.txt"] = ("\n".join(lines) + "\n").encode()
    err = read_error({"cameras.txt": files["cameras.txt"], "images.txt": files["images.txt"]})
    assert (err.file, err.where) == (
        "images.txt",
        f"line {n + 1}",
    ) and "uses camera 7, which cameras.txt does not have" in err.problem


def test_missing_image_colmap_text_drops_an_image_without_its_points_line(tmp_path):
    """COLMAP's text reader silently skips a last image with no 2D-points line; we say so."""
    files = colmap_model(tmp_path / "m", "txt")
    text = files["images.txt"].decode().rstrip("\n") + "\n"  # the last image's (empty) points line removed
    n = len(text.splitlines())
    err = read_error({"cameras.txt": files["cameras.txt"], "images.txt": text.encode()})
    assert (err.file, err.where) == ("images.txt", f"line {n}") and "image 'c.jpg' was not read" in err.problem


def test_missing_images_file(tmp_path):
    files = colmap_model(tmp_path / "m", "bin")
    err = read_error({"cameras.bin": files["cameras.bin"]})
    assert err.file == "cameras.bin" and "images file is missing" in err.problem


@pytest.mark.parametrize(
    "field,value,expect",
    [
        ("extrinsics", np.zeros((3, 3, 3)).tolist(), "shape (3, 3, 3): expected (N, 4, 4) or (N, 3, 4)"),
        ("intrinsics", IXT[:2].tolist(), "shape (2, 3, 3): expected (3, 3, 3) or (3, 3)"),
        ("names", ["a.jpg", "b.jpg"], "2 names for 3 cameras"),
        ("extrinsics", [[[1, 0], [0]]], "must be an array of numbers"),
    ],
)
def test_wrong_shapes(field, value, expect):
    err = read_error([("cams.json", json_bytes(**{field: value}))])
    assert (err.file, err.where) == ("cams.json", field) and expect in err.problem


def test_wrong_shape_in_npz():
    err = read_error([("cams.npz", npz_bytes(extrinsics=np.zeros((3, 4))))])
    assert (err.file, err.where) == ("cams.npz", "extrinsics") and "shape (3, 4)" in err.problem


def test_non_rotation_det_not_one():
    ext = EXT.copy()
    ext[1, :3, :3] *= 1.1
    err = read_error([("cams.json", json_bytes(extrinsics=ext.tolist()))])
    assert err.where == "extrinsics[1] (b.jpg)" and "not a rotation (det 1.331" in err.problem


def test_non_rotation_not_orthonormal():
    ext = EXT.copy()
    ext[2, 0, 1] += 0.05  # a shear
    err = read_error([("cams.npz", npz_bytes(extrinsics=ext))])
    assert (err.file, err.where) == ("cams.npz", "extrinsics[2] (c.jpg)") and "not a rotation" in err.problem


def test_non_rotation_reflection_and_bad_last_row():
    ext = EXT.copy()
    ext[0, :3, 0] *= -1
    assert "reflection (det -1)" in read_error([("c.json", json_bytes(extrinsics=ext.tolist()))]).problem
    ext = EXT.copy()
    ext[0, 3] = [0, 0, 1, 1]
    assert (
        "last row of a 4x4 must be [0, 0, 0, 1]"
        in read_error([("c.json", json_bytes(extrinsics=ext.tolist()))]).problem
    )


def test_nan_in_json_and_inf_in_npz():
    ext = EXT.copy()
    ext[1, 0, 3] = np.nan
    err = read_error([("cams.json", json_bytes(extrinsics=ext.tolist()))])  # Python's json writes NaN
    assert err.where == "extrinsics[1] (b.jpg)" and "NaN or inf" in err.problem
    ixt = IXT.copy()
    ixt[2, 0, 2] = np.inf
    err = read_error([("cams.npz", npz_bytes(intrinsics=ixt))])
    assert (err.file, err.where) == ("cams.npz", "intrinsics[2] (c.jpg)") and "NaN or inf" in err.problem


def test_nan_in_colmap_text_names_the_line(tmp_path):
    files = colmap_model(tmp_path / "m", "txt")
    images, n = edit_line(files["images.txt"], "3 ", "3 1 0 0 0 nan 0 0 3 c.jpg")
    err = read_error({"cameras.txt": files["cameras.txt"], "images.txt": images})
    assert (err.file, err.where) == ("images.txt", f"line {n}") and "no nan or inf" in err.problem


def test_nan_in_colmap_binary_names_the_image(tmp_path):
    ext = EXT.copy()
    ext[1, 2, 3] = np.nan
    files = colmap_model(tmp_path / "m", "bin", ext=ext)
    err = read_error({"cameras.bin": files["cameras.bin"], "images.bin": files["images.bin"]})
    assert (err.file, err.where) == ("images.bin", "image 2 (b.jpg)") and "NaN or inf" in err.problem


def test_negative_focal_length_json():
    ixt = IXT.copy()
    ixt[0, 0, 0] = -50
    err = read_error([("cams.json", json_bytes(intrinsics=ixt.tolist()))])
    assert err.where == "intrinsics[0] (a.jpg)" and "negative focal length (fx=-50" in err.problem


def test_negative_focal_length_colmap_text_names_the_line(tmp_path):
    files = colmap_model(tmp_path / "m", "txt")
    cams, n = edit_line(files["cameras.txt"], "2 ", f"2 PINHOLE {W} {H} 45 -45 30 22")
    err = read_error({"cameras.txt": cams, "images.txt": files["images.txt"]})
    assert (err.file, err.where) == ("cameras.txt", f"line {n} (camera 2)") and "negative focal length" in err.problem


def test_not_a_pinhole_k():
    ixt = IXT.copy()
    ixt[1, 2] = [0.1, 0, 1]
    assert "not a pinhole K" in read_error([("c.json", json_bytes(intrinsics=ixt.tolist()))]).problem


@pytest.mark.parametrize("model", ["OPENCV_FISHEYE", "SIMPLE_RADIAL_FISHEYE", "FOV", "THIN_PRISM_FISHEYE"])
def test_fisheye_is_refused_and_said_so(tmp_path, model):
    files = colmap_model(tmp_path / "m", "txt", models={1: model})
    err = read_error({"cameras.txt": files["cameras.txt"], "images.txt": files["images.txt"]})
    lines = files["cameras.txt"].decode().splitlines()
    n = next(i for i, ln in enumerate(lines) if ln.startswith("2 ")) + 1
    assert (err.file, err.where) == ("cameras.txt", f"line {n}")
    assert f"camera 2 is {model}, a fisheye model: DA3 takes pinhole cameras only" in err.problem


def test_other_non_pinhole_models_are_refused_in_binary(tmp_path):
    files = colmap_model(tmp_path / "m", "bin", models={0: "SIMPLE_DIVISION"})
    err = read_error({"cameras.bin": files["cameras.bin"], "images.bin": files["images.bin"]})
    assert (err.file, err.where) == (
        "cameras.bin",
        "camera 1",
    ) and "SIMPLE_DIVISION, not a pinhole model" in err.problem


def test_malformed_colmap_text_lines(tmp_path):
    files = colmap_model(tmp_path / "m", "txt")
    cams, n = edit_line(files["cameras.txt"], "1 ", "1 PINHOLE 64 48 50 oops 31 24.5")
    err = read_error({"cameras.txt": cams, "images.txt": files["images.txt"]})
    assert (err.file, err.where) == ("cameras.txt", f"line {n}")
    cams, n = edit_line(files["cameras.txt"], "1 ", "1 NOT_A_MODEL 64 48 50 50 31 24.5")
    assert "unknown camera model" in read_error({"cameras.txt": cams, "images.txt": files["images.txt"]}).problem


def test_a_crafted_binary_cannot_exhaust_memory(tmp_path, monkeypatch):
    """images.bin declaring 2^40 2D points: the walk over the records refuses it as corrupt
    before pycolmap sees it; and pycolmap runs in a memory-limited child anyway, so the
    server gets an error, not an out-of-memory kill."""
    files = colmap_model(tmp_path / "m", "bin")
    data = struct.pack("<Q", 1) + struct.pack("<I", 1) + struct.pack("<7d", 1, 0, 0, 0, 0, 0, 0) + struct.pack("<I", 1)
    data += b"a.jpg\0" + struct.pack("<Q", 2**40)
    err = read_error({"cameras.bin": files["cameras.bin"], "images.bin": data})
    assert (
        err.file == "images.bin"
        and "truncated or corrupt" in err.problem
        and "1,099,511,627,776 2D points" in err.problem
    )
    monkeypatch.setattr(colmap, "check_colmap_binary", lambda *args: None)  # the child's own limit, alone
    err = read_error({"cameras.bin": files["cameras.bin"], "images.bin": data})
    assert "cameras.bin + images.bin" in str(err)


def test_garbage_binary_and_mixed_formats(tmp_path):
    files = colmap_model(tmp_path / "m", "bin")
    err = read_error({"cameras.bin": files["cameras.bin"], "images.bin": b"\x01" * 40})
    assert "images.bin" in str(err)
    txt = colmap_model(tmp_path / "t", "txt")
    assert (
        "different formats"
        in read_error({"cameras.bin": files["cameras.bin"], "images.txt": txt["images.txt"]}).problem
    )


def test_npz_object_arrays_and_huge_shapes_are_refused_unread():
    buf = io.BytesIO()
    np.savez(buf, names=np.array(NAMES, dtype=object), extrinsics=EXT, intrinsics=IXT)
    err = read_error([("cams.npz", buf.getvalue())])
    assert (err.where, err.file) == ("names", "cams.npz") and "without pickling" in err.problem
    # A header that declares a huge array: refused from the header, nothing allocated.
    header = {"descr": "<f8", "fortran_order": False, "shape": (10**9, 4, 4)}
    npy = io.BytesIO()
    np.lib.format.write_array_header_1_0(npy, header)
    zbuf = io.BytesIO()
    with zipfile.ZipFile(zbuf, "w") as zf:
        zf.writestr("extrinsics.npy", npy.getvalue())
    err = read_error([("cams.npz", zbuf.getvalue())])
    assert err.where == "extrinsics" and "too large" in err.problem


@pytest.mark.parametrize(
    "files,expect",
    [
        ([("cams.json", b"{not json")], "not valid JSON"),
        ([("cams.json", b"[1, 2]")], "expected an object"),
        ([("cams.npz", b"not a zip")], "not an NPZ"),
        ([("model.zip", b"not a zip")], "not a readable zip"),
        ([("cams.yaml", b"x: 1")], "not a camera file"),
        ([("a.json", b"{}"), ("b.json", b"{}")], "not a mix"),
        ([], "no file was given"),
    ],
)
def test_unreadable_files(files, expect):
    assert expect in str(read_error(files))


def test_json_field_errors():
    assert read_error([("c.json", json_bytes(names="a.jpg"))]).where == "names"
    assert read_error([("c.json", json_bytes(names=["a.jpg", "a.jpg", "c.jpg"]))]).problem.startswith(
        "image name(s) given twice: a.jpg"
    )
    assert read_error([("c.json", json_bytes(names=["a.jpg", " ", "c.jpg"]))]).where == "names[1]"
    assert read_error([("c.json", json_bytes(width=640))]).where == "height"
    assert "one value, or 3 values" in read_error([("c.json", json_bytes(width=[1, 2], height=[1, 2]))]).problem
    assert "positive pixel counts" in read_error([("c.json", json_bytes(width=0, height=10))]).problem
    doc = json.loads(json_bytes())
    del doc["intrinsics"]
    assert read_error([("c.json", json.dumps(doc).encode())]).where == "intrinsics"


# --------------------------------------------------------------------------------------
# The request and the run folder
# --------------------------------------------------------------------------------------


def request(**kw) -> ReconstructRequest:
    imgs = tuple(np.zeros((H, W, 3), np.uint8) for _ in range(3))
    return ReconstructRequest(imgs, tuple(NAMES), ModelSpec("demo", "da3-small"), **kw)


def test_request_takes_cameras_and_checks_them():
    plain = request()
    assert plain.extrinsics is None and not plain.cameras_given and plain.camera_label == "estimated"
    assert plain.align_to_input_ext_scale is True and plain.use_ray_pose is False
    r = request(extrinsics=EXT[:, :3], intrinsics=IXT, camera_source="COLMAP")
    assert r.extrinsics.shape == (3, 4, 4) and r.camera_label == "given (COLMAP)" and not r.extrinsics.flags.writeable
    np.testing.assert_array_equal(r.extrinsics, EXT)
    assert request(extrinsics=EXT, intrinsics=IXT).camera_label == "given"
    bad = EXT.copy()
    bad[0, :3, :3] *= 2
    cases = [
        (dict(extrinsics=EXT), "both be given"),
        (dict(extrinsics=EXT[:2], intrinsics=IXT[:2]), "one per frame"),
        (dict(extrinsics=EXT, intrinsics=IXT[:, :2]), "intrinsics must be (3, 3, 3)"),
        (dict(extrinsics=bad, intrinsics=IXT), "extrinsics[0] (a.jpg) is not a rigid"),
        (dict(extrinsics=EXT * np.nan, intrinsics=IXT), "NaN or inf"),
        (dict(extrinsics=EXT, intrinsics=-IXT), "intrinsics[0] (a.jpg) has a focal length <= 0"),
        (dict(extrinsics=EXT, intrinsics=IXT, camera_source="CSV"), "camera_source must be one of"),
        (dict(camera_source="COLMAP"), "no cameras are given"),
        (dict(extrinsics=EXT, intrinsics=IXT, infer_gs=True), "infer_gs with given cameras"),
    ]
    for kw, expect in cases:
        with pytest.raises(ValueError, match=None) as info:
            request(**kw)
        assert expect in str(info.value), (kw.keys(), str(info.value))


def test_cameras_saved_with_the_run_and_old_runs_still_load(tmp_path):
    from dataclasses import asdict

    from da3_core.runs import records as runs

    imgs = [np.zeros((H, W, 3), np.uint8)] * 3
    run_dir, meta = runs.start_run(
        tmp_path,
        imgs,
        NAMES,
        "upload",
        ModelSpec("demo", "da3-small"),
        {"process_res": 504},
        cameras=(EXT, IXT, "COLMAP"),
    )
    assert meta.cameras_file == "cameras.npz"
    ext, ixt, source = runs.load_cameras(run_dir, runs.read_meta(run_dir))
    np.testing.assert_array_equal(ext, EXT)
    np.testing.assert_array_equal(ixt, IXT)
    assert source == "COLMAP"
    # A run.json written before known cameras existed has no cameras_file: it loads, with none.
    old = asdict(meta)
    del old["cameras_file"]
    (run_dir / "run.json").write_text(json.dumps(old))
    again = runs.read_meta(run_dir)
    assert again.cameras_file == "" and runs.load_cameras(run_dir, again) is None
