"""Per-browser-session state: its folder, its runs, the active run, the run it watches.

Everything a session produces is on disk (`da3_core.runs.records`); ``st.session_state`` only
caches it and remembers which run this browser watches. A run itself is owned by the
server's `da3_core.runs.service.RunService`: it saves the outcome whether or not a page is
looking, and a reload finds a running job again. The session id rides in the URL
(``?s=<32 hex>``); its folder is created by the first run, not by a page visit. With
sign-in on (`da3_core.app.auth`) the id is the signed-in user's `identity_key` instead, the URL
plays no part, and the user finds the same runs from any browser.
Re-filtering and re-rendering read cached CPU arrays and never call the worker.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import MutableMapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import streamlit as st

from da3_core.app import auth
from da3_core.config import Settings
from da3_core.contract import Reconstruction
from da3_core.runs import records, workspace
from da3_core.runs.jobs import QUEUE_WAIT_S, WALL_S, took_text
from da3_core.runs.service import ActiveRun, RunService
from da3_core.scene import geometry

log = logging.getLogger(__name__)

SID = "sid"
ACTIVE = "active_run"
RECS = "recs"
WORLD = "world_cache"
WATCHING = "watching_run"
LAST = "last_run"  # the run folder of the run this browser watched to its end (its banner)
RECONCILED = "reconciled"
PREFS_FILE = "prefs.json"
_MAX_RECS = 3
_MAX_WORLD = 2
# What this browser session caches about the runs of its folder: dropped when the folder changes.
_PER_FOLDER = (ACTIVE, RECS, WORLD, WATCHING, LAST, RECONCILED)


@dataclass(frozen=True)
class RunView:
    """A browser's view of its run: the one object the pages read for a run's state.

    Made by `view_of` from the server's run while the run service holds it (queued, running,
    or ended recently: its outcome, traceback and exact times), else from the run folder's
    ``run.json``. ``st.session_state`` keeps only which run folder this browser watches
    (`WATCHING`) or watched to its end (`LAST`), never a copy of the outcome.

    Attributes:
        run_id / run_dir: The run.
        status: ``"queued"``, ``"running"``, ``"done"``, ``"failed"``, ``"cancelled"``, or
            ``"pending"`` (run.json says pending and this server does not run it).
        message: Why it did not finish ("" when done).
        model_unavailable: Its weights could not be found (the page offers demo weights).
        traceback: The worker-side traceback, while the server holds the run.
        line / fraction / cancel_requested: The live status line, progress in [0, 1], and
            whether cancel was asked, while it runs.
        n_views / preset / device / params: From run.json (the result's, once done).
        total_s / waiting_s: Seconds from submission to the end (or now), and of those in
            the queue (None when not known: runs saved before this was recorded).
        chunked: The chunked run's figures (``params["chunked"]``: chunks, chunk, overlap,
            alignment, loops_closed), {} for a one-call run.
        resumable: A chunked run's folder (Resume continues it after a stop).
        retry_of / retry_frames: The run this one re-ran with demo weights, and whether it
            got the exact frames or the saved copies ("" when not a re-run).
    """

    run_id: str
    run_dir: Path
    status: str
    message: str = ""
    model_unavailable: bool = False
    traceback: str = ""
    line: str = ""
    fraction: float = 0.0
    cancel_requested: bool = False
    n_views: int = 0
    preset: str = ""
    device: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    total_s: float | None = None
    waiting_s: float | None = None
    chunked: dict[str, Any] = field(default_factory=dict)
    resumable: bool = False
    retry_of: str = ""
    retry_frames: str = ""

    @property
    def pending(self) -> bool:
        """Queued or running on this server."""
        return self.status in ("queued", "running")

    @property
    def finished(self) -> bool:
        return self.status in ("done", "failed", "cancelled")

    @property
    def ok(self) -> bool:
        return self.status == "done"

    def took(self) -> str:
        """``6.1 s (4.0 s running, 2.1 s waiting)``: submission to end, split between the
        worker and the queue, as the server's log says it (``6.1 s`` when the split is unknown)."""
        return took_text(self.total_s, self.waiting_s)

    def chunk_text(self) -> str:
        """``, 3 chunks of 8 (overlap 3), alignment sim3, 1 loop(s) closed`` ("" for a one-call run)."""
        c = self.chunked
        if not c:
            return ""
        return (
            f", {c.get('chunks')} chunks of {c.get('chunk')} (overlap {c.get('overlap')}), alignment "
            f"{c.get('alignment') or 'none'}, {c.get('loops_closed', 0)} loop(s) closed"
        )


