"""What a new user hit on the Reconstruct page and around it (issue "Trust the numbers and
the runs", items C, E, G, H), in-process on the real app; no model runs here."""

from __future__ import annotations

import json

from tests.app.kit import PAGES, check, texts
from tests.conftest import png_bytes
from tests.unit import synthetic


def test_a_page_visit_writes_nothing_to_disk(new_app, app_env):
    """Crawlers and bad links leave no session folders: the first run creates one."""
    sessions = app_env.workspace / "sessions"
    before = set(sessions.iterdir()) if sessions.is_dir() else set()
    at = new_app()
    at.run()
    check(at, "home")
    for page in PAGES:
        at.switch_page(page).run()
        check(at, page)
    sid = at.query_params["s"][0] if isinstance(at.query_params["s"], list) else at.query_params["s"]
    assert len(sid) == 32
    after = set(sessions.iterdir()) if sessions.is_dir() else set()
    assert after == before, sorted(p.name for p in after - before)


def test_markdown_in_file_names_is_shown_as_text(new_app):
    at = new_app()
    at.switch_page(PAGES[0]).run()
    hostile = "[docs](https:evil.example) **x** :red[alarm].png"
    at.file_uploader(key="rc_files").set_value(
        [(hostile, b"not an image", "image/png"), ("ok.png", png_bytes(1), "image/png")]
    ).run()
    check(at, "uploaded")
    raw = [w.value for w in at.warning]
    assert len(raw) == 1
    # The Markdown source escapes every construct; the user reads the name as typed.
    assert (
        "\\[docs\\]\\(https\\:evil\\.example\\)" in raw[0]
        and "\\*\\*x\\*\\*" in raw[0]
        and "\\:red\\[alarm\\]" in raw[0]
    )
    assert texts(at.warning)[0].startswith(hostile + ": ")


def test_an_unreadable_video_alone_offers_nothing_to_run(new_app):
    at = new_app()
    at.switch_page(PAGES[0]).run()
    broken = b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 100
    at.file_uploader(key="rc_files").set_value([("broken.mp4", broken, "video/mp4")]).run()
    check(at, "broken video")
    assert [w for w in texts(at.warning) if "broken.mp4" in w], texts(at.warning)
    assert len(at.warning) == 1  # said once
    assert "rc_fps" not in {s.key for s in at.slider} and "rc_cap" not in {n.key for n in at.number_input}
    assert at.button(key="rc_run").disabled


def test_process_res_is_snapped_and_the_value_used_is_shown(new_app):
    at = new_app()
    at.switch_page(PAGES[0]).run()
    at.number_input(key="rc_res").set_value(113).run()
    check(at, "113")
    assert "DA3 runs at **112** (a multiple of 14)." in texts(at.caption)
    at.number_input(key="rc_res").set_value(20).run()  # accepted (no red field), and said plainly
    check(at, "20")
    assert at.number_input(key="rc_res").value == 20
    assert "DA3 runs at **14** (a multiple of 14)." in texts(at.caption)
    at.number_input(key="rc_res").set_value(504).run()
    assert not [c for c in texts(at.caption) if c.startswith("DA3 runs at")]


def test_exports_never_show_the_server_path(new_app, app_env):
    sid, folder = app_env.new_session()
    run_dir, meta = synthetic.write_finished_run(folder, synthetic.box_scene(2))
    at = new_app(sid)
    at.switch_page(PAGES[3]).run()
    check(at, "exports")
    shown = " ".join(texts(at.caption) + texts(at.markdown))
    assert str(app_env.workspace) not in shown and str(run_dir) not in shown
    assert meta.run_id in shown


def test_the_model_choice_survives_a_reload(new_app, app_env):
    """Saved with the session's runs (prefs.json): a reload on the same address keeps it."""
    sid, folder = app_env.new_session()
    (folder / "prefs.json").write_text(
        json.dumps({"model": {"model_kind": "Untrained demo weights", "model_demo": "da3-base"}})
    )
    at = new_app(sid)
    at.switch_page(PAGES[0]).run()
    check(at, "reconstruct")
    assert at.radio(key="model_kind").value == "Untrained demo weights"
    assert at.selectbox(key="model_demo").value == "da3-base"
    # A value the widgets do not offer is ignored (the file is data).
    (folder / "prefs.json").write_text(json.dumps({"model": {"model_kind": "rm -rf /", "model_demo": "nope"}}))
    fresh = new_app(sid)
    fresh.switch_page(PAGES[0]).run()
    check(fresh, "reconstruct, bad prefs")
    assert fresh.radio(key="model_kind").value != "rm -rf /"


