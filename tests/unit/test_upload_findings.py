"""The pure parts of what a browser check of the live app found (tests/app/test_browser_findings.py
has the page side): truncated COLMAP binaries and implausible focal lengths named as such, a
damaged video called a video, DA3's centre crop of mixed shapes put in words, and what the
server let go of after a run (the session's result cache, the finished job's value)."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from da3_core.app import session
from da3_core.media import batches, camera_files, camera_match, colmap, image_io, inputs
from da3_core.media import cameras as C
from da3_core.runs import guard
from tests.unit.test_cameras import IXT, NAMES, H, W, colmap_model, edit_line, json_bytes, read_error

# -- 7. camera files ------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["images.bin", "cameras.bin"])
def test_a_truncated_colmap_binary_is_said_to_be_truncated_and_named(tmp_path, which):
    """Cut anywhere, a .bin is "truncated or corrupt", naming the file, never blamed on a
    missing rig or camera (pycolmap's "Rig with ID 0 does not exist")."""
    files = colmap_model(tmp_path / "m", "bin")
    data = files[which]
    for cut in sorted({3, 8, 20, 30, 60, len(data) // 2, len(data) - 5, len(data) - 1}):
        model = {"cameras.bin": files["cameras.bin"], "images.bin": files["images.bin"], which: data[:cut]}
        err = read_error(model)
        assert err.file == which and "the file is truncated or corrupt" in err.problem, (cut, str(err))
        assert "Rig with ID" not in str(err) and "does not have" not in str(err)


def test_trailing_bytes_after_the_last_record_are_corrupt_too(tmp_path):
    files = colmap_model(tmp_path / "m", "bin")
    err = read_error({"cameras.bin": files["cameras.bin"], "images.bin": files["images.bin"] + b"\0" * 7})
    assert err.file == "images.bin" and "7 byte(s) follow its last image (3 declared)" in err.problem


def test_a_whole_binary_model_still_reads(tmp_path):
    files = colmap_model(tmp_path / "m", "bin")
    colmap.check_colmap_binary("cameras.bin", files["cameras.bin"], "cameras")
    colmap.check_colmap_binary("images.bin", files["images.bin"], "images")
    assert (
        len(
            camera_files.read_camera_files(
                [(n, d) for n, d in files.items() if n.startswith(("cameras", "images"))]
            ).entries
        )
        == 3
    )


def test_the_browser_findings_focal_lengths_are_refused_naming_the_camera(tmp_path):
    """fy 1.2e8 against fx 2577 (a 4032x3024 photo): refused, naming the file, line and camera."""
    files = colmap_model(tmp_path / "m", "txt")
    cams, n = edit_line(files["cameras.txt"], "2 ", f"2 PINHOLE {W} {H} 2577 1.2e8 30 22")
    err = read_error({"cameras.txt": cams, "images.txt": files["images.txt"]})
    assert (err.file, err.where) == ("cameras.txt", f"line {n} (camera 2)"), str(err)
    assert (
        "implausible focal lengths fx=2577 and fy=1.2e+08" in err.problem and "a typo or a damaged file?" in err.problem
    )


@pytest.mark.parametrize(
    "fx, fy, expect",
    [(0.01, 0.01, "horizontal field of view of 180°"), (1e7, 1e7, "horizontal field of view of 0.000367°")],
)
def test_focal_lengths_absurd_for_the_image_size_are_refused(tmp_path, fx, fy, expect):
    files = colmap_model(tmp_path / "m", "txt")
    cams, n = edit_line(files["cameras.txt"], "1 ", f"1 PINHOLE {W} {H} {fx} {fy} 30 22")
    err = read_error({"cameras.txt": cams, "images.txt": files["images.txt"]})
    assert (
        err.where == f"line {n} (camera 1)" and "implausible focal length fx=" in err.problem and expect in err.problem
    ), str(err)


def test_json_with_an_image_size_refuses_an_implausible_camera_by_its_name():
    ixt = IXT.copy()
    ixt[1, 1, 1] = 5e6
    err = read_error([("cams.json", json_bytes(intrinsics=ixt.tolist(), width=W, height=H))])
    assert (err.file, err.where) == (
        "cams.json",
        "intrinsics[1] (b.jpg)",
    ) and "implausible focal lengths" in err.problem


def test_json_without_a_size_is_judged_against_the_frame_and_that_camera_not_used():
    ixt = IXT.copy()
    ixt[2, 0, 0] = ixt[2, 1, 1] = 1e7  # plausible ratio, absurd for a 64 px wide frame
    cams = camera_files.read_camera_files([("cams.json", json_bytes(intrinsics=ixt.tolist()))])
    match = camera_match.match_cameras(cams, NAMES, [(W, H)] * 3)
    assert match.matched == [0, 1] and match.known is None
    row = match.rows[2]
    assert row.camera is None and row.note.startswith("camera 'c.jpg' not used: implausible focal length fx=1e+07 px")
    summary = match.summary()
    assert "Frame c.jpg: camera 'c.jpg' not used: implausible" in summary and "name no frame" not in summary


def test_fx_and_fy_somewhat_apart_are_taken_and_noted():
    ixt = IXT.copy()
    ixt[0, 1, 1] = ixt[0, 0, 0] * 1.5
    cams = camera_files.read_camera_files([("cams.json", json_bytes(intrinsics=ixt.tolist()))])
    assert cams.entries[0].note == "fx and fy differ 1.50-fold (non-square pixels?)"
    assert cams.entries[1].note == ""  # 45 / 45
    row = camera_match.match_cameras(cams, NAMES, [(W, H)] * 3).rows[0]
    assert row.camera == "a.jpg" and "non-square pixels" in row.note


def test_focal_problem_bounds():
    k = np.array([[500.0, 0, 320], [0, 500.0, 240], [0, 0, 1]])
    assert C.focal_problem(k, 640, 480) is None
    assert C.focal_problem(k * [[1], [C.MAX_FOCAL_RATIO * 1.01], [1]] + np.diag([0, 0, 0])) is not None
    assert C.focal_problem(np.diag([1e5, 1e5, 1.0])) is None  # no size: only the ratio is judged


# -- 8. a damaged video ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["holiday.mp4", "clip.MOV", "a.webm"])
def test_a_damaged_video_is_a_video_that_could_not_be_read(name):
    garbage = b"\x00\x01garbage" * 300
    batch = batches.load_batch([(name, garbage)])
    assert len(batch.rejected) == 1
    reason = batch.rejected[0].reason
    assert reason.startswith(f"{name}: the video cannot be read") and "not an image" not in reason
    with pytest.raises(inputs.InputError) as info:
        image_io.load_image(name, garbage)
    assert str(info.value).startswith(f"{name}: this is a video that could not be read")
    assert image_io.looks_like_video(name, garbage)


def test_content_still_decides_over_the_name():
    from tests.conftest import png_bytes

    assert not image_io.looks_like_video("photo.mp4", png_bytes(1))  # a PNG named .mp4 is an image
    assert batches.load_batch([("photo.mp4", png_bytes(1))]).frames
    assert not image_io.looks_like_video("notes.png", b"just text")
    with pytest.raises(inputs.InputError, match="not an image format this app reads"):
        image_io.load_image("notes.png", b"just text")


# -- 6. DA3's centre crop -------------------------------------------------------------------


def test_the_centre_crop_of_mixed_shapes_is_put_in_words():
    assert guard.centre_crop_notice([(1600, 1200)] * 3, 504) is None
    assert guard.centre_crop_notice([(1600, 1200), (800, 600)], 504) is None  # one processed size
    text = guard.centre_crop_notice([(1600, 1200), (1200, 1600), (1600, 1200)], 504)
    assert text is not None and "(2 landscape, 1 portrait; at process_res 504 they become " in text
    assert "centre-crops every frame to 378x378, cutting up to 25% of a frame" in text
    wide = guard.centre_crop_notice([(1600, 1200), (1920, 1080)], 504)
    assert wide is not None and "to 504x280" in wide  # 4:3 and 16:9 too: DA3 crops on any difference


# -- 5. what the server lets go of ----------------------------------------------------------


def test_the_sessions_result_cache_is_bounded(monkeypatch):
    state: dict = {}
    monkeypatch.setattr(session, "state", lambda: state)
    for i in range(10):
        session.remember(f"run-{i}", object())  # type: ignore[arg-type]  # any object: only the count matters
    assert list(state[session.RECS]) == ["run-7", "run-8", "run-9"]


def test_release_free_heap_runs_at_most_every_few_seconds(monkeypatch):
    monkeypatch.setattr(guard, "_last_trim", 0.0)
    first = guard.release_free_heap()
    assert guard.release_free_heap() is False  # throttled
    assert first in (True, False)  # False off glibc


def test_a_collected_run_lets_go_of_its_result_everywhere(module_runner, tmp_path):
    from da3_core.config import Settings
    from da3_core.contract import ModelSpec
    from da3_core.runs.service import KEEP_RESULTS, RunService
    from tests.run_service_tasks import fake_reconstruct

    service = RunService(module_runner, Settings(workspace=tmp_path / "ws"), task=fake_reconstruct)
    params = {
        "process_res": 112,
        "process_res_method": "upper_bound_resize",
        "ref_view_strategy": "saddle_balanced",
        "reference_view": None,
        "infer_gs": False,
        "device": "cpu",
    }
    frames = [np.zeros((40, 60, 3), np.uint8)] * 2
    started = []
    for i in range(KEEP_RESULTS + 2):
        started.append(
            service.submit(
                tmp_path / "ws" / "sessions" / ("e" * 32),
                frames,
                [f"a{i}", "b"],
                "upload",
                ModelSpec("demo", "da3-small"),
                params,
            )
        )
    deadline = time.monotonic() + 60
    while not all(a.finished for a in started):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    service.get(started[0].run_dir)  # a look-up lets go of all but the newest uncollected results
    held = [a for a in started if a.result is not None]
    newest = sorted(started, key=lambda a: a.finished_at)[-KEEP_RESULTS:]
    assert {a.run_id for a in held} == {a.run_id for a in newest} and len(held) == KEEP_RESULTS
    assert all(a.job.result() is None for a in started if a.result is None)  # the job's copy too
    last = started[-1]
    assert last.job.result() is not None
    service.mark_collected(last)
    assert last.result is None and last.job.result() is None
    assert json.loads((last.run_dir / "run.json").read_text())["status"] == "done"  # on disk, for the pages


def test_release_value_leaves_a_running_job_alone():
    from da3_core.runner.jobs import Job
    from da3_core.runner.shm import Packed

    job = Job(None, 1, "x:y", Packed(b""), 10.0)  # type: ignore[arg-type]  # no runner: the job is never submitted
    job.release_value()
    assert not job._loaded  # still waiting: its result will load when it comes
