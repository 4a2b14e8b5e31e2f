"""Per-browser-session state: its folder, its runs, the active run, the run it watches.

Everything a session produces is on disk (`da3_core.runs`); ``st.session_state`` only
caches it and remembers which run this browser watches. A run itself is owned by the
server's `da3_core.run_service.RunService`: it saves the outcome whether or not a page is
looking, and a reload finds a running job again. The session id rides in the URL
(``?s=<32 hex>``); its folder is created by the first run, not by a page visit. With
sign-in on (`da3_core.auth`) the id is the signed-in user's `identity_key` instead, the URL
plays no part, and the user finds the same runs from any browser.
Re-filtering and re-rendering read cached CPU arrays and never call the worker.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, MutableMapping

import streamlit as st

from da3_core import auth, geometry, runs, workspace
from da3_core.config import Settings
from da3_core.contract import Reconstruction
from da3_core.run_service import ActiveRun, RunOutcome, RunService

log = logging.getLogger(__name__)

SID = "sid"
ACTIVE = "active_run"
RECS = "recs"
WORLD = "world_cache"
WATCHING = "watching_run"
OUTCOME = "last_outcome"
RECONCILED = "reconciled"
PREFS_FILE = "prefs.json"
_MAX_RECS = 3
_MAX_WORLD = 2
# What this browser session caches about the runs of its folder: dropped when the folder changes.
_PER_FOLDER = (ACTIVE, RECS, WORLD, WATCHING, OUTCOME, RECONCILED)


@dataclass(frozen=True)
class Outcome:
    """How the last run this browser watched ended, for the Reconstruct page to report."""

    run_id: str
    outcome: RunOutcome

    @property
    def ok(self) -> bool:
        return self.outcome.ok


def state() -> MutableMapping[str, Any]:
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


def list_runs(settings: Settings) -> list[runs.RunMeta]:
    """The session's runs, newest first."""
    return runs.list_session_runs(session_dir(settings))


def run_dir(settings: Settings, run_id: str) -> Path:
    return workspace.safe_join(session_dir(settings), run_id)


def set_active(run_id: str | None) -> None:
    state()[ACTIVE] = run_id


def live_partial(settings: Settings) -> tuple[Path, runs.RunMeta] | None:
    """The chunked run this browser watches while it runs, once some frames are assembled
    (the pages then show the aligned frames so far), else None."""
    key = state().get(WATCHING)
    if not key:
        return None
    path = Path(key)
    if not runs.is_chunked(path):
        return None
    from da3_core.chunks import store

    if store.frames_ready(path) <= 0:
        return None
    try:
        meta = runs.read_meta(path)
    except (OSError, ValueError):
        return None
    return (path, meta) if meta.status == "pending" else None


def active_run(settings: Settings) -> tuple[Path, runs.RunMeta, Reconstruction] | None:
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


def reconstruction(path: Path, meta: runs.RunMeta) -> Reconstruction:
    """The run's result, from the session cache or from disk."""
    cache: dict[str, Reconstruction] = state().setdefault(RECS, {})
    key = meta.run_id
    if meta.status == "pending":  # a chunked run's frames so far: a new key as frames land
        from da3_core.chunks import store

        key = f"{meta.run_id}@{store.frames_ready(path)}"
    if key not in cache:
        cache[key] = runs.load_result(path, meta)
        while len(cache) > _MAX_RECS:
            cache.pop(next(iter(cache)))
    return cache[key]


def remember(run_id: str, rec: Reconstruction) -> None:
    cache: dict[str, Reconstruction] = state().setdefault(RECS, {})
    cache[run_id] = rec


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
    ss.pop(OUTCOME, None)


def collect(service: RunService, settings: Settings) -> ActiveRun | None:
    """Bring this session up to date with its runs; `da3_core.ui.page_setup` calls it first.

    * No run watched: a run of this session that the server still holds (e.g. started
      before a browser reload) is watched again; pending runs no job owns are marked
      failed once per browser session (`RunService.reconcile`).
    * The watched run finished: its outcome is kept for the Reconstruct page, and a
      finished result becomes the active run.

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
    ss[OUTCOME] = Outcome(active.run_id, active.outcome)
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
