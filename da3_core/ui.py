"""Streamlit building blocks shared by the pages: set-up, sidebar, live run status, model
and parameter pickers, banners. Pages stay thin: they read widgets and call these and the
pure modules. Nothing here imports torch.

A run does not block the page: it is submitted, and a fragment that re-runs twice a second
reads its progress, so the user can keep using the app (other pages, older runs) while it
runs. The fragment also tells the runner someone still watches; when the tab closes it
stops, and the runner cancels the run after ``DA3_ABANDON_AFTER_S``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import streamlit as st

from da3_core import presets, runs, session, tasks
from da3_core.config import Settings
from da3_core.contract import ModelSpec, Reconstruction, ReconstructRequest
from da3_core.gpu import Runner
from da3_core.holder import RunnerHolder, get_holder, settings_or_stop
from da3_core.presets import PRESETS, PRESETS_BY_NAME, Preset

MODEL_KINDS = ("Hub preset", "Local folder", "Untrained demo weights")
# The app's pages, for the links this module draws. Streamlit's automatic page list is off
# (.streamlit/config.toml) because it labels the entry page "streamlit app".
NAV: dict[str, tuple[str, str, str]] = {
    "home": ("streamlit_app.py", "Home", "🛰️"),
    "reconstruct": ("pages/1_Reconstruct.py", "Reconstruct", "▶️"),
    "depth": ("pages/2_Depth_maps.py", "Depth maps", "🗺️"),
    "cloud": ("pages/3_Point_cloud.py", "Point cloud", "☁️"),
    "exports": ("pages/4_Exports.py", "Exports", "📦"),
    "runner": ("pages/5_Runner.py", "Runner", "⚙️"),
}


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

    @property
    def device(self) -> str | None:
        """The worker's device once it reported it (``cuda``, ``mps``, ``cpu``), else None."""
        info = self.holder.device_info()
        return info.get("device") if info else None

    @property
    def worker_info(self) -> dict[str, Any]:
        return self.holder.device_info() or {}


def page_setup(title: str, icon: str = "🛰️") -> PageContext:
    """Page config, settings (stops on a bad variable), the runner, the session, the sidebar."""
    st.set_page_config(page_title=f"{title} · DA3 dashboard", page_icon=icon, layout="wide")
    settings = settings_or_stop()
    holder = get_holder()
    ctx = PageContext(settings, holder, holder.runner, session.session_dir(settings))
    session.collect_pending()  # a run that ended since the last rerun is saved and shown now
    if holder.janitor is not None:
        holder.janitor.maybe_clean(keep=(ctx.session_dir,))
    sidebar(ctx)
    return ctx


# --------------------------------------------------------------------------------------
# Sidebar: runner line, run in progress, run picker
# --------------------------------------------------------------------------------------


def sidebar(ctx: PageContext) -> None:
    with st.sidebar:
        for key in NAV:
            link(key)
        st.divider()
        st.caption(runner_caption(ctx))
        pending_status(compact=True)
        metas = [m for m in session.list_runs(ctx.settings) if m.status == "done"]
        if metas:
            ids = [m.run_id for m in metas]
            labels = {m.run_id: m.label() for m in metas}
            active = st.session_state.get(session.ACTIVE)
            if active not in ids:
                active = ids[0]
                session.set_active(active)
            if st.session_state.get("sb_run") != active:
                st.session_state["sb_run"] = active  # follow runs activated elsewhere (a new run)
            st.selectbox(
                "Run",
                ids,
                format_func=lambda rid: labels[rid],
                key="sb_run",
                on_change=lambda: session.set_active(st.session_state["sb_run"]),
                help="Your runs in this session (kept on disk; the URL brings them back after a reload).",
            )


def runner_caption(ctx: PageContext) -> str:
    """One line about the worker for the sidebar."""
    status = ctx.runner.status()
    device = ctx.device or "starting…"
    return f"Worker {status.state} · device {device} · queue {status.queue_length}"


def pending_status(compact: bool = False) -> None:
    """Live status of this session's run in progress (queue place, stage, progress, time, cancel).

    It re-runs itself twice a second only while a run is pending: an idle tab costs the
    server nothing (three idle tabs polling took two thirds of a core here).
    """
    every = 0.5 if session.pending() is not None else None
    # The container gives the fragment a slot of its own in the page: a timer rerun that
    # arrives after the run ended then cannot clear what the page drew next (the Done banner).
    with st.container():
        st.fragment(run_every=every)(_pending_status_body)(compact)


