"""The shell every page shares: set-up (`page_setup`), the page links, the sidebar, the live run
and export status, and banners. The Reconstruct form is `da3_core.app.run_form`; values kept
across pages are `da3_core.app.view_state`. Pages stay thin: they read widgets and call these
and the pure modules. Nothing here imports torch.

A run does not block the page: it is submitted, and a fragment that re-runs twice a second
reads its progress, so the user can keep using the app (other pages, older runs) while it
runs. The fragment also tells the runner someone still watches; when the tab closes it
stops, and the runner cancels the run after ``DA3_ABANDON_AFTER_S``.
"""

from __future__ import annotations

import collections
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Imported here, whole, before any page draws a figure: Plotly reads pandas from sys.modules
# without the import lock, and a second browser session's first page could see it half
# imported ("partially initialized module 'pandas'", seen on a fresh server).
import pandas  # noqa: F401 - imported before any figure: a fresh server's first pages raced on importing it
import streamlit as st

from da3_core.app import auth, session
from da3_core.app.holder import RunnerHolder, get_holder, settings_or_stop
from da3_core.app.text import md
from da3_core.config import Settings
from da3_core.contract import Reconstruction
from da3_core.media.cameras import describe
from da3_core.runner import Runner
from da3_core.runs import records
from da3_core.runs.service import RunService

log = logging.getLogger(__name__)


# The app's pages: the menu `streamlit_app.py` builds with st.navigation (`pages`), and the
# links pages draw to each other (`link`). Key: (file, title, icon); the URL is the file's name
# without its number ("/Reconstruct"), Home is "/".
NAV: dict[str, tuple[str, str, str]] = {
    "home": ("pages/0_Home.py", "Home", "🛰️"),
    "reconstruct": ("pages/1_Reconstruct.py", "Reconstruct", "▶️"),
    "depth": ("pages/2_Depth_maps.py", "Depth maps", "🗺️"),
    "cloud": ("pages/3_Point_cloud.py", "Point cloud", "☁️"),
    "exports": ("pages/4_Exports.py", "Exports", "📦"),
    "runner": ("pages/5_Runner.py", "Runner", "⚙️"),
    "compare": ("pages/6_Compare.py", "Compare", "⚖️"),
}


def pages() -> list[Any]:
    """The app's pages for ``st.navigation``, in `NAV`'s order; Home is the default."""
    return [
        st.Page(path, title=title, icon=icon, default=key == "home", url_path=None if key == "home" else url_path(path))
        for key, (path, title, icon) in NAV.items()
    ]


def url_path(path: str) -> str:
    """A page's URL path: its file name without the number and the extension ("Depth_maps")."""
    return Path(path).stem.split("_", 1)[1]


def link(key: str, label: str | None = None) -> None:
    """A link to one of the app's pages (a key of `NAV`)."""
    path, title, icon = NAV[key]
    st.page_link(path, label=label or title, icon=icon)


@dataclass
class PageContext:
    """What every page needs."""

    settings: Settings
    holder: RunnerHolder
    runner: Runner
    session_dir: Path
    service: RunService
    user: dict[str, Any] | None = None  # the signed-in user's claims; None when sign-in is off

    @property
    def device(self) -> str | None:
        """The worker's device once it reported it (``cuda``, ``mps``, ``cpu``), else None."""
        info = self.holder.device_info()
        return info.get("device") if info else None

    @property
    def worker_info(self) -> dict[str, Any]:
        return self.holder.device_info() or {}


def page_setup(title: str, icon: str = "🛰️", status_in_main: bool = False) -> PageContext:
    """Page config, settings (stops on a bad variable), the runner, the session, the sidebar.

    Args:
        title: Page title.
        icon: Page icon.
        status_in_main: The page draws the live run status in its main area
            (`pending_status`); the sidebar then leaves it out, so one fragment per page
            polls the run (two polling fragments raced: one's app rerun was lost).
    """
    st.set_page_config(page_title=f"{title} · DA3 dashboard", page_icon=icon, layout="wide")
    # Before anything touches the session or starts a worker: with sign-in on, a visitor
    # who is not signed in gets the sign-in page and the script stops here.
    user = auth.require_sign_in()
    settings = settings_or_stop()
    holder = get_holder()
    assert holder.runs is not None
    ctx = PageContext(settings, holder, holder.runner, session.session_dir(settings), holder.runs, user)
    # First: re-attach to a run started before a reload, and take in a run that ended.
    st.session_state.pop(_RERUN_ASKED, None)  # this is the full run a status fragment asked for
    session.collect(ctx.service, settings)
    if holder.janitor is not None:
        holder.janitor.maybe_clean(keep=(ctx.session_dir,))
    sidebar(ctx, status=not status_in_main)
    return ctx