def test_cancel_reads_as_cancelled_and_keeps_the_frames(new_app, app_env):
    """Cancel shows "Cancelled" (not a red failure), the run folder says so and keeps its frames."""
    import time

    from da3_core.runs import records as runs

    sid, folder = app_env.new_session()
    at = new_app(sid, timeout=120)
    at.switch_page(PAGES[0]).run()
    at.radio(key="rc_source").set_value("Example scene").run()
    at.radio(key="model_kind").set_value("Untrained demo weights").run()
    at.button(key="rc_run").click().run()
    check(at, "run clicked")
    at.button(key="rc_cancel").click().run()
    deadline = time.monotonic() + 60
    while not [i for i in texts(at.info) if i.startswith("Cancelled:")]:
        assert time.monotonic() < deadline, (texts(at.info), texts(at.error))
        time.sleep(0.3)
        at.run()
        check(at, "after cancel")
    assert not at.error, texts(at.error)
    metas = runs.list_session_runs(folder)
    assert len(metas) == 1 and metas[0].status == "cancelled" and metas[0].error == "cancelled by the user"
    assert len(runs.input_paths(folder / metas[0].run_id, metas[0])) == 4


def colmap_text(
    names: list[str], size: tuple[int, int] = (160, 120), model: str = "PINHOLE"
) -> list[tuple[str, bytes, str]]:
    """A COLMAP text model (cameras.txt + images.txt) with one camera per name, as uploads."""
    w, h = size
    params = {"PINHOLE": "150 151 80 60", "OPENCV_FISHEYE": "150 151 80 60 0.1 0 0 0"}[model]
    cams = "".join(f"{i + 1} {model} {w} {h} {params}\n" for i in range(len(names)))
    imgs = "".join(f"{i + 1} 1 0 0 0 {0.5 * i} 0 0 {i + 1} {n}\n\n" for i, n in enumerate(names))
    return [("cameras.txt", cams.encode(), "text/plain"), ("images.txt", imgs.encode(), "text/plain")]


