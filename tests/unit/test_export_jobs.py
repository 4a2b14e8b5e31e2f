"""Export jobs of the run service (`da3_core.runs.service.RunService.submit_export`): COLMAP,
3DGS PLY and the Gaussian video go through the worker's queue like runs do.

A real isolated worker runs light stand-ins of the export tasks (`tests.export_tasks`, same
signatures, writing the way the real exporters do: `da3_core.atomic`), so each path (queued,
running, done, failed, cancelled, a reload, a server restart) takes milliseconds.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import pytest

from da3_core import atomic
from da3_core.config import Settings
from da3_core.runs import exports
from da3_core.runs import service as run_service
from da3_core.runs.exports import INTERRUPTED_EXPORT, ExportJob
from da3_core.runs.service import RunService
from tests.export_tasks import COLMAP_FILES, fake_export_colmap, fake_export_gs_ply, fake_render_gs_video
from tests.run_service_tasks import fake_reconstruct
from tests.unit import synthetic

FAKES = {"colmap": fake_export_colmap, "gs_ply": fake_export_gs_ply, "gs_video": fake_render_gs_video}


@pytest.fixture
def service(module_runner, tmp_path):
    return RunService(module_runner, Settings(workspace=tmp_path / "ws"), task=fake_reconstruct, export_tasks=FAKES)


def finished_run(tmp_path: Path, first: str = "a", gaussians: bool = False, session: str = "a" * 32):
    """A finished run on disk whose first frame is named ``first`` (it steers the stand-ins)."""
    rec = synthetic.box_scene(2)
    if gaussians:
        rec = synthetic.with_gaussians(rec)
    rec = dataclasses.replace(rec, names=(first, "b"))
    run_dir, meta = synthetic.write_finished_run(tmp_path / "ws" / "sessions" / session, rec)
    return run_dir, rec


def wait_until(predicate, timeout: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what or predicate}"
        time.sleep(0.02)


def wait_finished(ej: ExportJob) -> run_service.RunOutcome:
    wait_until(lambda: ej.finished, what=f"the {ej.title} to end")
    assert ej.outcome is not None
    return ej.outcome


def record(run_dir: Path, kind: str) -> dict:
    return json.loads((run_dir / "exports" / f".{kind}.job.json").read_text())


def hidden(run_dir: Path) -> list[str]:
    return sorted(
        p.name for p in (run_dir / "exports").iterdir() if p.name.startswith(".") and not p.name.endswith(".job.json")
    )


def test_done_writes_the_model_whole_or_not_at_all(service, tmp_path):
    run_dir, rec = finished_run(tmp_path, "slow")
    ej = service.submit_export(run_dir, "colmap", rec, conf_percentile=25.0)
    assert record(run_dir, "colmap")["status"] == "pending"
    # Mid-write: the first file is there, in a hidden folder; the model's folder is not.
    wait_until(
        lambda: any((p / COLMAP_FILES[0]).is_file() for p in atomic.partial_paths(run_dir / "exports" / "colmap")),
        what="the first file in the hidden folder",
    )
    status = service.export_status(run_dir, "colmap")
    assert status.status == "running" and status.pending
    assert status.line.startswith("Making the COLMAP model: writing the COLMAP model (half) · "), status.line
    assert status.estimate.startswith("Estimate: about ") and "Rests on:" in status.estimate
    assert not (run_dir / "exports" / "colmap").exists()
    assert wait_finished(ej).ok
    folder = run_dir / "exports" / "colmap"
    assert sorted(p.name for p in folder.iterdir()) == sorted(COLMAP_FILES)
    assert (folder / "points3D.bin").read_bytes() == b"points3D.bin conf 25.0"
    assert hidden(run_dir) == []  # nothing half-written left behind
    done = service.export_status(run_dir, "colmap")
    assert done.ok and done.files == tuple(f"colmap/{n}" for n in sorted(COLMAP_FILES))
    assert done.total_s is not None and done.total_s >= 2.0 and done.waiting_s is not None
    assert done.took().endswith(" waiting)")
    saved = record(run_dir, "colmap")
    assert (
        saved["status"] == "done"
        and saved["files"] == list(done.files)
        and saved["options"] == {"conf_percentile": 25.0}
    )


def test_each_job_has_its_place_in_the_queue_and_one_of_a_kind_at_a_time(service, tmp_path):
    slow_dir, slow = finished_run(tmp_path, "slow", gaussians=True)
    other_dir, other = finished_run(tmp_path, "x", gaussians=True, session="b" * 32)
    first = service.submit_export(slow_dir, "gs_ply", slow)
    wait_until(lambda: first.job.started_at is not None, what="the first job to start")
    second = service.submit_export(other_dir, "gs_video", other, trajectory="wander", fps=12)
    wait_until(lambda: (second.pump(), second.position)[1] is not None, what="the second job's place")
    line = second.status_line()
    assert line.startswith("Queued: position 1 (1 ahead) · novel-view video · waiting "), line
    status = service.export_status(other_dir, "gs_video")
    assert status.status == "queued" and status.line.startswith("Queued: position 1 (1 ahead)")
    with pytest.raises(ValueError, match="already being made"):
        service.submit_export(slow_dir, "gs_ply", slow)
    assert wait_finished(first).ok and wait_finished(second).ok
    assert (slow_dir / "exports" / "gs_ply" / "0000.ply").read_bytes().startswith(b"ply\n")
    video = service.export_status(other_dir, "gs_video")
    assert video.ok and video.files == ("gs_video.mp4",) and video.info["frames"] == 48 and "path" not in video.info
    assert video.waiting_s > 0.5  # it waited behind the slow PLY
    assert record(other_dir, "gs_video")["options"] == {"trajectory": "wander", "fps": 12}


def test_cancel_while_queued_or_running_keeps_the_earlier_model(service, tmp_path):
    run_dir, rec = finished_run(tmp_path, "slow")
    earlier = service.submit_export(run_dir, "colmap", dataclasses.replace(rec, names=("a", "b")))
    assert wait_finished(earlier).ok
    model = {p.name: p.read_bytes() for p in (run_dir / "exports" / "colmap").iterdir()}

    running = service.submit_export(run_dir, "colmap", rec)
    wait_until(lambda: atomic.partial_paths(run_dir / "exports" / "colmap"), what="the writer to start")
    assert service.cancel_export(run_dir, "colmap")
    assert service.export_status(run_dir, "colmap").cancel_requested
    outcome = wait_finished(running)
    assert outcome.status == "cancelled" and outcome.message == "cancelled by the user"
    assert {p.name: p.read_bytes() for p in (run_dir / "exports" / "colmap").iterdir()} == model  # untouched
    assert hidden(run_dir) == []
    assert record(run_dir, "colmap")["status"] == "cancelled"
    assert not service.cancel_export(run_dir, "colmap")  # nothing pending any more

    # Queued behind a slow run of the worker: cancelled before it starts, nothing written.
    other_dir, other = finished_run(tmp_path, "slow", gaussians=True, session="c" * 32)
    blocker = service.submit_export(other_dir, "gs_ply", other)
    queued = service.submit_export(run_dir, "gs_ply", dataclasses.replace(other, names=("a", "b")))
    queued.cancel()
    assert wait_finished(queued).status == "cancelled"
    assert not (run_dir / "exports" / "gs_ply").exists()
    assert wait_finished(blocker).ok


def test_a_reload_finds_the_job_and_its_end_outlives_the_server(service, tmp_path):
    run_dir, rec = finished_run(tmp_path, "slow", gaussians=True)
    ej = service.submit_export(run_dir, "gs_ply", rec)
    # A new page session knows only the run folder and the kind: it finds the same job.
    assert service.export_job(run_dir, "gs_ply") is ej
    wait_until(lambda: service.export_status(run_dir, "gs_ply").status == "running", what="running")
    assert wait_finished(ej).ok
    service.keep_finished_s = -1.0  # the server let go of the job (no sleep): its record says how it ended
    assert service.export_job(run_dir, "gs_ply") is None
    again = service.export_status(run_dir, "gs_ply")
    assert again.ok and again.files == ("gs_ply/0000.ply",) and again.total_s is not None

    # A server that stopped mid-export left its record pending and a hidden half-written file:
    # the next server says it was interrupted and removes the leftover.
    _write = exports._write_export_record
    _write(run_dir, "colmap", {"kind": "colmap", "status": "pending", "estimate": "Estimate: ..."})
    leftover = atomic.partial_name(run_dir / "exports" / "colmap")
    leftover.mkdir()
    (leftover / "points3D.bin").write_bytes(b"half")
    fresh = RunService(service.runner, service.settings, export_tasks=FAKES)
    status = fresh.export_status(run_dir, "colmap")
    assert status.status == "failed" and status.message == INTERRUPTED_EXPORT
    assert record(run_dir, "colmap")["status"] == "failed" and not leftover.exists()
    assert fresh.export_status(run_dir, "gs_video") is None  # never made


def test_a_failure_keeps_its_message_and_leaves_nothing_half_written(service, tmp_path):
    run_dir, rec = finished_run(tmp_path, "fail")
    ej = service.submit_export(run_dir, "colmap", rec)
    outcome = wait_finished(ej)
    assert outcome.status == "failed" and outcome.message == "ValueError: the fake exporter refuses this run"
    assert "Traceback" in outcome.traceback
    assert not (run_dir / "exports" / "colmap").exists() and hidden(run_dir) == []
    status = service.export_status(run_dir, "colmap")
    assert status.status == "failed" and status.message == outcome.message and "Traceback" in status.traceback
    service.keep_finished_s = -1.0  # any age is past this: no sleep needed
    kept = service.export_status(run_dir, "colmap")  # from the record, after the server let go
    assert kept.status == "failed" and kept.message == outcome.message and "Traceback" in kept.traceback
    # The next try works and replaces nothing but what it writes.
    retry = service.submit_export(run_dir, "colmap", dataclasses.replace(rec, names=("ok", "b")))
    assert wait_finished(retry).ok and service.export_status(run_dir, "colmap").ok


def test_estimates_say_what_they_rest_on(service, tmp_path):
    run_dir, rec = finished_run(tmp_path, "a", gaussians=True)
    n, h, w = rec.depth.shape
    colmap = service.export_estimate(run_dir, "colmap", rec, conf_percentile=40.0)
    assert colmap.budget_s == 30  # the (stand-in) task's budget
    assert colmap.output_mb == pytest.approx(n * h * w * 0.6 * exports.COLMAP_BYTES_PER_POINT / 2**20)
    assert f"{int(n * h * w * 0.6):,} points kept" in colmap.note() and "stopped after 30 s" in colmap.note()
    ply = service.export_estimate(run_dir, "gs_ply", rec)
    assert ply.output_mb == pytest.approx(len(rec.gaussians.means) * 14 * 4 / 2**20)  # 14 floats: SH degree 0
    video = service.export_estimate(run_dir, "gs_video", rec, trajectory="wander")
    assert video.seconds >= exports.GSPLAT_COMPILE_S and "gsplat's one-time kernel compile" in video.note()
    assert "about 120 frames" in video.note()
    assert exports.gs_video_frames(2, "interpolate_smooth") == 48  # DA3: at least 2 s at 24 fps
    assert exports.gs_video_frames(9, "original") == 9
    real = RunService(service.runner, service.settings)
    assert real.export_estimate(run_dir, "gs_video", rec).budget_s == 900  # the real task's: covers the compile
    with pytest.raises(ValueError, match="unknown export"):
        service.export_estimate(run_dir, "obj", rec)


def test_atomic_writes_leave_the_final_path_whole(tmp_path):
    final = tmp_path / "out" / "model"
    with atomic.atomic_dir(final) as part:
        (part / "a.bin").write_bytes(b"1")
        assert not final.exists() and part.name.startswith(".model.") and part.parent == final.parent
    assert [p.name for p in final.iterdir()] == ["a.bin"]
    with pytest.raises(RuntimeError):
        with atomic.atomic_dir(final) as part:
            (part / "b.bin").write_bytes(b"2")
            raise RuntimeError("killed mid-write")
    assert [p.name for p in final.iterdir()] == ["a.bin"] and atomic.partial_paths(final) == []
    with atomic.atomic_dir(final) as part:  # a new model replaces the old one whole
        (part / "c.bin").write_bytes(b"3")
    assert [p.name for p in final.iterdir()] == ["c.bin"] and atomic.partial_paths(final) == []
    video = tmp_path / "out" / "v.mp4"
    with atomic.atomic_file(video) as part:
        assert part.suffix == ".mp4" and part.name.startswith(".v.mp4.")
        part.write_bytes(b"mp4")
    assert video.read_bytes() == b"mp4"
    stale = atomic.partial_name(video)
    stale.write_bytes(b"half")  # what a killed writer leaves
    assert atomic.remove_partial(video) == [stale] and not stale.exists() and video.read_bytes() == b"mp4"