def _pending_status_body(compact: bool) -> None:
    box = st.container()
    job_state = session.pending()
    if job_state is None:
        return
    if session.collect_pending():
        st.rerun(scope="app")
    job_state.pump()
    label = f"Running {len(job_state.meta.names)} frame(s): {job_state.stage} · {job_state.elapsed_s:.1f} s"
    if compact:
        box.caption(label)
        box.progress(min(1.0, job_state.fraction))
        return
    with box.container(border=True):
        st.markdown(f"**{label}**")
        st.progress(min(1.0, job_state.fraction))
        if st.button("Cancel run", key="rc_cancel", help="Stops the run; its inputs stay in the run folder."):
            job_state.job.cancel()


# --------------------------------------------------------------------------------------
# Model and parameters
# --------------------------------------------------------------------------------------


def preset_of_folder(folder: str) -> Preset | None:
    """The preset a local checkpoint folder was saved from (its config.json), or None."""
    import json

    try:
        name = json.loads((Path(folder).expanduser() / "config.json").read_text())["model_name"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return PRESETS_BY_NAME.get(str(name))


def _init_model_state(ctx: PageContext) -> None:
    ss = st.session_state
    if "model_kind" in ss:
        return
    spec = presets.model_from_setting(ctx.settings.model, ctx.settings.model_dir, ctx.device)
    kind = {"hub": MODEL_KINDS[0], "local": MODEL_KINDS[1], "demo": MODEL_KINDS[2]}[spec.kind]
    ss["model_kind"] = kind
    hub_preset = presets.preset_for(spec.ref) if spec.kind == "hub" else None
    ss["model_preset"] = (hub_preset or presets.default_preset(ctx.device or "cpu")).name
    local = [str(p) for p in ctx.settings.local_checkpoints()]
    if local:
        ss["model_dir"] = spec.ref if spec.kind == "local" and spec.ref in local else local[0]
    ss["model_demo"] = spec.ref if spec.kind == "demo" else presets.default_preset(ctx.device or "cpu").name


def use_demo_weights() -> None:
    """Button callback: switch this session to untrained demo weights."""
    st.session_state["model_kind"] = MODEL_KINDS[2]


def model_picker(ctx: PageContext) -> tuple[ModelSpec | None, Preset | None]:
    """Model choice widgets; returns the spec (None if incomplete) and its preset when known."""
    _init_model_state(ctx)
    kind = st.radio("Weights", MODEL_KINDS, horizontal=True, key="model_kind")
    label = {p.name: f"{p.label} · {p.params} · {p.hub_id}" for p in PRESETS}
    if kind == MODEL_KINDS[0]:
        name = st.selectbox("Preset", list(label), format_func=label.get, key="model_preset",
                            help="Weights come from the Hugging Face hub (cached after the first download).")
        preset = PRESETS_BY_NAME[name]
        return ModelSpec("hub", preset.hub_id), preset
    if kind == MODEL_KINDS[1]:
        folders = [str(p) for p in ctx.settings.local_checkpoints()]
        if not folders:
            st.info("No local checkpoint is configured. Set DA3_MODEL_DIR to a checkpoint folder, or DA3_MODELS_ROOT "
                    "to a folder of checkpoint folders (a hub download of depth-anything/DA3-* or a save_pretrained folder).")
            return None, None
        # A choice among configured folders, never a typed path: users cannot make the server read arbitrary paths.
        folder = st.selectbox("Checkpoint folder", folders, key="model_dir",
                              format_func=lambda f: f"{Path(f).name} ({preset_of_folder(f).label if preset_of_folder(f) else 'unknown preset'})")
        return ModelSpec("local", folder), preset_of_folder(folder)
    name = st.selectbox("Preset to build untrained weights from", list(label), format_func=label.get, key="model_demo")
    st.caption("Untrained weights exercise every feature offline; the geometry they produce is meaningless.")
    return ModelSpec("demo", name), PRESETS_BY_NAME[name]


@dataclass(frozen=True)
class RunParams:
    """The parameters a run is started with (DA3 API names)."""

    process_res: int
    process_res_method: str
    ref_view_strategy: str
    reference_view: int | None
    infer_gs: bool
    device: str

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


_METHOD_HELP = {
    "upper_bound_resize": "low res: the long side becomes process_res (DA3 default)",
    "lower_bound_resize": "high res: the short side becomes process_res",
    "upper_bound_crop": "long side to process_res, then crop (COLMAP export not possible)",
    "lower_bound_crop": "short side to process_res, then crop (COLMAP export not possible)",
}


def params_picker(ctx: PageContext, preset: Preset | None, names: list[str]) -> RunParams:
    """Run parameters with DA3's defaults; options a preset or device cannot use are disabled with the reason."""
    multi = preset is None or preset.multi_view
    cols = st.columns(3)
    process_res = cols[0].number_input("process_res", min_value=112, max_value=2016, value=504, step=14, key="rc_res",
                                       help="Processing resolution in pixels (a multiple of 14). DA3 default 504.")
    method = cols[1].selectbox("process_res_method", presets.PROCESS_RES_METHODS, key="rc_method", format_func=lambda m: f"{m} — {_METHOD_HELP[m]}")
    device = cols[2].selectbox("Device", ("auto", "cuda", "mps", "cpu"), key="rc_device",
                               help="auto: CUDA, then Apple MPS, then CPU (float32 on CPU: 3-4x faster than DA3's CPU autocast).")
    cols = st.columns(3)
    strategy = cols[0].selectbox("ref_view_strategy", presets.REF_VIEW_STRATEGIES, key="rc_strategy", disabled=not multi,
                                 help="How DA3 picks the reference view; acts with 3 or more views on multi-view presets.")
    options = ["auto"] + list(range(len(names)))
    ref = cols[1].selectbox("Reference view", options, key="rc_ref", disabled=not multi or len(names) < 2,
                            format_func=lambda o: "auto (use the strategy)" if o == "auto" else f"{o}: {names[o]}",
                            help="Force one frame as the reference: the world frame follows that camera.")
    gs_reason = gs_unavailable_reason(ctx, preset, device)
    infer_gs = cols[2].toggle("Infer 3D Gaussians", key="rc_gs", disabled=gs_reason is not None, help=gs_reason or "Adds a 3DGS PLY to the exports.")
    if gs_reason:
        cols[2].caption(f"Gaussians: {gs_reason}")
    with st.expander("Gaussian video (trajectory and quality)"):
        video_reason = gs_video_unavailable_reason(ctx, preset, device)
        st.radio("Trajectory", ("extend", "smooth"), horizontal=True, key="rc_gs_traj", disabled=video_reason is not None)
        st.select_slider("Video quality (crf)", options=(28, 23, 18), value=23, key="rc_gs_crf", disabled=video_reason is not None)
        if video_reason:
            st.caption(f"Unavailable: {video_reason}")
    if not multi:
        st.caption(f"{preset.label if preset else 'This preset'} is monocular: no camera poses and no confidence; "
                   "the point cloud uses identity poses and a stated field of view.")
    return RunParams(int(process_res), method, strategy, None if ref == "auto" else int(ref), bool(infer_gs and gs_reason is None), device)


def gs_unavailable_reason(ctx: PageContext, preset: Preset | None, device: str) -> str | None:
    """Why 3D Gaussians cannot be inferred with this choice, or None if they can."""
    if preset is None or not preset.gs_head:
        return "only presets with a GS head (DA3 Giant, Nested Giant-Large)"
    effective = ctx.device if device == "auto" else device
    if effective != "cuda":
        return f"needs a CUDA GPU (the worker's device is {effective or 'not known yet'})"
    return None


def gs_video_unavailable_reason(ctx: PageContext, preset: Preset | None, device: str) -> str | None:
    """Why a Gaussian video cannot be rendered, or None."""
    reason = gs_unavailable_reason(ctx, preset, device)
    if reason:
        return reason
    if not ctx.worker_info.get("gsplat"):
        return "rendering needs the gsplat package on the worker (not installed)"
    return "Gaussian video rendering is not part of this dashboard yet; export the 3DGS PLY instead"


def start_run(ctx: PageContext, images: list, names: list[str], source: str, model: ModelSpec, params: RunParams) -> None:
    """Save the inputs to a new run folder, then queue the reconstruction (returns at once)."""
    request = ReconstructRequest(
        images=tuple(images),
        names=tuple(names),
        model=model,
        process_res=params.process_res,
        process_res_method=params.process_res_method,
        ref_view_strategy=params.ref_view_strategy,
        reference_view=params.reference_view,
        infer_gs=params.infer_gs,
        device=params.device,
    )
    run_dir, meta = runs.start_run(ctx.session_dir, images, names, source, model, params.as_dict())
    job = tasks.reconstruct.submit(request, str(ctx.settings.demo_weights_dir), ctx.settings.cpu_threads, runner=ctx.runner)
    job.touch()
    st.session_state[session.PENDING] = session.PendingRun(job, run_dir, meta)
    st.session_state.pop(session.OUTCOME, None)


# --------------------------------------------------------------------------------------
# Banners and errors
# --------------------------------------------------------------------------------------


def untrained_banner(rec: Reconstruction | None) -> None:
    """The banner every page shows for results of untrained demo weights."""
    if rec is not None and rec.untrained:
        st.warning(
            f"**Untrained demo weights** ({rec.preset}): every feature works, but the depth and "
            "geometry are meaningless. Use trained weights (hub or local folder) for real results.",
            icon="⚠️",
        )


def require_active_run(ctx: PageContext) -> tuple[Path, runs.RunMeta, Reconstruction]:
    """The active run, or a pointer to the Reconstruct page and a stop."""
    found = session.active_run(ctx.settings)
    if found is None:
        st.info("No reconstruction yet in this session.")
        link("reconstruct", "Reconstruct: upload photos, a video or pick an example")
        st.stop()
        raise SystemExit  # unreachable: st.stop raises
    untrained_banner(found[2])
    return found


def show_error(message: str, trace: str = "") -> None:
    st.error(message)
    if trace:
        with st.expander("Worker traceback"):
            st.code(trace, language="text")


# --------------------------------------------------------------------------------------
# Widget values that outlive their page
# --------------------------------------------------------------------------------------

_KEEP = "_kept_values"


def kept(key: str, default: Any) -> Any:
    """A widget's last value, kept across page switches (Streamlit drops widget state of
    pages not shown); pass it as the widget's initial value."""
    return st.session_state.setdefault(_KEEP, {}).get(key, default)


def keep(key: str, value: Any) -> Any:
    st.session_state.setdefault(_KEEP, {})[key] = value
    return value


@dataclass(frozen=True)
class CloudSettings:
    """The point-cloud view settings shared by the Point cloud and Exports pages."""

    filters: Any  # geometry.FilterParams
    fov_deg: float
    show_cameras: bool
    point_size: float


def cloud_settings(rec: Reconstruction, widgets: bool) -> CloudSettings:
    """Draw the point-cloud controls (``widgets``) or just read their kept values."""
    from da3_core import geometry

    defaults = {"pc_conf": 10.0, "pc_black": False, "pc_white": False, "pc_sky": True, "pc_views": list(range(rec.n_views)),
                "pc_max": 200_000, "pc_cams": True, "pc_size": 1.5, "pc_fov": geometry.DEFAULT_FOV_DEG}
    values = {k: kept(k, v) for k, v in defaults.items()}
    values["pc_views"] = [v for v in values["pc_views"] if v < rec.n_views] or list(range(rec.n_views))
    if widgets:
        c1, c2, c3 = st.columns(3)
        values["pc_conf"] = c1.slider("Confidence filter (percentile dropped)", 0.0, 100.0, float(values["pc_conf"]), 1.0, key="pc_conf_w",
                                      disabled=rec.conf is None,
                                      help="DA3's rule: threshold = min(max(1.05, P_pct), P_90)." if rec.conf is not None else "This preset predicts no confidence.")
        values["pc_max"] = c2.select_slider("Max points", (20_000, 50_000, 100_000, 200_000, 300_000, 500_000), value=int(values["pc_max"]), key="pc_max_w",
                                            help="Plotly's cap (seeded, deterministic subsample); the full-density viewer below shows them all.")
        values["pc_size"] = c3.slider("Point size", 0.5, 6.0, float(values["pc_size"]), 0.5, key="pc_size_w")
        c1, c2, c3, c4 = st.columns(4)
        values["pc_black"] = c1.toggle("Drop black background", bool(values["pc_black"]), key="pc_black_w")
        values["pc_white"] = c2.toggle("Drop white background", bool(values["pc_white"]), key="pc_white_w")
        values["pc_sky"] = c3.toggle("Drop sky", bool(values["pc_sky"]), key="pc_sky_w", disabled=rec.sky is None,
                                     help=None if rec.sky is not None else "This preset predicts no sky.")
        values["pc_cams"] = c4.toggle("Show cameras", bool(values["pc_cams"]), key="pc_cams_w")
        values["pc_views"] = st.multiselect("Views", list(range(rec.n_views)), values["pc_views"], key="pc_views_w",
                                            format_func=lambda i: f"{i}: {rec.names[i]}")
        if not rec.has_poses:
            values["pc_fov"] = st.slider("Assumed horizontal field of view (degrees)", 20.0, 120.0, float(values["pc_fov"]), 1.0, key="pc_fov_w",
                                         help="This preset predicts no cameras: identity poses and this field of view are assumed.")
        for k, v in values.items():
            keep(k, v)
    filters = geometry.FilterParams(
        conf_percentile=float(values["pc_conf"]),
        filter_black_bg=bool(values["pc_black"]),
        filter_white_bg=bool(values["pc_white"]),
        filter_sky=bool(values["pc_sky"]),
        views=tuple(values["pc_views"]) if len(values["pc_views"]) < rec.n_views else None,
        max_points=int(values["pc_max"]),
    )
    return CloudSettings(filters, float(values["pc_fov"]), bool(values["pc_cams"]), float(values["pc_size"]))
