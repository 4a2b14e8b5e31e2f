"""AppTest of the Point cloud page's 3D Gaussian viewer, in process, on synthetic finished runs
(no model). The browser side (pixels) is in tests/e2e/test_splat_viewer.py; torch never
enters this process (`tests/app/conftest.py` checks it around every test)."""

from __future__ import annotations

from da3_core.app import splat_view
from tests.app.kit import PAGES, check, has_viewer, keys, run_picker, runner_counts, texts
from tests.unit import synthetic


def splat_html(at) -> list[str]:
    """The HTML of every Gaussian viewer embedded in the page."""

    def walk(node):
        yield node
        for child in getattr(node, "children", {}).values():
            yield from walk(child)

    found = []
    for node in walk(at.main):
        proto = getattr(node, "proto", None)
        text = str(getattr(proto, "srcdoc", "") or "") if proto is not None else ""
        if "DA3SplatViewer.mount" in text:
            found.append(text)
    return found


def test_the_point_cloud_page_offers_the_gaussian_viewer_beside_the_points(new_app, app_env):
    sid, session_dir = app_env.new_session()
    _, plain = synthetic.write_finished_run(session_dir, synthetic.box_scene(2))
    _, with_gs = synthetic.write_finished_run(session_dir, synthetic.with_gaussians(synthetic.box_scene(3)))
    at = new_app(sid)
    at.run()
    check(at, "home")
    before = runner_counts(at)

    # The run with Gaussians (the newest, picked by the sidebar): a clear choice of viewer.
    at.switch_page(PAGES[2]).run()
    check(at, "cloud with Gaussians")
    assert run_picker(at).value == with_gs.run_id
    viewer = at.radio(key="pc_viewer")
    assert list(viewer.options) == ["Points", "3D Gaussians"] and viewer.value == "Points"
    assert "pc_full" in keys(at.button) and splat_html(at) == []
    assert splat_view.NO_GAUSSIANS not in texts(at.caption)

    viewer.set_value("3D Gaussians").run()
    check(at, "Gaussian viewer")
    pages = splat_html(at)
    assert len(pages) == 1
    html = pages[0]
    assert 'id="da3-mode"' in html and 'id="da3-scale"' in html and 'id="da3-cams"' in html and 'id="da3-reset"' in html
    captions = [c for c in texts(at.caption) if "Gaussians, drawn by your browser" in c]
    assert len(captions) == 1 and captions[0].startswith("9,216 of 9,216 Gaussians"), texts(at.caption)
    assert "reference camera (view 0: view_0.png)" in captions[0]
    assert "pc_full" not in keys(at.button) and not has_viewer(at)  # one viewer at a time

    # Re-filtering the points keeps the packed Gaussians (same page); cameras off rebuilds it.
    at.slider(key="pc_conf_w").set_value(50.0).run()
    check(at, "refilter")
    assert splat_html(at) == [html]
    at.toggle(key="pc_cams_w").set_value(False).run()
    check(at, "cameras off")
    assert len(splat_html(at)) == 1 and splat_html(at)[0] != html and '"showCameras":false' in splat_html(at)[0]

    # Back to the points: the GLB viewer's button is there again.
    at.radio(key="pc_viewer").set_value("Points").run()
    check(at, "points again")
    assert "pc_full" in keys(at.button) and splat_html(at) == []

    # A run without Gaussians: no choice, and one line saying why.
    run_picker(at).set_value(plain.run_id).run()
    at.switch_page(PAGES[2]).run()
    check(at, "cloud without Gaussians")
    assert "pc_viewer" not in keys(at.radio)
    assert texts(at.caption).count(splat_view.NO_GAUSSIANS) == 1
    assert "pc_full" in keys(at.button)

    # Showing the Gaussians never called the worker (the browser draws them).
    after = runner_counts(at)
    assert (after["calls_ok"], after["calls_failed"]) == (before["calls_ok"], before["calls_failed"])


def test_the_video_says_once_why_it_is_unavailable_on_a_cpu_server(new_app, app_env):
    """The novel-view video needs CUDA and gsplat: on this CPU server the Exports page says
    so in one sentence, offers no control that cannot act, and keeps the 3DGS PLY export."""
    sid, session_dir = app_env.new_session()
    synthetic.write_finished_run(session_dir, synthetic.with_gaussians(synthetic.box_scene(3)))
    at = new_app(sid)
    at.run()
    runner_counts(at)  # the worker has reported what it can do
    at.switch_page(PAGES[3]).run()
    check(at, "exports with Gaussians")
    why = [t for t in texts(at.caption) if t.startswith("Unavailable here:")]
    assert len(why) == 1 and "CUDA" in why[0] and "viewer" in why[0]
    assert "ex_gsv" not in keys(at.button) and "ex_gs" in keys(at.button)
    assert not [s for s in at.selectbox if s.key == "ex_gsv_trj"]