def view_of(service: RunService, run_dir: Path) -> RunView | None:
    """The `RunView` of the run in ``run_dir``: from the server's run while it holds it,
    else from the run folder; None when neither knows it."""
    run_dir = Path(run_dir)
    run = service.get(run_dir)
    try:
        meta: records.RunMeta | None = records.read_meta(run_dir)
    except (OSError, ValueError, TypeError):
        meta = None
    if meta is None:
        if run is None:
            return None
        meta = run.meta
    assert meta is not None
    common = RunView(
        run_id=meta.run_id,
        run_dir=run_dir,
        status=meta.status,
        n_views=len(meta.names),
        preset=meta.preset,
        device=meta.device,
        params=dict(meta.params),
        chunked=dict(meta.params.get("chunked") or {}),
        resumable=records.is_chunked(run_dir),
        retry_of=str(meta.params.get("retry_of") or ""),
        retry_frames=str(meta.params.get("retry_frames") or ""),
    )
    if run is not None:
        now = time.monotonic()
        started = run.started_at
        # A one-call run's job end (its outcome is saved a moment later); a chunked run's end.
        ended = (getattr(run, "ended_at", None) or run.finished_at) if run.finished else None
        end = ended if ended is not None else now
        waiting = (started if started is not None else end) - run.submitted_at
        if run.chunked and started is None and run.finished:
            waiting = None  # nobody looked while it ran: when its first chunk started is not known
        total_s = end - run.submitted_at
        outcome = run.outcome
        if outcome is None:  # not finished
            status = "queued" if started is None else "running"
            return replace(
                common,
                status=status,
                line=run.status_line(),
                fraction=float(run.fraction),
                cancel_requested=bool(run.cancel_requested),
                total_s=total_s,
                waiting_s=waiting,
            )
        return replace(
            common,
            status=outcome.status,
            message=outcome.message,
            model_unavailable=outcome.model_unavailable,
            traceback=outcome.traceback,
            fraction=1.0 if outcome.ok else float(run.fraction),
            total_s=total_s,
            waiting_s=waiting,
        )
    t = meta.timings
    total = t.get(WALL_S, t.get("total"))
    return replace(
        common,
        message=meta.error,
        model_unavailable=meta.error.startswith("ModelUnavailableError"),
        fraction=1.0 if meta.status == "done" else 0.0,
        total_s=None if total is None else float(total),
        waiting_s=t.get(QUEUE_WAIT_S),
    )


def run_view(service: RunService) -> RunView | None:
    """This browser's run: the one it watches, else the last one it watched to its end; None
    when it watched none (or the run is gone)."""
    ss = state()
    key = ss.get(WATCHING) or ss.get(LAST)
    return view_of(service, Path(key)) if key else None


def state() -> MutableMapping[str | int, Any]:  # Streamlit's keys: str or int
    return st.session_state


def session_dir(settings: Settings) -> Path:
    """This browser session's folder (not created here: the first run creates it).

    With sign-in on, the signed-in user's folder, ``sessions/<identity_key>``: the same
    from every browser, whatever the URL says (``?s=`` is ignored and taken out of the
    address). Nobody signed in: the sign-in page, and the script stops.

    Without sign-in, the id comes from the URL when it is a well-formed session id, so a
    reload finds the same runs; otherwise a new random id is made. A page visit writes
    nothing to disk, so crawlers and bad links leave no folders behind.
    """
    ss = state()
    if auth.auth_configured():
        user = auth.signed_in_user()
        if user is None:
            auth.require_sign_in()  # draws the sign-in page (or the set-up error) and stops
            raise RuntimeError("no signed-in user")  # unreachable: it stops
        key = auth.identity_key(user)
        if ss.get(SID) != key:  # first look, or another account in this browser session
            for name in _PER_FOLDER:
                ss.pop(name, None)
            ss[SID] = key
        if "s" in st.query_params:
            del st.query_params["s"]
        return workspace.session_path(settings.workspace, key)
    if SID not in ss:
        wanted = st.query_params.get("s")
        sid = None
        if wanted:
            try:
                workspace.session_path(settings.workspace, wanted)
                sid = wanted
            except ValueError:
                sid = None  # not a session id: ignore it, never build a path from it
        ss[SID] = sid or workspace.new_session_id()
    if st.query_params.get("s") != ss[SID]:
        st.query_params["s"] = ss[SID]
    return workspace.session_path(settings.workspace, ss[SID])


def list_runs(settings: Settings) -> list[records.RunMeta]:
    """The session's runs, newest first."""
    return records.list_session_runs(session_dir(settings))


def run_dir(settings: Settings, run_id: str) -> Path:
    return workspace.safe_join(session_dir(settings), run_id)


def set_active(run_id: str | None) -> None:
    state()[ACTIVE] = run_id


def live_partial(settings: Settings) -> tuple[Path, records.RunMeta] | None:
    """The chunked run this browser watches while it runs, once some frames are assembled
    (the pages then show the aligned frames so far), else None."""
    key = state().get(WATCHING)
    if not key:
        return None
    path = Path(key)
    if not records.is_chunked(path):
        return None
    from da3_core.chunks import store

    if store.frames_ready(path) <= 0:
        return None
    try:
        meta = records.read_meta(path)
    except (OSError, ValueError):
        return None
    return (path, meta) if meta.status == "pending" else None


def watched_chunked_run(settings: Settings) -> str | None:
    """The id of the chunked run this browser watches while it is pending, else None."""
    key = state().get(WATCHING)
    if not key or not records.is_chunked(Path(key)):
        return None
    try:
        meta = records.read_meta(Path(key))
    except (OSError, ValueError):
        return None
    return meta.run_id if meta.status == "pending" else None


