"""AppTest of the Exports page's voxel downsampling and its depth-of-every-frame section, on a
synthetic finished run (no model)."""

from __future__ import annotations

import re

import numpy as np
import pytest
from streamlit.runtime.media_file_manager import MediaFileManager

from da3_core.runs import records as runs
from da3_core.scene import depth_video
from tests.app.kit import PAGES, check, keys, texts
from tests.unit import synthetic


@pytest.fixture
def downloads(monkeypatch):
    """What each deferred download button would send when clicked: file name -> callable.

    AppTest cannot click a download button (the browser asks the server for the file), so this
    records the callables the page registers and a test calls them as the server would."""
    made: dict[str, object] = {}
    original = MediaFileManager.add_deferred

    def record(self, data_callable, mimetype, coordinates, file_name=None, **kwargs):
        made[file_name] = data_callable
        return original(self, data_callable, mimetype, coordinates, file_name=file_name, **kwargs)

    monkeypatch.setattr(MediaFileManager, "add_deferred", record)
    return made


def ply_vertices(data: bytes) -> int:
    found = re.search(rb"element vertex (\d+)", data[:1000])
    assert found, data[:200]
    return int(found.group(1))


def test_voxel_downsampling_changes_the_point_formats_and_the_depth_video_shows(new_app, app_env, downloads):
    sid, session_dir = app_env.new_session()
    run_dir, meta = synthetic.write_finished_run(session_dir, synthetic.box_scene(3))
    at = new_app(sid)
    at.run()
    at.switch_page(PAGES[3]).run()
    check(at, "exports")
    assert at.toggle(key="ex_voxel").value is False  # off by default
    full = ply_vertices(downloads[f"{meta.run_id}-points.ply"]())
    assert full > 1000

    at.toggle(key="ex_voxel").set_value(True).run()
    check(at, "voxel on")
    size = at.number_input(key="ex_voxel_size").value
    assert size > 0
    caption = next(c for c in texts(at.caption) if "after voxel downsampling" in c)
    shown = int(re.search(r"^([\d,]+) points after", caption).group(1).replace(",", ""))
    assert f"{size:.4g}" in caption and f"from {full:,} filtered points" in caption
    name = f"points_voxel{size:.4g}.ply"
    ply = downloads[f"{meta.run_id}-{name}"]()
    assert ply_vertices(ply) == shown and shown < full  # the prefill leaves about a quarter
    assert full / 8 < shown < full / 2
    assert (runs.exports_dir(run_dir) / name).read_bytes() == ply  # also kept in the run folder
    assert f"{meta.run_id}-scene_voxel{size:.4g}.glb" in downloads

    # A larger voxel leaves fewer points; the file name follows.
    at.number_input(key="ex_voxel_size").set_value(size * 3).run()
    check(at, "bigger voxel")
    fewer = ply_vertices(downloads[f"{meta.run_id}-points_voxel{size * 3:.4g}.ply"]())
    assert fewer < shown
    assert at.number_input(key="ex_voxel_size").value == pytest.approx(size * 3)  # a typed size stays

    # No depth video yet; once the chunked run's files are there, the page shows and offers them.
    assert not at.get("video") and "ex_depth_video" not in keys(at.get("download_button"))
    depth = np.asarray(synthetic.box_scene(3).depth)
    out = runs.exports_dir(run_dir)
    depth_video.write_depth_video(depth, out / depth_video.VIDEO_FILENAME, unit="relative units")
    depth_video.write_depth_png_sequence(
        depth, out / depth_video.PNG_SEQUENCE_FILENAME, names=["a", "b", "c"], unit="relative units"
    )
    at.run()
    check(at, "depth video")
    assert len(at.get("video")) == 1
    assert {"ex_depth_video", "ex_depth_png16"} <= keys(at.get("download_button"))
    video = downloads[f"{meta.run_id}-{depth_video.VIDEO_FILENAME}"]()
    assert video == (out / depth_video.VIDEO_FILENAME).read_bytes()
    assert (
        downloads[f"{meta.run_id}-{depth_video.PNG_SEQUENCE_FILENAME}"]()
        == (out / depth_video.PNG_SEQUENCE_FILENAME).read_bytes()
    )
    assert any("3 frames, depth" in m for m in texts(at.markdown))

    # Off again: the plain files, with every filtered point.
    at.toggle(key="ex_voxel").set_value(False).run()
    check(at, "voxel off")
    assert ply_vertices(downloads[f"{meta.run_id}-points.ply"]()) == full
