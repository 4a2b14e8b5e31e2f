"""Home: what the dashboard does, the runner and model status, how to start, this session's runs."""

from __future__ import annotations

import streamlit as st

from da3_core import presets
from da3_core.app import session, ui
from da3_core.contract import ModelSpec

ctx = ui.page_setup("Home", "🛰️", status_in_main=True)
st.title("Depth Anything 3 dashboard")
st.markdown(
    "Upload photos or a video, run **Depth Anything 3** in an isolated worker process, and explore "
    "depth maps, camera poses and a 3D point cloud, with downloads in the formats your tools read "
    "(GLB, PLY, NPZ, 16-bit PNG, COLMAP)."
)

status = ctx.runner.status()
info = ctx.worker_info
default = ModelSpec.from_setting(ctx.settings.model, ctx.settings.model_dir, ctx.device)
c = st.columns(4)
c[0].metric("Worker", status.state, help="A separate process that alone imports torch; it is replaced if it crashes.")
c[1].metric("Device", info.get("device", "starting…"))
c[2].metric(
    "Default model",
    (
        presets.preset_for(default.ref).label
        if default.kind == "hub" and presets.preset_for(default.ref)
        else default.describe()
    ),
)
loaded = status.worker_state.get("models_loaded") or info.get("models_loaded") or []
c[3].metric(
    "Loaded in the worker",
    loaded[0].split(" on ")[0].split(":", 1)[-1] if loaded else "none yet",
    help=f"In the worker's cache: {', '.join(loaded)}" if loaded else "The model loads on the first run.",
)
if "error" in info:
    st.error(f"The worker did not answer: {info['error']}")

st.subheader("How to start")
st.markdown(
    "1. **Reconstruct**: upload photos (or a video), or pick a bundled example; choose the weights; run.\n"
    "2. **Depth maps**: step through the views; click two points to measure.\n"
    "3. **Point cloud**: filter by confidence, background and sky, show cameras; open the full-density viewer.\n"
    "4. **Exports**: download GLB, PLY, NPZ, depth PNGs or a COLMAP model; everything is also in the run folder.\n\n"
    "No internet? Choose *Untrained demo weights* (meaningless geometry, every feature works), or point "
    "`DA3_MODEL_DIR` at a downloaded checkpoint."
)
cols = st.columns(5)
for col, key in zip(cols, ("reconstruct", "depth", "cloud", "exports", "runner")):
    with col:
        ui.link(key)

ui.pending_status(ctx)
metas = session.list_runs(ctx.settings)
if metas:
    st.subheader("Your runs" if ctx.user is not None else "Runs in this session")
    st.dataframe(
        [
            {
                "run": m.run_id,
                "frames": len(m.names),
                "model": m.preset or m.model_ref,
                "untrained": m.model_kind == "demo",
                "status": m.status,
                "seconds": round(m.timings.get("total", 0.0), 1),
                "error": m.error[:120],
            }
            for m in metas
        ],
        width="stretch",
        hide_index=True,
    )
    st.caption(
        "Pick the run to explore in the sidebar. "
        + (
            "They are kept under your account: sign in from any device and they are here."
            if ctx.user is not None
            else "The page address keeps this session: reload it and your runs are still here. Anyone with the address sees them."
        )
    )
