"""The server-wide holders without a server: the janitor's clean-up report and the worker
probe's answers (fakes stand in for the runner: no process is started)."""

from __future__ import annotations

import os
import threading
import time

import pytest

from da3_core.app import holder
from da3_core.config import load_settings
from da3_core.runs import workspace


def _old_session(root, days: float):
    session = workspace.new_session(root)
    run = workspace.new_run(session)
    (run / "result.npz").write_bytes(b"x" * 4096)
    old = time.time() - days * 86400
    for p in (run / "result.npz", run, session):
        os.utime(p, (old, old))
    return session


def test_janitor_removes_old_sessions_and_keeps_the_ones_in_use(tmp_path):
    old = _old_session(tmp_path, days=10)
    kept = _old_session(tmp_path, days=10)
    janitor = holder.Janitor(load_settings({"DA3_WORKSPACE": str(tmp_path), "DA3_WORKSPACE_MAX_AGE_H": "24"}))
    janitor._clean(keep=(kept,))
    assert not old.exists() and kept.exists()
    assert list(janitor.problems) == []


def test_janitor_reports_a_workspace_it_cannot_bring_under_the_limit(tmp_path):
    kept = _old_session(tmp_path, days=0.5)
    (workspace.list_runs(kept)[0] / "big.bin").write_bytes(b"x" * 20_000_000)
    janitor = holder.Janitor(load_settings({"DA3_WORKSPACE": str(tmp_path), "DA3_WORKSPACE_MAX_GB": "0.01"}))
    janitor._clean(keep=(kept,))
    assert kept.exists()
    assert len(janitor.problems) == 1 and "still over DA3_WORKSPACE_MAX_GB" in janitor.problems[0]


def test_janitor_keeps_a_failed_clean_up_as_a_problem(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise PermissionError("read-only file system")

    monkeypatch.setattr(workspace, "cleanup", broken)
    janitor = holder.Janitor(load_settings({"DA3_WORKSPACE": str(tmp_path)}))
    janitor._clean(keep=())
    assert "clean-up failed: PermissionError: read-only file system" in janitor.problems[0]


def test_janitor_lists_deletions_that_failed(tmp_path, monkeypatch):
    report = workspace.CleanupReport(errors=["could not delete sessions/x: busy"])
    monkeypatch.setattr(workspace, "cleanup", lambda *a, **k: report)
    janitor = holder.Janitor(load_settings({"DA3_WORKSPACE": str(tmp_path)}))
    janitor._clean(keep=())
    assert janitor.problems[0].endswith("could not delete sessions/x: busy")


def test_janitor_runs_at_most_once_per_period(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(holder.Janitor, "_clean", lambda self, keep: calls.append(keep))
    janitor = holder.Janitor(load_settings({"DA3_WORKSPACE": str(tmp_path)}), every_s=3600)
    janitor.maybe_clean(keep=(tmp_path,))
    janitor.maybe_clean(keep=(tmp_path,))
    # Every clean-up thread started so far has finished (no sleep standing for "a second one
    # would have run by now"): exactly one ran.
    for thread in threading.enumerate():
        if thread.name == "da3-janitor":
            thread.join(timeout=30)
            assert not thread.is_alive()
    assert calls == [(tmp_path,)]


class _Probe:
    def __init__(self, done: bool, value=None, error: BaseException | None = None):
        self._done, self._value, self._error = done, value, error

    def done(self) -> bool:
        return self._done

    def result(self, timeout=None):
        if self._error is not None:
            raise self._error
        return self._value


class _ClosedRunner:
    def submit(self, *args, **kwargs):
        raise RuntimeError("the runner is closed")


@pytest.mark.parametrize(
    ("probe", "expected"),
    [
        (None, None),
        (_Probe(done=False), None),
        (_Probe(done=True, value={"device": "cpu"}), {"device": "cpu"}),
        (_Probe(done=True, error=RuntimeError("worker gone")), {"error": "worker gone"}),
    ],
)
def test_device_info_from_the_probe(probe, expected):
    assert holder.RunnerHolder(runner=_ClosedRunner(), probe=probe).device_info() == expected  # type: ignore[arg-type]  # stand-ins for Runner and Job


def test_a_probe_that_cannot_be_queued_is_dropped():
    h = holder.RunnerHolder(runner=_ClosedRunner(), probe=_Probe(done=True, value={}))  # type: ignore[arg-type]  # stand-ins for Runner and Job
    h.refresh_probe()
    assert h.probe is None and h.device_info() is None
