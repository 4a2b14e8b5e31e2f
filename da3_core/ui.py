"""Streamlit building blocks shared by the pages (status of a run, banners, runner status).

Pages stay thin: they read widgets and call these. Nothing here imports torch.
"""

from __future__ import annotations

import time
from typing import Any

import streamlit as st

from da3_core.contract import GPUError, ModelUnavailableError, Reconstruction, ReconstructRequest, TaskCancelledError
from da3_core.gpu import Job, Progress, Queued, Runner, Started

_REFRESH_S = 0.25


def run_with_status(job: Job, label: str = "Reconstruction") -> Any:
    """Wait for ``job`` inside an ``st.status`` box showing queue place, stage, progress and time.

    If the script is stopped while waiting (the user pressed Cancel, changed a widget or
    closed the tab), Streamlit raises in this thread and the call is cancelled.

    Returns:
        The job's value.

    Raises:
        GPUError: The call failed (the box shows the error first).
    """
    box = st.status(f"{label}: queued", expanded=True)
    with box:
        line = st.empty()
        bar = st.progress(0.0)
    stage, fraction, place = "queued", 0.0, None
    t0 = time.monotonic()
    try:
        while True:
            for event in job.poll_events():
                if isinstance(event, Queued):
                    place = event.position
                    stage = f"queued (position {event.position}, {event.ahead} ahead)"
                elif isinstance(event, Started):
                    place, stage = None, "starting"
                elif isinstance(event, Progress):
                    stage = event.stage + (f": {event.detail}" if event.detail else "")
                    if event.fraction is not None:
                        fraction = event.fraction
            elapsed = job.elapsed_s if job.started_at else time.monotonic() - t0
            box.update(label=f"{label}: {stage} · {elapsed:.1f} s")
            line.markdown(f"**{stage}** · {'waited' if place else 'elapsed'} {elapsed:.1f} s")
            bar.progress(min(1.0, fraction))
            if job.done():
                break
            time.sleep(_REFRESH_S)
        value = job.result()
    except BaseException as exc:
        if not job.done():
            job.cancel()
        if isinstance(exc, GPUError):
            box.update(label=f"{label}: failed", state="error", expanded=True)
        raise
    box.update(label=f"{label}: done in {job.elapsed_s:.1f} s", state="complete", expanded=False)
    return value


def show_run_error(exc: BaseException) -> bool:
    """Show a failed run plainly; True when the cause is missing weights (offer demo weights)."""
    if isinstance(exc, ModelUnavailableError):
        st.error(str(getattr(exc, "message", exc)))
        return True
    if isinstance(exc, TaskCancelledError):
        st.warning(f"Cancelled: {exc}")
        return False
    message = getattr(exc, "message", None) or str(exc)
    kind = getattr(exc, "type_name", type(exc).__name__)
    st.error(f"{kind}: {message}")
    trace = getattr(exc, "remote_traceback", "")
    if trace:
        with st.expander("Worker traceback"):
            st.code(trace, language="text")
    return False


def untrained_banner(rec: Reconstruction | None) -> None:
    """The banner every page shows for results of untrained demo weights."""
    if rec is not None and rec.untrained:
        st.warning(
            f"**Untrained demo weights** ({rec.preset}): every feature works, but the depth and "
            "geometry are meaningless. Use trained weights (hub or local folder) for real results.",
            icon="⚠️",
        )


def runner_caption(runner: Runner, device_info: dict[str, Any] | None) -> str:
    """One line about the runner for page headers."""
    st_ = runner.status()
    device = (device_info or {}).get("device", "starting…")
    pid = f"pid {st_.worker_pid}" if st_.worker_pid else "no worker"
    return f"Worker: {st_.state} ({pid}) · device {device} · queue {st_.queue_length}"


def request_summary(req: ReconstructRequest) -> str:
    return f"{req.n_frames} frame(s) · {req.model.describe()} · process_res {req.process_res} · {req.process_res_method}"
