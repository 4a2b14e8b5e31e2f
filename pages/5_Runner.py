"""Runner: the worker process, its device, model, memory, queue and recent errors; restart it."""

from __future__ import annotations

import time

import streamlit as st

from da3_core import ui
from da3_core.text import md

ctx = ui.page_setup("Runner", "⚙️")
st.title("Runner")
st.caption("One isolated worker process per server runs Depth Anything 3; this server process never imports torch. "
           "Every call has a time budget, crashes are reported and the next call gets a fresh worker.")


@st.fragment(run_every=2.0)
def live() -> None:
    status = ctx.runner.status()
    info = ctx.worker_info
    state = status.worker_state
    c = st.columns(5)
    c[0].metric("State", status.state)
    c[1].metric("Worker pid", status.worker_pid or "—")
    c[2].metric("Device", info.get("device", "…"))
    c[3].metric("Worker memory", f"{status.worker_rss_mb:,.0f} MB" if status.worker_rss_mb else "—")
    c[4].metric("Queue", status.queue_length)
    if status.current_task:
        st.info(f"Running `{status.current_task}` for {status.current_elapsed_s:.1f} s · stage: {status.current_stage or 'starting'}")
    models = state.get("models_loaded") or info.get("models_loaded") or []
    st.markdown(
        f"- Isolation: **{status.isolation}**\n"
        f"- Models loaded in the worker: {', '.join(f'`{m}`' for m in models) if models else 'none yet'}"
        f" (loaded {state.get('model_loads', info.get('model_loads', 0))} time(s) in this worker)\n"
        f"- torch {state.get('torch_version', info.get('torch_version', '…'))}, CUDA available: {state.get('cuda_available', info.get('cuda_available', '…'))}"
        + (f" ({state['cuda_device']}, {state.get('cuda_memory_allocated_mb', 0):,.0f} MB allocated)" if state.get("cuda_device") else "")
        + f"\n- Peak worker memory: {state.get('peak_rss_mb', 0):,.0f} MB\n"
        f"- Workers started: {status.worker_starts} · calls ok: {status.calls_ok} · failed: {status.calls_failed}"
    )
    if status.recent_errors:
        st.markdown("**Recent errors**")
        st.dataframe(
            [{"time": time.strftime("%H:%M:%S", time.localtime(e.when)), "task": e.task, "kind": e.kind, "message": e.message[:300]}
             for e in reversed(status.recent_errors)],
            width="stretch",
            hide_index=True,
        )


live()
problems = list(ctx.holder.janitor.problems) if ctx.holder.janitor is not None else []
if problems:
    st.markdown("**Workspace clean-up problems** (also in the server log)")
    for problem in reversed(problems):
        st.caption(md(problem))
st.divider()
confirm = st.checkbox("I understand a restart stops the run in progress (its inputs stay on disk)", key="rn_confirm")
if st.button("Restart the worker", key="rn_restart", disabled=not confirm):
    ctx.runner.restart()
    ctx.holder.refresh_probe()
    st.success("The worker was stopped; a fresh one is starting.")