def sidebar(ctx: PageContext, status: bool = True) -> None:
    with st.sidebar:
        auth.sidebar_account(ctx.user)
        st.caption(runner_caption(ctx))
        if status:
            pending_status(ctx, compact=True)
        metas = [m for m in session.list_runs(ctx.settings) if m.status == "done"]
        if metas:
            ids = [m.run_id for m in metas]
            counts = collections.Counter(m.label() for m in metas)
            # Two runs in the same second with the same shape read alike: tell them apart.
            labels = {m.run_id: m.label() + (f" · {m.run_id[-6:]}" if counts[m.label()] > 1 else "") for m in metas}
            active = st.session_state.get(session.ACTIVE)
            if active not in ids:
                active = ids[0]
                session.set_active(active)
            # The widget's key names the run it starts on, and its value is read, not
            # reported through on_change: the browser re-sends stale values of such a picker
            # (seen in the server log: its callback fired with run 1 right after run 2 and
            # run 3 finished, and the pages then showed an older run than the sidebar named).
            # A value that differs from the run the widget started on is a real pick.
            chosen = st.selectbox(
                "Run",
                ids,
                index=ids.index(active),
                format_func=lambda rid: labels[rid],
                key=f"sb_run_{active}_{len(ids)}",
                help="Your runs (kept on disk under your account, on any device)."
                if ctx.user is not None
                else "Your runs in this session (kept on disk; the URL brings them back after a reload).",
            )
            if chosen != active:
                session.set_active(chosen)
                st.rerun()


def runner_caption(ctx: PageContext) -> str:
    """One line about the worker for the sidebar."""
    status = ctx.runner.status()
    device = ctx.device or "starting…"
    return f"Worker {status.state} · device {device} · queue {status.queue_length}"


def pending_status(ctx: PageContext, compact: bool = False) -> None:
    """Live status of this session's run in progress (queue place, stage, progress, time, cancel).

    It re-runs itself twice a second only while a run is pending: an idle tab costs the
    server nothing (three idle tabs polling took two thirds of a core here).
    """
    every = 0.5 if session.watching(ctx.service) is not None else None
    # The container gives the fragment a slot of its own in the page: a timer rerun that
    # arrives after the run ended then cannot clear what the page drew next (the Done banner).
    with st.container():
        st.fragment(run_every=every)(_pending_status_body)(ctx, compact)


_RERUN_ASKED = "status_rerun_asked"


def _pending_status_body(ctx: PageContext, compact: bool) -> None:
    box = st.container()
    if st.session_state.get(_RERUN_ASKED):
        st.rerun(scope="app")  # asked before and no full run came yet: ask again (page_setup clears it)
    if session.watching(ctx.service) is None:
        return
    active = session.collect(ctx.service, ctx.settings)
    if active is None:  # it ended since the last look: redraw the whole page with the outcome
        _ask_app_rerun()
        return
    view = session.view_of(ctx.service, active.run_dir)
    if view is None or not view.pending:
        _ask_app_rerun()
        return
    if compact:
        box.caption(view.line)
        box.progress(min(1.0, view.fraction))
        return
    with box.container(border=True):
        st.markdown(f"**{md(view.line)}**")
        st.progress(min(1.0, view.fraction))
        if view.cancel_requested:
            st.caption("Cancelling…")
        elif st.button("Cancel run", key="rc_cancel", help="Stops the run; its inputs stay in the run folder."):
            ctx.service.cancel(view.run_dir)
            st.caption("Cancelling…")


def _ask_app_rerun() -> None:
    """From a status fragment: redraw the whole page (a job ended). Asked again by the next
    fragment run until the full run comes (`page_setup` clears the flag): one was lost when
    two polling fragments raced."""
    st.session_state[_RERUN_ASKED] = True
    st.rerun(scope="app")


