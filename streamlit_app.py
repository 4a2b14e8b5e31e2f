"""Home: what the dashboard does, runner and model status, and a quick two-image run."""

from __future__ import annotations

import io

import numpy as np
import streamlit as st
from PIL import Image

from da3_core import tasks
from da3_core.contract import ModelSpec, ReconstructRequest
from da3_core.holder import get_holder, settings_or_stop
from da3_core.presets import model_from_setting
from da3_core.ui import run_with_status, runner_caption, show_run_error, untrained_banner

st.set_page_config(page_title="Depth Anything 3 dashboard", page_icon="🛰️", layout="wide")
settings = settings_or_stop()
holder = get_holder()
runner = holder.runner
info = holder.device_info()

st.title("Depth Anything 3 dashboard")
st.caption(runner_caption(runner, info))
st.markdown(
    "Upload photos or a video, run Depth Anything 3 in an isolated worker process, and explore "
    "depth maps, camera poses and a 3D point cloud."
)

device = (info or {}).get("device")
default = model_from_setting(settings.model, settings.model_dir, device)
use_demo = st.toggle("Use untrained demo weights (works offline; geometry is meaningless)", key="home_demo")
model = ModelSpec("demo", "da3-small") if use_demo else default
st.write(f"Model: `{model.describe()}`")

files = st.file_uploader("Two or more images", type=["jpg", "jpeg", "png", "webp", "bmp"], accept_multiple_files=True, key="home_files")
if st.button("Run", type="primary", disabled=not files, key="home_run"):
    frames = [np.asarray(Image.open(io.BytesIO(f.getvalue())).convert("RGB")) for f in files]
    request = ReconstructRequest(tuple(frames), tuple(f.name for f in files), model, process_res=252)
    try:
        job = tasks.reconstruct.submit(request, str(settings.demo_weights_dir), settings.cpu_threads, runner=runner)
        st.session_state["home_rec"] = run_with_status(job)
    except Exception as exc:  # noqa: BLE001 - every failure is shown, the app keeps working
        show_run_error(exc)

rec = st.session_state.get("home_rec")
if rec is not None:
    untrained_banner(rec)
    cols = st.columns(min(4, rec.n_views))
    for i in range(rec.n_views):
        d = rec.depth[i]
        lo, hi = np.percentile(d, [2, 98])
        grey = (np.clip((d - lo) / max(hi - lo, 1e-9), 0, 1) * 255).astype(np.uint8)
        cols[i % len(cols)].image(grey, caption=f"{rec.names[i]} depth ({rec.depth_unit})", use_container_width=True)