def active_run(settings: Settings) -> tuple[Path, records.RunMeta, Reconstruction] | None:
    """The run the pages show: the watched chunked run while it runs (its frames so far),
    else the active finished run (the newest finished one if none was chosen), or None."""
    partial = live_partial(settings)
    if partial is not None:
        try:
            return partial[0], partial[1], reconstruction(*partial)
        except (OSError, ValueError):
            log.debug("the partial result of run %s could not be read", partial[1].run_id, exc_info=True)
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


def reconstruction(path: Path, meta: records.RunMeta) -> Reconstruction:
    """The run's result, from the session cache or from disk."""
    cache: dict[str, Reconstruction] = state().setdefault(RECS, {})
    key = meta.run_id
    if meta.status == "pending":  # a chunked run's frames so far: a new key as frames land
        from da3_core.chunks import store

        key = f"{meta.run_id}@{store.frames_ready(path)}"
    if key not in cache:
        cache[key] = records.load_result(path, meta)
        while len(cache) > _MAX_RECS:
            cache.pop(next(iter(cache)))
    return cache[key]


def remember(run_id: str, rec: Reconstruction) -> None:
    """Cache a result just collected; the oldest beyond `_MAX_RECS` are let go (every finished
    run used to stay here for the life of the browser session: the server grew by each
    run's arrays)."""
    cache: dict[str, Reconstruction] = state().setdefault(RECS, {})
    cache.pop(run_id, None)  # newest last
    cache[run_id] = rec
    while len(cache) > _MAX_RECS:
        cache.pop(next(iter(cache)))


def world_points(run_id: str, rec: Reconstruction, fov_deg: float) -> tuple[geometry.Cameras, geometry.WorldPoints]:
    """Cameras and per-pixel world points of a run, computed once per (run, field of view)."""
    cache: dict[tuple[str, int, float], tuple[geometry.Cameras, geometry.WorldPoints]] = state().setdefault(WORLD, {})
    key = (run_id, rec.n_views, round(float(fov_deg), 3) if not rec.has_poses else 0.0)
    if key not in cache:
        # A long run has more pixels than a figure can use: every s-th pixel (bounded memory).
        rec = geometry.strided(rec, geometry.pixel_stride(rec))
        cameras = geometry.resolve_cameras(rec, fov_deg=fov_deg)
        cache[key] = (cameras, geometry.unproject_all(rec, cameras))
        while len(cache) > _MAX_WORLD:
            cache.pop(next(iter(cache)))
    return cache[key]


def watching(service: RunService) -> ActiveRun | None:
    """The run this browser session watches (queued, running or just finished), or None."""
    key = state().get(WATCHING)
    return service.get(Path(key)) if key else None


def watch(active: ActiveRun) -> None:
    """Watch ``active`` from now on (it was just submitted, or found again after a reload)."""
    ss = state()
    ss[WATCHING] = str(active.run_dir)
    ss.pop(LAST, None)


def collect(service: RunService, settings: Settings) -> ActiveRun | None:
    """Bring this session up to date with its runs; `da3_core.app.ui.page_setup` calls it first.

    * No run watched: a run of this session that the server still holds (e.g. started
      before a browser reload) is watched again; pending runs no job owns are marked
      failed once per browser session (`RunService.reconcile`).
    * The watched run finished: it becomes the run whose outcome the Reconstruct page
      shows (`LAST`, read through `run_view`), and a finished result becomes the active run.

    Returns:
        The run still in progress, or None.
    """
    ss = state()
    folder = session_dir(settings)
    active = watching(service)
    if active is None:
        ss.pop(WATCHING, None)
        live = service.live_for_session(folder)
        if live:
            active = live[-1]
            watch(active)
            log.debug("session %s re-attached to run %s", folder.name, active.run_id)
        else:
            if not ss.get(RECONCILED):
                ss[RECONCILED] = True
                service.reconcile(folder)
            return None
    active.pump()
    if not active.finished:
        return active
    ss.pop(WATCHING, None)
    assert active.outcome is not None
    ss[LAST] = str(active.run_dir)
    if active.outcome.ok:
        if active.result is not None:
            remember(active.run_id, active.result)
        set_active(active.run_id)
    service.mark_collected(active)
    return None


# --------------------------------------------------------------------------------------
# Preferences that outlive a reload (the model choice)
# --------------------------------------------------------------------------------------


def load_prefs(settings: Settings) -> dict[str, Any]:
    """This session's saved preferences ({} when none or unreadable)."""
    path = session_dir(settings) / PREFS_FILE
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def save_prefs(settings: Settings, prefs: dict[str, Any]) -> None:
    """Save preferences (plain JSON values) in the session folder, creating it if needed."""
    folder = session_dir(settings)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / (PREFS_FILE + ".tmp")
        tmp.write_text(json.dumps(prefs))
        tmp.replace(folder / PREFS_FILE)
    except OSError:
        log.exception("could not save the preferences of session %s", folder.name)