def test_known_cameras_colmap_upload_shows_the_match_table_and_runs_with_them(new_app, app_env):
    """Photos plus a COLMAP model: the match table (frame, camera found, focal length, centre),
    the all-or-none rule for partial cameras, a bad file's error with the frames kept, and a
    run that reports and keeps the given cameras."""
    import numpy as np

    from da3_core.runs import records as runs
    from tests.app.kit import plain, wait_outcome

    sid, folder = app_env.new_session()
    at = new_app(sid, timeout=120)
    at.switch_page(PAGES[0]).run()
    photos = [(f"p{i}.png", png_bytes(i), "image/png") for i in (1, 2, 3)]
    at.file_uploader(key="rc_files").set_value(photos[:2]).run()
    at.file_uploader(key="rc_cams").set_value(colmap_text(["p1.png", "images/p2.png"])).run()
    check(at, "cameras uploaded")
    table = at.table[0].value
    rows = [{k: plain(str(v)) for k, v in row.items()} for row in table.to_dict("records")]
    assert rows == [
        {
            "frame": "p1.png",
            "camera found": "p1.png",
            "focal length (px)": "150.0 / 151.0",
            "centre (px)": "(80.0, 60.0)",
            "note": "",
        },
        {
            "frame": "p2.png",
            "camera found": "images/p2.png",
            "focal length (px)": "150.0 / 151.0",
            "centre (px)": "(80.0, 60.0)",
            "note": "",
        },
    ], rows
    assert any(
        t.startswith("Every frame (2) has a camera: DA3 runs with them (cameras: given (COLMAP)).")
        for t in texts(at.markdown)
    )
    assert at.toggle(key="rc_cam_align").value is True
    assert any(
        c.startswith("use_ray_pose: poses from DA3's ray head instead of its camera decoder") and " s (x" in c
        for c in texts(at.caption)
    ), texts(at.caption)
    assert (
        at.selectbox(key="rc_strategy").disabled and at.toggle(key="rc_gs").disabled
    )  # DA3 picks no reference view; no Gaussians

    # Three photos, two cameras: DA3 takes cameras for all views or none; the user chooses.
    at.file_uploader(key="rc_files").set_value(photos).run()
    check(at, "partial")
    assert "2 of 3 frames have a camera. DA3's inference() takes cameras for all views or for none" in " ".join(
        texts(at.markdown)
    )
    assert plain(str(at.table[0].value.to_dict("records")[2]["camera found"])) == "— none"
    assert at.radio(key="rc_cam_partial").value.startswith("Let DA3 estimate every camera")
    assert not at.selectbox(key="rc_strategy").disabled  # the file is ignored: DA3 estimates
    at.radio(key="rc_cam_partial").set_value("Run only the frames that have a camera").run()
    assert at.selectbox(key="rc_ref").options == ["auto (use the strategy)", "0: p1.png", "1: p2.png"]

    # A fisheye model: a clear error naming the file and line; the frames stay.
    at.file_uploader(key="rc_cams").set_value(colmap_text(["p1.png", "p2.png"], model="OPENCV_FISHEYE")).run()
    errors = texts(at.error)
    assert errors == [
        "Camera file not used: cameras.txt, line 1: camera 1 is OPENCV_FISHEYE, a fisheye model: DA3 takes pinhole "
        "cameras only. Undistort the images to a pinhole model first (e.g. `colmap image_undistorter`) and upload that model."
    ], errors
    assert len(at.file_uploader(key="rc_files").value) == 3 and not at.table

    # Two photos with their cameras, run with demo weights: the result says where the cameras came from and keeps them.
    at.file_uploader(key="rc_files").set_value(photos[:2]).run()
    at.file_uploader(key="rc_cams").set_value(colmap_text(["p1.png", "p2.png"])).run()
    at.radio(key="model_kind").set_value("Untrained demo weights").run()
    at.number_input(key="rc_res").set_value(112).run()
    at.button(key="rc_run").click().run()
    done, errors = wait_outcome(at)
    assert not errors and done and ", cameras: given (COLMAP) (run " in done[0], (done, errors)
    meta = runs.list_session_runs(folder)[0]
    assert meta.params["cameras"] == "given (COLMAP)" and meta.params["align_to_input_ext_scale"] is True
    assert meta.cameras_file == "cameras.npz"
    rec = runs.load_result(folder / meta.run_id, meta)
    np.testing.assert_allclose(rec.extrinsics[:, :, 3], [[0, 0, 0], [0.5, 0, 0]], atol=1e-6)
    np.testing.assert_allclose(rec.extrinsics[:, :, :3], np.tile(np.eye(3), (2, 1, 1)), atol=1e-6)
    at.switch_page(PAGES[1]).run()
    check(at, "depth maps")
    assert any("cameras: given (COLMAP)" in c for c in texts(at.caption))


def _guarded(app_env, monkeypatch, **settings):
    """The app's RunService with some settings changed (it keeps those it started with)."""
    import dataclasses

    from da3_core.app import holder

    service = holder.get_holder().runs
    monkeypatch.setattr(service, "settings", dataclasses.replace(service.settings, **settings))
    return service


def test_the_run_guard_shows_the_estimate_and_refuses_before_the_run(new_app, app_env, monkeypatch):
    """Issue "Deploy and operate": a run that cannot fit in memory is refused before it
    starts, with the numbers and the ways on; the uploads stay; an over-budget run is said
    so and may be started anyway."""
    at = new_app()
    at.switch_page(PAGES[0]).run()
    photos = [(f"p{i}.png", png_bytes(i, (640, 480)), "image/png") for i in range(3)]
    at.file_uploader(key="rc_files").set_value(photos).run()
    check(at, "photos")
    estimate = [c for c in texts(at.caption) if c.startswith("Estimate: ")]
    assert estimate and "3 frame(s) at 504: about " in estimate[0] and "of memory (" in estimate[0], texts(at.caption)
    assert not at.button(key="rc_run").disabled

    _guarded(app_env, monkeypatch, memory_limit_mb=400.0)
    at.run()
    check(at, "refused")
    refusal = [e for e in texts(at.error) if e.startswith("This run would be refused: ")]
    assert refusal and "available (DA3_MEMORY_LIMIT_MB=400)" in refusal[0] and "Ways on: " in refusal[0], texts(
        at.error
    )
    assert at.button(key="rc_run").disabled
    assert len(at.file_uploader(key="rc_files").value) == 3  # nothing the user uploaded is lost

    _guarded(app_env, monkeypatch, memory_limit_mb=0.0, duration_base_s=0.001, duration_per_frame_s=0.0)
    at.run()
    check(at, "over budget")
    assert [w for w in texts(at.warning) if "more than its budget of 0 s" in w], texts(at.warning)
    assert not at.button(key="rc_run").disabled and at.checkbox(key="rc_over_budget").value is False