def export_status(ctx: PageContext, run_dir: Path, kind: str) -> Any:
    """The live status of an export job of the run in ``run_dir`` (queue place, stage,
    progress, its estimate, Cancel), drawn by a fragment that re-runs twice a second only
    while the job is queued or running; when it ends the whole page is redrawn, and the page
    draws the end (message, download) from the returned status.

    The job is the run service's (`RunService.submit_export`), found again by run folder
    and kind: a reload, or another page and back, shows the same job.

    Returns:
        The job's `da3_core.runs.exports.ExportStatus` as this page run began, or None when
        this run was never exported to ``kind``.
    """
    status = ctx.service.export_status(run_dir, kind)
    every = 0.5 if status is not None and status.pending else None
    with st.container():
        st.fragment(run_every=every)(_export_status_body)(ctx, run_dir, kind, every is not None)
    return status


def _export_status_body(ctx: PageContext, run_dir: Path, kind: str, polling: bool) -> None:
    if st.session_state.get(_RERUN_ASKED):
        st.rerun(scope="app")
    status = ctx.service.export_status(run_dir, kind)
    if status is None or not status.pending:
        if polling:  # it ended since the page was drawn: redraw it with the end and the download
            _ask_app_rerun()
        return
    with st.container(border=True):
        st.markdown(f"**{md(status.line)}**")
        st.progress(min(1.0, status.fraction))
        if status.estimate:
            st.caption(md(status.estimate))
        if status.cancel_requested:
            st.caption("Cancelling…")
        elif st.button(
            "Cancel", key=f"ex_{kind}_cancel", help="Stops it; nothing half-written is kept, an earlier file stays."
        ):
            ctx.service.cancel_export(run_dir, kind)
            st.caption("Cancelling…")


"""The process_res the page takes: one patch up to 2016 (beyond, one frame alone outgrows any memory here)."""


def untrained_banner(rec: Reconstruction | None) -> None:
    """The banner every page shows for results of untrained demo weights."""
    if rec is not None and rec.untrained:
        st.warning(
            f"**Untrained demo weights** ({rec.preset}): every feature works, but the depth and "
            "geometry are meaningless. Use trained weights (hub or local folder) for real results.",
            icon="⚠️",
        )


def require_active_run(ctx: PageContext) -> tuple[Path, records.RunMeta, Reconstruction]:
    """The active run (named under the title's place), or a pointer to the Reconstruct page and a stop."""
    found = session.active_run(ctx.settings)
    if found is None:
        waiting = session.watched_chunked_run(ctx.settings)
        if waiting is not None:  # a chunked run whose first chunk is not aligned yet
            st.info(
                f"Run {waiting} is running in chunks: its frames show here once the first chunk is aligned.", icon="🧩"
            )
            _follow_partial(ctx, waiting, 0)
            st.stop()
        st.info("No reconstruction yet in this session.")
        link("reconstruct", "Reconstruct: upload photos, a video or pick an example")
        st.stop()
        raise SystemExit  # unreachable: st.stop raises
    meta, rec = found[1], found[2]
    if meta.status == "pending":  # a chunked run's aligned frames so far
        st.info(
            f"Run {meta.run_id} is still running: {rec.n_views} of {len(meta.names)} frames are aligned so far. "
            "This page follows as more chunks land.",
            icon="🧩",
        )
        _follow_partial(ctx, meta.run_id, rec.n_views)
    else:
        st.caption(
            f"Run {md(meta.label())} · `{meta.run_id}` · cameras: {describe(rec.params, rec.has_poses)} "
            "(pick another in the sidebar)"
        )
    untrained_banner(rec)
    return found


def _follow_partial(ctx: PageContext, run_id: str, shown: int) -> None:
    """Rerun the page when more frames of the watched chunked run are ready, or it ended."""

    def check() -> None:
        from da3_core.chunks import store

        pending = session.watched_chunked_run(ctx.settings)
        now = store.frames_ready(session.run_dir(ctx.settings, pending)) if pending == run_id else -1  # -1: it ended
        if now != shown:
            st.rerun(scope="app")

    with st.container():
        st.fragment(run_every=2.0)(check)()


def show_error(message: str, trace: str = "") -> None:
    """An error box (``message`` is shown literally, never as Markdown) and the worker's
    traceback in an expander. The error is also logged."""
    log.debug("shown to the user: %s%s", message, f"\n{trace}" if trace else "")  # logged where it happened
    st.error(md(message))
    if trace:
        with st.expander("Worker traceback"):
            st.code(trace, language="text")
