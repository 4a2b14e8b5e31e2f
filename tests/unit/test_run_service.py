"""One owner for a run in the parent (`da3_core.runs.service`): submit, watch, collect, fail.

A real isolated worker runs a light stand-in for the DA3 task (`tests.run_service_tasks`),
so every path (done, failed, cancelled, a save that fails, a server restart) takes
milliseconds.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from da3_core.config import Settings
from da3_core.contract import ModelSpec
from da3_core.runs import jobs, records
from da3_core.runs import service as run_service
from da3_core.runs.service import INTERRUPTED, RunService
from tests.run_service_tasks import fake_reconstruct

PARAMS = {
    "process_res": 112,
    "process_res_method": "upper_bound_resize",
    "ref_view_strategy": "saddle_balanced",
    "reference_view": None,
    "infer_gs": False,
    "device": "cpu",
}


@pytest.fixture
def service(module_runner, tmp_path):
    return RunService(module_runner, Settings(workspace=tmp_path / "ws"), task=fake_reconstruct)


def frames(n: int = 2) -> list[np.ndarray]:
    rng = np.random.default_rng(n)
    return [rng.integers(0, 255, (40, 60, 3), dtype=np.uint8) for _ in range(n)]


def wait_finished(active: run_service.ActiveRun, timeout: float = 30.0) -> run_service.RunOutcome:
    deadline = time.monotonic() + timeout
    while not active.finished:
        assert time.monotonic() < deadline, "the run's outcome was never saved"
        time.sleep(0.02)
    assert active.outcome is not None
    return active.outcome


def status_on_disk(active: run_service.ActiveRun) -> dict:
    return json.loads((active.run_dir / records.META_FILE).read_text())


def test_done_run_is_saved_without_any_page(service, tmp_path):
    session = tmp_path / "ws" / "sessions" / ("a" * 32)
    active = service.submit(session, frames(), ["a.png", "b.png"], "upload", ModelSpec("demo", "da3-small"), PARAMS)
    assert status_on_disk(active)["status"] == "pending" and (active.run_dir / "input" / "0000.jpg").is_file()
    outcome = wait_finished(active)
    assert outcome.ok and outcome.message == ""
    assert status_on_disk(active)["status"] == "done" and (active.run_dir / records.RESULT_FILE).is_file()
    assert active.result is not None and active.result.names == ("a.png", "b.png")
    assert active.images == ()  # the frames are let go once the outcome is known
    rec = records.load_result(active.run_dir)
    np.testing.assert_array_equal(rec.depth, active.result.depth)


def test_a_failed_save_shows_a_failed_run_never_pending(service, tmp_path, monkeypatch):
    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(records, "finish_run", disk_full)
    session = tmp_path / "ws" / "sessions" / ("b" * 32)
    active = service.submit(session, frames(), ["a.png", "b.png"], "upload", ModelSpec("demo", "da3-small"), PARAMS)
    outcome = wait_finished(active)
    assert outcome.status == "failed" and "could not be saved" in outcome.message and "No space left" in outcome.message
    assert status_on_disk(active)["status"] == "failed"
    assert "could not be saved" in status_on_disk(active)["error"]


def test_when_even_the_failure_cannot_be_written_the_page_still_learns_it(service, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(records, "finish_run", broken)
    monkeypatch.setattr(records, "fail_run", broken)
    session = tmp_path / "ws" / "sessions" / ("c" * 32)
    active = service.submit(session, frames(), ["a.png", "b.png"], "upload", ModelSpec("demo", "da3-small"), PARAMS)
    outcome = wait_finished(active)
    assert outcome.status == "failed" and "could not be saved" in outcome.message
    monkeypatch.undo()
    # run.json still says pending; once the server no longer holds the run (a restart), the
    # next look at the session marks it failed instead of pending forever.
    assert status_on_disk(active)["status"] == "pending"
    fresh = RunService(service.runner, service.settings, task=fake_reconstruct)
    assert fresh.reconcile(session) == [active.run_id]
    meta = status_on_disk(active)
    assert meta["status"] == "failed" and meta["error"] == INTERRUPTED


def test_task_errors_keep_type_and_message(service, tmp_path):
    session = tmp_path / "ws" / "sessions" / ("d" * 32)
    failed = service.submit(session, frames(), ["fail", "b"], "upload", ModelSpec("demo", "da3-small"), PARAMS)
    outcome = wait_finished(failed)
    assert outcome.status == "failed" and outcome.message == "ValueError: the fake model refuses this frame"
    assert "Traceback" in outcome.traceback and not outcome.model_unavailable
    assert failed.images == ()
    missing = service.submit(
        session, frames(), ["no-weights", "b"], "upload", ModelSpec("hub", "depth-anything/DA3-SMALL"), PARAMS
    )
    outcome = wait_finished(missing)
    assert outcome.model_unavailable and "ModelUnavailableError" in outcome.message
    assert status_on_disk(missing)["status"] == "failed"


def test_retry_gets_the_exact_frames_while_held_then_the_saved_copies(service, tmp_path):
    session = tmp_path / "ws" / "sessions" / ("e" * 32)
    submitted = frames(3)
    active = service.submit(session, submitted, ["no-weights", "b", "c"], "upload", ModelSpec("hub", "x/y"), PARAMS)
    wait_finished(active)
    again, exact = service.frames_for_retry(active.run_dir)
    assert exact and len(again) == 3
    for a, b in zip(again, submitted):
        np.testing.assert_array_equal(a, b)  # bit-equal: not JPEG-decoded copies
    service.keep_finished_s = -1.0  # the server let go of it (any age is past this; no sleep)
    again, exact = service.frames_for_retry(active.run_dir)
    assert not exact and [a.shape for a in again] == [b.shape for b in submitted]


def test_cancel_reads_as_cancelled(service, tmp_path):
    session = tmp_path / "ws" / "sessions" / ("f" * 32)
    active = service.submit(session, frames(), ["slow", "b"], "upload", ModelSpec("demo", "da3-small"), PARAMS)
    deadline = time.monotonic() + 20
    while active.job.started_at is None and time.monotonic() < deadline:
        time.sleep(0.02)
    active.job.cancel()
    outcome = wait_finished(active)
    assert outcome.status == "cancelled" and outcome.message == "cancelled by the user"
    meta = status_on_disk(active)
    assert meta["status"] == "cancelled" and records.read_meta(active.run_dir).label().endswith("· cancelled")


def test_a_reload_finds_the_run_again_until_collected(service, tmp_path):
    session = tmp_path / "ws" / "sessions" / ("1" * 32)
    other = tmp_path / "ws" / "sessions" / ("2" * 32)
    active = service.submit(session, frames(), ["slow", "b"], "upload", ModelSpec("demo", "da3-small"), PARAMS)
    assert service.live_for_session(session) == [active]
    assert service.live_for_session(other) == []
    assert service.reconcile(session) == []  # a run this server owns is never marked interrupted
    wait_finished(active)
    assert service.live_for_session(session) == [active]  # finished while no page looked: still to show
    service.mark_collected(active)
    assert service.live_for_session(session) == [] and active.result is None
    assert service.get(active.run_dir) is active


def test_pending_runs_of_an_earlier_server_are_marked_interrupted(service, tmp_path):
    session = tmp_path / "ws" / "sessions" / ("3" * 32)
    run_dir, meta = records.start_run(session, frames(), ["a", "b"], "upload", ModelSpec("demo", "da3-small"), PARAMS)
    assert service.reconcile(session) == [meta.run_id]
    after = records.read_meta(run_dir)
    assert after.status == "failed" and after.error == INTERRUPTED
    assert service.reconcile(session) == []


def test_an_invalid_request_writes_nothing(service, tmp_path):
    session = tmp_path / "ws" / "sessions" / ("4" * 32)
    with pytest.raises(ValueError, match="names has 1 entries for 2 images"):
        service.submit(session, frames(), ["only one"], "upload", ModelSpec("demo", "da3-small"), PARAMS)
    assert not Path(session).exists()


def test_status_line_says_queued_not_running(service, tmp_path):
    session = tmp_path / "ws" / "sessions" / ("5" * 32)
    first = service.submit(session, frames(), ["slow", "b"], "upload", ModelSpec("demo", "da3-small"), PARAMS)
    second = service.submit(session, frames(4), ["x", "b", "c", "d"], "upload", ModelSpec("demo", "da3-small"), PARAMS)
    deadline = time.monotonic() + 20
    while first.job.started_at is None and time.monotonic() < deadline:
        time.sleep(0.02)
    second.pump()
    line = second.status_line()
    assert line.startswith("Queued: position 1 (1 ahead) · 4 frames · waiting "), line
    assert "Running" not in line and "in the queue" not in line
    wait_finished(first)
    wait_finished(second)
    first.pump()
    assert first.status_line().startswith("Running 2 frames: ")


def test_the_time_says_both_the_wait_in_the_queue_and_the_run(service, tmp_path):
    """run.json keeps the time from submission to the end and the wait in the queue, so the
    Done banner says what the log says ("in 6.1 s (4.0 s running, 2.1 s waiting)")."""
    from da3_core.app.session import view_of

    session = tmp_path / "ws" / "sessions" / ("6" * 32)
    first = service.submit(session, frames(), ["slow", "b"], "upload", ModelSpec("demo", "da3-small"), PARAMS)
    second = service.submit(session, frames(), ["x", "b"], "upload", ModelSpec("demo", "da3-small"), PARAMS)
    wait_finished(first)
    wait_finished(second)
    timings = status_on_disk(second)["timings"]
    assert timings[jobs.QUEUE_WAIT_S] > 1.0  # it waited behind the slow one (2 s)
    assert timings[jobs.WALL_S] >= timings[jobs.QUEUE_WAIT_S]
    view = view_of(service, second.run_dir)  # from the service's run
    assert view.status == "done" and view.waiting_s == pytest.approx(timings[jobs.QUEUE_WAIT_S])
    running = timings[jobs.WALL_S] - timings[jobs.QUEUE_WAIT_S]
    assert view.took() == (
        f"{timings[jobs.WALL_S]:.1f} s ({running:.1f} s running, {timings[jobs.QUEUE_WAIT_S]:.1f} s waiting)"
    )
    service.keep_finished_s = -1.0  # the server let go of it (any age is past this; no sleep): the folder says the same
    assert service.get(second.run_dir) is None
    again = view_of(service, second.run_dir)
    assert again.status == "done" and again.took() == view.took()


def test_retry_with_demo_weights_runs_the_same_frames_again(service, tmp_path):
    from da3_core.app.session import view_of

    session = tmp_path / "ws" / "sessions" / ("7" * 32)
    submitted = frames(3)
    missing = service.submit(
        session,
        submitted,
        ["no-weights", "b", "c"],
        "upload",
        ModelSpec("hub", "depth-anything/DA3-BASE"),
        {**PARAMS, "process_res": 126},
    )
    wait_finished(missing)
    view = view_of(service, missing.run_dir)
    assert view.status == "failed" and view.model_unavailable and "ModelUnavailableError" in view.message
    assert "Traceback" in view.traceback
    again = service.retry_with_demo_weights(missing.run_dir)
    assert again.run_dir != missing.run_dir and again.run_dir.parent == session
    assert again.meta.model_kind == "demo" and again.meta.model_ref == "da3-base"  # the preset the run asked for
    assert again.meta.names == ["no-weights", "b", "c"] and again.meta.params["process_res"] == 126
    assert again.meta.params["retry_of"] == missing.run_id and again.meta.params["retry_frames"] == "exact"
    assert again.images and all((a == b).all() for a, b in zip(again.images, submitted))
    assert wait_finished(again).ok
    done = view_of(service, again.run_dir)
    assert done.ok and done.retry_of == missing.run_id
    # Once the server let go of the first run, its saved frames are used, and the view of the
    # failed run still says its weights were missing (read from run.json).
    service.keep_finished_s = -1.0  # any age is past this: no sleep needed
    assert view_of(service, missing.run_dir).model_unavailable
    third = service.retry_with_demo_weights(missing.run_dir)
    assert third.meta.params["retry_frames"] == "saved copies"
    assert wait_finished(third).ok


def test_the_view_of_a_run_from_its_folder_alone(service, tmp_path):
    """What the Done banner reads once the server no longer holds the run: run.json's status,
    message, times and a chunked run's figures (`session.RunView`)."""
    from dataclasses import replace

    from da3_core.app.session import view_of

    session = tmp_path / "ws" / "sessions" / ("8" * 32)
    run_dir, meta = records.start_run(session, frames(), ["a", "b"], "video", ModelSpec("demo", "da3-small"), PARAMS)
    chunked = {"chunks": 3, "chunk": 8, "overlap": 3, "alignment": "sim3", "loops_closed": 1}
    records.write_meta(
        run_dir,
        replace(
            meta,
            status="done",
            preset="da3-small",
            device="cpu",
            params={**meta.params, "chunked": chunked},
            timings={"total": 6.1, jobs.WALL_S: 6.1, jobs.QUEUE_WAIT_S: 2.1},
        ),
    )
    view = view_of(service, run_dir)
    assert view.ok and view.finished and not view.pending and view.n_views == 2
    assert view.took() == "6.1 s (4.0 s running, 2.1 s waiting)"
    assert view.chunk_text() == ", 3 chunks of 8 (overlap 3), alignment sim3, 1 loop(s) closed"
    records.fail_run(run_dir, records.read_meta(run_dir), "ModelUnavailableError: Could not load model x/y")
    failed = view_of(service, run_dir)
    assert failed.status == "failed" and failed.model_unavailable and failed.traceback == ""
    old = replace(
        records.read_meta(run_dir), status="done", error="", timings={"total": 1.5}
    )  # saved before the wait was recorded
    records.write_meta(run_dir, old)
    assert view_of(service, run_dir).took() == "1.5 s"
    assert view_of(service, tmp_path / "nowhere") is None
