"""Runner: the workers (one per GPU, or Ray actors), their devices, models, memory, the queue,
recent errors and the notices their libraries printed; restart them."""

from __future__ import annotations

import time

import streamlit as st

from da3_core.app import auth, ui
from da3_core.app.notices_view import show_notices
from da3_core.app.text import md

ctx = ui.page_setup("Runner", "⚙️")
auth.require_admin(ctx.settings)  # with sign-in on: DA3_ADMINS only; without: open, as before
st.title("Runner")
st.caption(
    "Isolated workers run Depth Anything 3 (one process per GPU, or Ray actors on a cluster); this server "
    "process never imports torch. Calls wait in one queue, first come first served; every call has a time budget, "
    "and a crash, timeout or cancel touches only its own call: that worker is replaced on its next call."
)


def worker_rows(workers) -> list[dict[str, object]]:
    """One row per worker for the table."""
    rows = []
    for w in workers:
        report = w.state_report
        rows.append(
            {
                "worker": w.label,
                "device": w.device,
                "state": w.state,
                "pid": w.pid or "—",
                "memory MB": round(w.rss_mb) if w.rss_mb else None,
                "running": f"{w.current_task} · {w.current_stage or 'starting'} · {w.current_elapsed_s:.1f} s"
                if w.current_task
                else "",
                "models": ", ".join(report.get("models_loaded") or []),
                "starts": w.starts,
                "ok": w.calls_ok,
                "failed": w.calls_failed,
            }
        )
    return rows


@st.fragment(run_every=2.0)
def live() -> None:
    status = ctx.runner.status()
    info = ctx.worker_info
    state = status.worker_state
    c = st.columns(5)
    c[0].metric("State", status.state)
    busy = sum(w.state == "busy" for w in status.workers)
    c[1].metric("Workers busy", f"{busy} of {len(status.workers)}")
    c[2].metric("Device", info.get("device", "…"))
    memory = [w.rss_mb for w in status.workers if w.rss_mb]
    c[3].metric("Worker memory", f"{sum(memory):,.0f} MB" if memory else "—")
    c[4].metric("Queue", status.queue_length)
    st.dataframe(worker_rows(status.workers), width="stretch", hide_index=True, key="rn_workers")
    models = state.get("models_loaded") or info.get("models_loaded") or []
    st.markdown(
        f"- Isolation: **{status.isolation}**, {len(status.workers)} worker(s) (the lines below describe the first)\n"
        f"- Models loaded in the worker: {', '.join(f'`{m}`' for m in models) if models else 'none yet'}"
        f" (loaded {state.get('model_loads', info.get('model_loads', 0))} time(s) in this worker)\n"
        f"- torch {state.get('torch_version', info.get('torch_version', '…'))}, CUDA available: {state.get('cuda_available', info.get('cuda_available', '…'))}"
        + (
            f" ({state['cuda_device']}, {state.get('cuda_memory_allocated_mb', 0):,.0f} MB allocated)"
            if state.get("cuda_device")
            else ""
        )
        + (
            f"\n- CPU precision: **{state['cpu_precision_auto']}** ({state.get('cpu_precision_reason', '')})"
            if state.get("cpu_precision_auto") and info.get("device", "cpu") == "cpu"
            else ""
        )
        + f"\n- Peak worker memory: {state.get('peak_rss_mb', 0):,.0f} MB\n"
        f"- Workers started: {status.worker_starts} · calls ok: {status.calls_ok} · failed: {status.calls_failed}"
    )
    if status.recent_errors:
        st.markdown("**Recent errors**")
        st.dataframe(
            [
                {
                    "time": time.strftime("%H:%M:%S", time.localtime(e.when)),
                    "worker": e.worker,
                    "task": e.task,
                    "kind": e.kind,
                    "message": e.message[:300],
                }
                for e in reversed(status.recent_errors)
            ],
            width="stretch",
            hide_index=True,
        )
    show_notices(status.workers)


live()
problems = list(ctx.holder.janitor.problems) if ctx.holder.janitor is not None else []
if problems:
    st.markdown("**Workspace clean-up problems** (also in the server log)")
    for problem in reversed(problems):
        st.caption(md(problem))
st.divider()
confirm = st.checkbox("I understand a restart stops the runs in progress (their inputs stay on disk)", key="rn_confirm")
if st.button("Restart the workers", key="rn_restart", disabled=not confirm):
    ctx.runner.restart()
    ctx.holder.refresh_probe()
    st.success("The workers were stopped; fresh ones are starting.")
