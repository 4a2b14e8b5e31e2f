"""AppTest of the Exports page's worker jobs (COLMAP, 3DGS PLY): the page submits a job of the
run service and follows it (queue place or stage, progress, Cancel) to its end, a reload finds
it again, and the download is offered only once the job is done.

The app's run service runs light stand-ins of the export tasks (`tests.export_tasks`) in the
app's real worker; torch never enters this process (`tests/app/conftest.py`)."""

from __future__ import annotations

import dataclasses
import re

import pytest

from tests.app.kit import PAGES, check, keys, run_picker, texts, wait_export
from tests.export_tasks import COLMAP_FILES, fake_export_colmap, fake_export_gs_ply
from tests.unit import synthetic


@pytest.fixture
def fake_exports(monkeypatch):
    """The app's run service makes its exports with the stand-ins (restored afterwards)."""

    def install() -> None:
        from da3_core.app import holder

        service = holder.get_holder().runs
        monkeypatch.setitem(service.export_tasks, "colmap", fake_export_colmap)
        monkeypatch.setitem(service.export_tasks, "gs_ply", fake_export_gs_ply)

    return install


def status_lines(at) -> list[str]:
    return [m for m in texts(at.markdown) if m.startswith(("**Queued", "**Making the "))]


def test_an_export_is_a_job_the_page_follows_through_a_reload_to_its_end(new_app, app_env, fake_exports):
    sid, session_dir = app_env.new_session()
    rec = dataclasses.replace(synthetic.box_scene(2), names=("slow", "b"))
    run_dir, meta = synthetic.write_finished_run(session_dir, rec)
    at = new_app(sid)
    at.run()
    fake_exports()
    at.switch_page(PAGES[3]).run()
    check(at, "exports")
    estimate = [c for c in texts(at.caption) if c.startswith("Estimate: about ")]
    assert estimate and "points kept" in estimate[0] and "Rests on:" in estimate[0]

    at.button(key="ex_colmap").click().run()
    check(at, "colmap queued")
    # The page did not wait: the job's status shows, the button is off, no download yet.
    lines = status_lines(at)
    assert len(lines) == 1 and re.match(r"^\*\*(Queued|Making the COLMAP model: )", lines[0]), lines
    assert at.button(key="ex_colmap").disabled and "ex_colmap_cancel" in keys(at.button)
    assert "ex_colmap_zip" not in keys(at.get("download_button"))
    assert len(at.get("progress")) >= 1

    # A reload (a new browser session on the same address) finds the same job, still running.
    reloaded = new_app(sid)
    reloaded.run()
    reloaded.switch_page(PAGES[3]).run()
    check(reloaded, "exports after a reload")
    lines = status_lines(reloaded)
    assert len(lines) == 1 and "COLMAP model" in lines[0], lines
    assert reloaded.button(key="ex_colmap").disabled
    assert "ex_colmap_zip" not in keys(reloaded.get("download_button"))
    assert not (run_dir / "exports" / "colmap").exists()  # still being written, under a hidden name

    done, errors = wait_export(reloaded, "COLMAP model written: ")
    assert errors == []
    assert done[0].startswith("COLMAP model written: " + ", ".join(sorted(COLMAP_FILES)))
    assert re.search(r", in \d+\.\d s \(\d+\.\d s running, \d+\.\d s waiting\)\.$", done[0]), done[0]
    assert "ex_colmap_zip" in keys(reloaded.get("download_button")) and not reloaded.button(key="ex_colmap").disabled
    assert status_lines(reloaded) == []
    # The first tab sees the same end on its next run.
    done, errors = wait_export(at, "COLMAP model written: ")
    assert done and errors == []


def test_cancel_and_failure_are_said_and_kept(new_app, app_env, fake_exports):
    sid, session_dir = app_env.new_session()
    slow = dataclasses.replace(synthetic.with_gaussians(synthetic.box_scene(2)), names=("slow", "b"))
    run_dir, meta = synthetic.write_finished_run(session_dir, slow)
    at = new_app(sid)
    at.run()
    fake_exports()
    at.switch_page(PAGES[3]).run()
    check(at, "exports")
    at.button(key="ex_gs").click().run()
    check(at, "3dgs queued")
    at.button(key="ex_gs_ply_cancel").click().run()
    check(at, "cancel clicked")
    done, ended = wait_export(at, "3DGS PLY written")
    assert (
        done == [] and len(ended) == 1 and ended[0].startswith("The 3DGS PLY was cancelled (cancelled by the user)")
    ), ended
    assert not (run_dir / "exports" / "gs_ply" / "0000.ply").exists() and "ex_gs_ply_dl" not in keys(
        at.get("download_button")
    )

    failing = dataclasses.replace(synthetic.box_scene(3), names=("fail", "b", "c"))
    _, failing_meta = synthetic.write_finished_run(session_dir, failing)
    at.run()  # the sidebar lists it
    run_picker(at).set_value(failing_meta.run_id).run()
    check(at, "the failing run picked")
    at.button(key="ex_colmap").click().run()
    done, errors = wait_export(at, "COLMAP model written: ")
    assert done == [] and errors == ["The COLMAP model failed: ValueError: the fake exporter refuses this run"], errors
    reloaded = new_app(sid)
    reloaded.run()
    reloaded.switch_page(PAGES[3]).run()
    check(reloaded, "reload after the failure")
    assert "The COLMAP model failed: ValueError: the fake exporter refuses this run" in texts(reloaded.error)
    assert not reloaded.button(key="ex_colmap").disabled  # it can be tried again
