"""Normals, meshes and feature maps in headless Chromium against the real app (`app_server`):
show normals beside depth; build the fused mesh in the worker and view it in the in-page
three.js viewer; make DA3's feature maps (real worker, untrained da3-small demo weights) and
download the NPZ.

Each test writes a small finished run (the synthetic box, 3 views of 64x48, process_res 140)
into a session of the server's workspace and opens that session's address, so no
reconstruction is needed and each takes seconds.
"""

from __future__ import annotations

import io
import re
import secrets

import numpy as np
import pytest
from playwright.sync_api import expect

from tests.e2e.test_browser import MAIN, assert_clean, heading, new_page, open_url, shoot
from tests.unit import synthetic

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

expect.set_options(timeout=60_000)


def synthetic_session(workspace):
    sid = secrets.token_hex(16)
    run_dir, meta = synthetic.write_finished_run(
        workspace / "sessions" / sid, synthetic.box_scene(3), params={"process_res": 140}
    )
    return sid, run_dir, meta


def test_normals_beside_depth(app_server, browser):
    sid, run_dir, meta = synthetic_session(app_server.workspace)
    ctx, page = new_page(browser)
    try:
        open_url(page, f"{app_server.url}/Depth_maps?s={sid}")
        expect(heading(page, "Depth maps")).to_be_visible()
        expect(page.locator(f".st-key-dm_fig_{meta.run_id}_0 .js-plotly-plot")).to_be_visible()
        page.locator(".st-key-dm_beside_w").get_by_text("Normals", exact=True).click()
        img = page.locator(".st-key-dm_normals img").first
        expect(img).to_be_visible()
        expect(page.get_by_text(re.compile(r"^Normals: \d+% of pixels"))).to_be_visible()
        # A real picture: the box's faces give several distinct normal colours.
        box = img.bounding_box()
        assert box and box["width"] > 50 and box["height"] > 30, box
        assert_clean(page, "Depth maps with normals")
        shoot(page, "09-normals.png", docs=False)
    finally:
        ctx.close()


def test_build_and_view_a_fused_mesh(app_server, browser):
    sid, run_dir, meta = synthetic_session(app_server.workspace)
    ctx, page = new_page(browser)
    try:
        open_url(page, f"{app_server.url}/Exports?s={sid}")
        expect(heading(page, "Exports")).to_be_visible()
        expect(page.get_by_text(re.compile(r"^TSDF grid from the scene's scale: voxel "))).to_be_visible()
        # A button with a tooltip (help=) is drawn twice in the DOM by Streamlit 1.67: the first is the one shown.
        button = page.locator(".st-key-ex_mesh button").first
        expect(button).to_be_enabled()
        button.click()
        done = page.locator(MAIN).get_by_text(re.compile(r"^Fused mesh: [\d,]+ triangles"))
        expect(done).to_be_visible(timeout=180_000)
        n_faces = int(re.search(r"Fused mesh: ([\d,]+) triangles", done.inner_text()).group(1).replace(",", ""))
        assert n_faces > 100
        expect(page.locator(".st-key-ex_mesh_dl_glb button")).to_be_visible()
        page.locator(".st-key-ex_mesh_view").get_by_text("View the fused mesh", exact=True).click()
        frame = page.frame_locator('[data-testid="stIFrame"]').first
        viewer = frame.locator("#da3-viewer")
        expect(viewer).to_have_attribute("data-state", re.compile("^(ready|error)$"), timeout=120_000)
        status = frame.locator(".da3-status").inner_text()
        assert viewer.get_attribute("data-state") == "ready", f"the mesh viewer failed: {status}"
        assert int(viewer.get_attribute("data-faces")) == n_faces, (viewer.get_attribute("data-faces"), n_faces)
        assert "triangles" in status
        expect(frame.locator("#da3-viewer canvas")).to_be_visible()
        assert (run_dir / "exports" / "mesh" / "fused.obj").is_file()
        assert_clean(page, "Exports with the mesh viewer")
        shoot(page, "10-mesh.png", docs=False, scroll_to=page.locator('[data-testid="stIFrame"]'))
    finally:
        ctx.close()


def test_download_feature_maps(app_server, browser, tmp_path):
    sid, run_dir, meta = synthetic_session(app_server.workspace)
    ctx, page = new_page(browser)
    try:
        open_url(page, f"{app_server.url}/Exports?s={sid}")
        expect(heading(page, "Exports")).to_be_visible()
        button = page.locator(".st-key-ex_features button").first
        expect(button).to_be_enabled()
        button.click()
        done = page.locator(MAIN).get_by_text(re.compile(r"^Feature maps of layers 11: 3 views"))
        expect(done).to_be_visible(timeout=240_000)
        with page.expect_download(timeout=60_000) as dl_info:
            page.locator(".st-key-ex_features_dl button").click()
        download = dl_info.value
        assert download.failure() is None, download.failure()
        assert download.suggested_filename == f"{meta.run_id}-features.npz"
        path = tmp_path / download.suggested_filename
        download.save_as(path)
        with np.load(io.BytesIO(path.read_bytes()), allow_pickle=False) as z:
            feat = z["feat_layer_11"]
            assert feat.dtype == np.float16 and feat.shape[0] == 3 and feat.shape[-1] == 384
            assert list(z["names"]) == list(meta.names)
        assert_clean(page, "Exports after the feature download")
    finally:
        ctx.close()
