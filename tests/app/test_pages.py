"""AppTest of every page, in process, on synthetic finished runs written to disk through
`da3_core.runs.records` (no model: the pages are the point). torch never enters this process
(`tests/app/conftest.py` checks it around every test)."""

from __future__ import annotations

import re

from tests.app.kit import HOME, PAGES, check, has_viewer, keys, run_picker, runner_counts, texts, wait_export
from tests.unit import synthetic

# The Point cloud caption ends with the time the filtering took: never compared.
ELAPSED = re.compile(r" · filtered and drawn in \d+ ms \(no model call\)$")


def points_caption(at) -> list[str]:
    """The Point cloud page's points caption(s), without the elapsed milliseconds at the end."""
    found = [c for c in texts(at.caption) if "points shown" in c]
    assert all(ELAPSED.search(c) for c in found), found
    return [ELAPSED.sub("", c) for c in found]


def points_shown(caption: str) -> int:
    return int(re.match(r"([\d,]+) points shown", caption)[1].replace(",", ""))


def test_every_page_without_a_run(new_app):
    at = new_app()
    at.run()
    check(at, "home")
    seen = {}
    for page in PAGES:
        at.switch_page(page).run()
        check(at, page)
        seen[page] = {"info": texts(at.info), "buttons": sorted(k for k in keys(at.button) if k)}
    for page in ("pages/2_Depth_maps.py", "pages/3_Point_cloud.py", "pages/4_Exports.py"):
        assert any("No reconstruction yet" in text for text in seen[page]["info"]), page
    assert "rn_restart" in seen["pages/5_Runner.py"]["buttons"]
    at.switch_page(PAGES[0]).run()
    widgets = keys(at.radio) | keys(at.button) | keys(at.get("file_uploader"))
    assert {"rc_source", "model_kind", "rc_run", "rc_files"} <= widgets
    assert at.button(key="rc_run").disabled  # nothing to run yet
    # The session id went into the URL, so a reload finds this session again.
    assert len(at.query_params["s"]) == 32


def test_pages_on_finished_runs_never_call_the_worker(new_app, app_env):
    sid, session_dir = app_env.new_session()
    mono_dir, mono = synthetic.write_finished_run(session_dir, synthetic.mono_box_scene())
    box_dir, box = synthetic.write_finished_run(session_dir, synthetic.box_scene(3), timings={"total": 1.5})
    at = new_app(sid)
    at.run()
    check(at, "home with runs")
    before = runner_counts(at)  # waits until the worker is idle and reported its device
    assert before["State"] == "idle"
    workers = next(d.value for d in at.dataframe if "device" in d.value.columns)  # the Runner page lists each worker
    assert list(workers["worker"]) == ["worker 1"] and list(workers["device"]) == ["CPU"]
    assert before["Workers busy"] == "0 of 1"

    # Home lists both runs; the sidebar picks the newest finished one.
    at.switch_page(HOME).run()
    check(at, "home")
    table = at.dataframe[0].value
    assert sorted(table["run"]) == sorted([box.run_id, mono.run_id]) and set(table["status"]) == {"done"}
    assert run_picker(at).value == box.run_id

    # Depth maps: charts, metrics, the untrained banner, navigation both ways.
    at.switch_page(PAGES[1]).run()
    check(at, "depth")
    assert len(at.get("plotly_chart")) >= 2 and "Min" in [m.label for m in at.metric]
    assert texts(at.warning)[0].startswith("**Untrained demo weights**")
    assert at.selectbox(key="dm_view_w").value == 0
    at.button(key="dm_next").click().run()
    check(at, "depth next")
    assert at.selectbox(key="dm_view_w").value == 1
    at.button(key="dm_prev").click().run().button(key="dm_prev").click().run()
    check(at, "depth prev twice")
    assert at.selectbox(key="dm_view_w").value == 2  # wraps around
    at.selectbox(key="dm_cmap_w").set_value(at.selectbox(key="dm_cmap_w").options[1]).run()
    at.toggle(key="dm_rev_w").set_value(True).run()
    check(at, "depth colour map")

    # Point cloud: re-filtering, cameras off, the full-density viewer.
    at.switch_page(PAGES[2]).run()
    check(at, "cloud")
    assert len(at.get("plotly_chart")) == 1
    first = points_caption(at)
    assert first and "pass the filters" in first[0]
    at.slider(key="pc_conf_w").set_value(60.0).run()
    check(at, "cloud refilter")
    at.toggle(key="pc_cams_w").set_value(False).run()
    check(at, "cloud cameras off")
    refiltered = points_caption(at)
    assert refiltered and refiltered != first  # counts and threshold, not the timing text
    assert points_shown(refiltered[0]) < points_shown(first[0])  # a higher confidence cut keeps fewer points
    at.multiselect(key="pc_views_w").set_value([0, 1]).run()
    check(at, "cloud two views")
    at.button(key="pc_full").click().run()
    check(at, "full density")
    assert has_viewer(at)

    # Exports: a download button per format, the run folder, COLMAP offered (poses + conf).
    at.switch_page(PAGES[3]).run()
    check(at, "exports")
    downloads = keys(at.get("download_button"))
    assert {"ex_glb", "ex_ply", "ex_npz", "ex_depth_png", "ex_zip"} <= downloads
    assert any(k and k.startswith("ex_file_input/") for k in downloads)
    assert "ex_colmap" in keys(at.button)
    assert any("cameras off" in c for c in texts(at.caption))  # the Point cloud page's settings carried over

    # The mono run, picked in the sidebar: no confidence, assumed cameras with a field of view.
    run_picker(at).set_value(mono.run_id).run()
    check(at, "pick mono")
    at.switch_page(PAGES[1]).run()
    check(at, "mono depth")
    assert len(at.get("plotly_chart")) == 1  # depth only: no confidence map
    assert at.button(key="dm_next").disabled
    at.switch_page(PAGES[2]).run()
    check(at, "mono cloud")
    at.slider(key="pc_fov_w").set_value(90.0).run()
    check(at, "mono fov")
    assert any("assumed cameras (90° field of view)" in c for c in points_caption(at))
    at.switch_page(PAGES[3]).run()
    check(at, "mono exports")
    assert any("Unavailable: da3mono-large predicts no camera poses" in c for c in texts(at.caption))

    # Re-filtering, page switches and re-rendering never called the worker.
    after = runner_counts(at)
    assert (after["calls_ok"], after["calls_failed"]) == (before["calls_ok"], before["calls_failed"])
    assert after["State"] == "idle"


