"""AppTests of the derived views: normals beside depth (computed in this process: numpy,
never torch), the mesh job from the Exports page to its viewer and downloads (the real mesh
task in the app's worker), and feature maps (a stand-in task in the worker; the page shows
DA3-style PCA images on the Exports and Depth maps pages and offers the NPZ)."""

from __future__ import annotations

import dataclasses

import pytest

from tests.app.kit import PAGES, check, keys, texts, wait_export
from tests.app.test_browser_findings import image_captions
from tests.unit import synthetic
from tests.view_tasks import fake_export_features


@pytest.fixture
def fake_features(monkeypatch):
    def install() -> None:
        from da3_core.app import holder

        monkeypatch.setitem(holder.get_holder().runs.export_tasks, "features", fake_export_features)

    return install


def test_normals_are_shown_beside_depth_and_cached(new_app, app_env):
    sid, session_dir = app_env.new_session()
    run_dir, meta = synthetic.write_finished_run(session_dir, synthetic.box_scene(2))
    at = new_app(sid)
    at.run()
    at.switch_page(PAGES[1]).run()
    check(at, "depth maps")
    at.button_group(key="dm_beside_w").set_value("Normals").run()
    check(at, "normals")
    caps = [c for c in texts(at.caption) if c.startswith("Normals: ")]
    assert len(caps) == 1 and "% of pixels" in caps[0], texts(at.caption)
    assert len(image_captions(at)) == 2  # the normals and the input, instead of the confidence figure
    cache = at.session_state["views_normals"]
    assert list(cache) == [(meta.run_id, 2, 0, 0.0)]
    at.button(key="dm_next").click().run()
    check(at, "normals of view 2")
    assert len(at.session_state["views_normals"]) == 2
    # Kept across pages, as the other Depth maps choices.
    at.switch_page(PAGES[3]).run()
    at.switch_page(PAGES[1]).run()
    assert at.button_group(key="dm_beside_w").value == "Normals"
    # Normal PNGs are among the Exports page's downloads.
    at.switch_page(PAGES[3]).run()
    check(at, "exports")
    assert "ex_normals_png" in keys(at.get("download_button"))


def test_meshes_are_built_in_the_worker_then_viewed_and_offered(new_app, app_env):
    sid, session_dir = app_env.new_session()
    run_dir, meta = synthetic.write_finished_run(session_dir, synthetic.box_scene(3))
    at = new_app(sid)
    at.run()
    at.switch_page(PAGES[3]).run()
    check(at, "exports")
    grid = [c for c in texts(at.caption) if c.startswith("TSDF grid from the scene's scale: voxel ")]
    assert len(grid) == 1 and "truncation" in grid[0], texts(at.caption)
    at.button(key="ex_mesh").click().run()
    done, errors = wait_export(at, "Fused mesh: ", timeout=180)
    assert errors == [] and done and "triangles" in done[0] and "exports/mesh" in done[0], (done, errors)
    downloads = keys(at.get("download_button"))
    assert {"ex_mesh_dl_glb", "ex_mesh_dl_ply", "ex_mesh_dl_obj", "ex_mesh_dl_views"} <= downloads
    at.toggle(key="ex_mesh_view").set_value(True).run()
    check(at, "mesh viewer")
    html = [e for e in at.get("iframe")]
    assert html, "no viewer"
    assert (run_dir / "exports" / "mesh" / "fused.glb").is_file()


def test_feature_maps_are_made_viewed_and_downloadable(new_app, app_env, fake_features):
    sid, session_dir = app_env.new_session()
    rec = dataclasses.replace(synthetic.box_scene(2), names=("a.png", "b.png"))
    run_dir, meta = synthetic.write_finished_run(session_dir, rec)
    at = new_app(sid)
    at.run()
    fake_features()
    at.switch_page(PAGES[1]).run()
    at.button_group(key="dm_beside_w").set_value("Feature map").run()
    check(at, "no features yet")
    assert any(i.startswith("No feature maps for this run yet") for i in texts(at.info))
    at.switch_page(PAGES[3]).run()
    check(at, "exports")
    assert at.multiselect(key="ex_feat_layers").value == [11]
    at.multiselect(key="ex_feat_layers").set_value([5, 11]).run()
    at.button(key="ex_features").click().run()
    done, errors = wait_export(at, "Feature maps of layers 5, 11: ")
    assert errors == [] and "2 views" in done[0] and "float16" in done[0], (done, errors)
    assert "ex_features_dl" in keys(at.get("download_button"))
    assert at.selectbox(key="ex_feat_show").options == ["layer 5", "layer 11"]
    assert [c for c in image_captions(at) if c.startswith(("1: a.png", "2: b.png"))] == ["1: a.png", "2: b.png"]
    at.switch_page(PAGES[1]).run()
    check(at, "depth maps with features")
    assert at.selectbox(key="dm_feat_layer").options == ["layer 5", "layer 11"]
    assert any(c.startswith("Layer 11 of da3-small: ") for c in texts(at.caption)), texts(at.caption)
    assert {k[:2] for k in at.session_state["views_pca"]} == {(meta.run_id, 5), (meta.run_id, 11)}
