"""Per-browser-session state: its folder, its runs, the active run, the run in progress.

Everything a session produces is on disk (`da3_core.runs`); ``st.session_state`` only
caches it. The session id rides in the URL (``?s=<32 hex>``), so a browser reload finds
the same runs again. Re-filtering and re-rendering read cached CPU arrays and never call
the worker.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, MutableMapping

import streamlit as st

from da3_core import geometry, runs, workspace
from da3_core.config import Settings
from da3_core.contract import GPUError, ModelUnavailableError, Reconstruction
from da3_core.gpu import Job, Progress, Queued, Started

SID = "sid"
ACTIVE = "active_run"
RECS = "recs"
WORLD = "world_cache"
PENDING = "pending_run"
OUTCOME = "last_outcome"
_MAX_RECS = 3
_MAX_WORLD = 2


@dataclass
class PendingRun:
    """The session's run in progress: its job and the last state it reported.

    Attributes:
        job: The runner's job.
        run_dir: Its folder (inputs already saved there).
        meta: Its metadata (status ``"pending"``).
        stage: Last stage text for display.
        fraction: Last progress fraction.
        position: Place in the queue while waiting, else None.
    """

    job: Job
    run_dir: Path
    meta: runs.RunMeta
    stage: str = "queued"
    fraction: float = 0.0
    position: int | None = None
    submitted: float = field(default_factory=time.monotonic)

    def pump(self) -> None:
        """Read new events into the display fields and tell the runner we still watch."""
        self.job.touch()
        for event in self.job.poll_events():
            if isinstance(event, Queued):
                self.position = event.position
                self.stage = f"queued: position {event.position} ({event.ahead} ahead)"
            elif isinstance(event, Started):
                self.position, self.stage = None, "starting"
            elif isinstance(event, Progress):
                self.stage = event.stage + (f" ({event.detail})" if event.detail else "")
                if event.fraction is not None:
                    self.fraction = event.fraction

    @property
    def elapsed_s(self) -> float:
        return self.job.elapsed_s if self.job.started_at else time.monotonic() - self.submitted


@dataclass(frozen=True)
class Outcome:
    """How the last finished run ended, for the Reconstruct page to report once."""

    run_id: str
    ok: bool
    message: str = ""
    model_unavailable: bool = False
    error: BaseException | None = None


def state() -> MutableMapping[str, Any]:
    return st.session_state


def session_dir(settings: Settings) -> Path:
    """This browser session's folder, created on first use, found again after a reload."""
    ss = state()
    if SID not in ss:
        wanted = st.query_params.get("s")
        sid = None
        if wanted:
            try:
                if workspace.session_path(settings.workspace, wanted).is_dir():
                    sid = wanted
            except ValueError:
                sid = None  # not a session id: ignore it, never build a path from it
        ss[SID] = sid or workspace.new_session(settings.workspace).name
    if st.query_params.get("s") != ss[SID]:
        st.query_params["s"] = ss[SID]
    path = workspace.session_path(settings.workspace, ss[SID])
    path.mkdir(parents=True, exist_ok=True)  # re-created if clean-up removed an idle session
    return path


def list_runs(settings: Settings) -> list[runs.RunMeta]:
    """The session's runs, newest first."""
    return runs.list_session_runs(session_dir(settings))


def run_dir(settings: Settings, run_id: str) -> Path:
    return workspace.safe_join(session_dir(settings), run_id)


def set_active(run_id: str | None) -> None:
    state()[ACTIVE] = run_id


def active_run(settings: Settings) -> tuple[Path, runs.RunMeta, Reconstruction] | None:
    """The active finished run (the newest finished one if none was chosen), or None."""
    ss = state()
    metas = [m for m in list_runs(settings) if m.status == "done"]
    if not metas:
        return None
    by_id = {m.run_id: m for m in metas}
    run_id = ss.get(ACTIVE)
    if run_id not in by_id:
        run_id = metas[0].run_id
        ss[ACTIVE] = run_id
    meta = by_id[run_id]
    path = run_dir(settings, run_id)
    return path, meta, reconstruction(path, meta)


def reconstruction(path: Path, meta: runs.RunMeta) -> Reconstruction:
    """The run's result, from the session cache or from disk."""
    cache: dict[str, Reconstruction] = state().setdefault(RECS, {})
    if meta.run_id not in cache:
        cache[meta.run_id] = runs.load_result(path, meta)
        while len(cache) > _MAX_RECS:
            cache.pop(next(iter(cache)))
    return cache[meta.run_id]


def remember(run_id: str, rec: Reconstruction) -> None:
    cache: dict[str, Reconstruction] = state().setdefault(RECS, {})
    cache[run_id] = rec


def world_points(run_id: str, rec: Reconstruction, fov_deg: float) -> tuple[geometry.Cameras, geometry.WorldPoints]:
    """Cameras and per-pixel world points of a run, computed once per (run, field of view)."""
    cache: dict[tuple[str, float], tuple[geometry.Cameras, geometry.WorldPoints]] = state().setdefault(WORLD, {})
    key = (run_id, round(float(fov_deg), 3) if not rec.has_poses else 0.0)
    if key not in cache:
        cameras = geometry.resolve_cameras(rec, fov_deg=fov_deg)
        cache[key] = (cameras, geometry.unproject_all(rec, cameras))
        while len(cache) > _MAX_WORLD:
            cache.pop(next(iter(cache)))
    return cache[key]


def pending() -> PendingRun | None:
    return state().get(PENDING)


def collect_pending() -> bool:
    """Finish the run in progress if its job is done: save, activate, report. True if it ended."""
    ss = state()
    job_state: PendingRun | None = ss.get(PENDING)
    if job_state is None:
        return False
    job_state.pump()
    if not job_state.job.done():
        return False
    ss.pop(PENDING, None)
    try:
        rec = job_state.job.result(0)
    except GPUError as exc:
        message = exc.message if hasattr(exc, "message") else str(exc)
        kind = getattr(exc, "type_name", type(exc).__name__)
        runs.fail_run(job_state.run_dir, job_state.meta, f"{kind}: {message}")
        ss[OUTCOME] = Outcome(job_state.meta.run_id, False, f"{kind}: {message}", isinstance(exc, ModelUnavailableError), exc)
        return True
    runs.finish_run(job_state.run_dir, job_state.meta, rec)
    remember(job_state.meta.run_id, rec)
    set_active(job_state.meta.run_id)
    ss[OUTCOME] = Outcome(job_state.meta.run_id, True)
    return True