def test_a_session_id_from_the_url_finds_its_runs_and_a_bad_one_is_ignored(new_app, app_env):
    sid, session_dir = app_env.new_session()
    _, meta = synthetic.write_finished_run(session_dir, synthetic.box_scene(2))
    at = new_app(sid)
    at.run()
    check(at, "reload")
    assert at.query_params["s"] == sid
    assert list(at.dataframe[0].value["run"]) == [meta.run_id]
    for bad in ("../../etc", "0" * 31, "Z" * 32):
        other = new_app(bad)
        other.run()
        check(other, bad)
        assert other.query_params["s"] not in (bad, sid) and len(other.query_params["s"]) == 32
        assert not other.dataframe  # a fresh, empty session


def test_exports_made_by_da3_in_the_worker(new_app, app_env):
    """COLMAP and 3DGS PLY come from DA3's own exporters, in the worker, into the run folder:
    each a job of the worker's queue that the page follows to its end (never a blocking call)."""
    sid, session_dir = app_env.new_session()
    crop_dir, crop = synthetic.write_finished_run(
        session_dir, synthetic.box_scene(2), params={"process_res_method": "upper_bound_crop"}
    )
    # 3 views, not 2: two runs of one second with the same view count and preset get the same
    # label in the sidebar's picker, and a selectbox cannot tell equal labels apart.
    run_dir, meta = synthetic.write_finished_run(session_dir, synthetic.with_gaussians(synthetic.box_scene(3)))
    at = new_app(sid)
    at.run()
    at.switch_page(PAGES[3]).run()
    check(at, "exports")
    at.button(key="ex_colmap").click().run()
    check(at, "colmap")
    done, errors = wait_export(at, "COLMAP model written: ")
    assert errors == [] and texts(at.error) == []
    colmap = sorted(p.name for p in (run_dir / "exports" / "colmap").iterdir())
    assert {"cameras.bin", "images.bin", "points3D.bin"} <= set(colmap), colmap
    assert "ex_file_exports/colmap/cameras.bin" in keys(at.get("download_button"))  # the page lists the new files
    # It says what it wrote, and offers the model as one zip.
    assert [s for s in texts(at.success) if s.startswith("COLMAP model written: ") and "cameras.bin" in s], texts(
        at.success
    )
    assert "ex_colmap_zip" in keys(at.get("download_button"))
    at.button(key="ex_gs").click().run()
    check(at, "3dgs")
    done, errors = wait_export(at, "3DGS PLY written")
    assert errors == [] and texts(at.error) == []
    ply = run_dir / "exports" / "gs_ply" / "0000.ply"
    assert ply.is_file() and ply.read_bytes().startswith(b"ply\n")
    assert "ex_gs_ply_dl" in keys(at.get("download_button"))
    # Written under hidden names and renamed when complete: nothing half-written is left.
    assert not [p for p in (run_dir / "exports").rglob(".*") if ".part" in p.name]

    # A run made with a crop method cannot be exported to COLMAP, and has no Gaussians.
    run_picker(at).set_value(crop.run_id).run()
    check(at, "crop run")
    captions = texts(at.caption)
    assert any("Unavailable: this run used a crop method" in c for c in captions), captions
    assert any("Unavailable: this run has no Gaussians" in c for c in captions), captions
    assert "ex_colmap" not in keys(at.button) and "ex_gs" not in keys(at.button)


def test_a_bad_variable_is_named_on_the_page_which_stops(new_app, app_env):
    with app_env.settings_from({"DA3_MAX_FRAMES": "many"}):
        at = new_app()
        at.run()
        check(at, "bad setting")
        errors = texts(at.error)
        assert errors and errors[0].startswith("Configuration error: DA3_MAX_FRAMES='many' is not an integer")
        assert not at.title  # the page stopped before drawing anything else
    at = new_app()
    at.run()
    check(at, "settings back")
    assert texts(at.error) == [] and at.title[0].value == "Depth Anything 3 dashboard"
