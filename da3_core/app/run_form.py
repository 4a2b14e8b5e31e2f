"""The Reconstruct page's form: the model and parameter pickers, known cameras, the guard's verdict
before a run, and starting, retrying and resuming runs. Streamlit widgets; nothing here imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import streamlit as st

from da3_core import presets
from da3_core.app import session
from da3_core.app.text import md
from da3_core.app.ui import PageContext, show_error
from da3_core.app.view_state import keep, kept, kept_index
from da3_core.contract import ModelSpec
from da3_core.presets import PRESETS, PRESETS_BY_NAME, Preset
from da3_core.runs import records
from da3_core.runs.service import RunRefused

MODEL_KINDS = ("Hub preset", "Local folder", "Untrained demo weights")


def preset_of_folder(folder: str) -> Preset | None:
    """The preset a local checkpoint folder was saved from (its config.json), or None."""
    name = presets.preset_name_in_folder(folder)
    return PRESETS_BY_NAME.get(name) if name else None


MODEL_KEYS = ("model_kind", "model_preset", "model_dir", "model_demo")


def _init_model_state(ctx: PageContext) -> None:
    """The model widgets' first values: this browser session's last choice (kept across
    pages: Streamlit drops the state of widgets a page does not draw), else the choice saved
    in the session folder (a reload keeps it; saved when the user changes it), else the
    configured default."""
    ss = st.session_state
    local = [str(p) for p in ctx.settings.local_checkpoints()]
    allowed = {
        "model_kind": MODEL_KINDS,
        "model_preset": tuple(PRESETS_BY_NAME),
        "model_dir": tuple(local),
        "model_demo": tuple(PRESETS_BY_NAME),
    }
    if "model_kind" not in ss:
        spec = ModelSpec.from_setting(ctx.settings.model, ctx.settings.model_dir, ctx.device)
        kind = {"hub": MODEL_KINDS[0], "local": MODEL_KINDS[1], "demo": MODEL_KINDS[2]}[spec.kind]
        defaults = {"model_kind": kind}
        hub_preset = presets.preset_for(spec.ref) if spec.kind == "hub" else None
        defaults["model_preset"] = (hub_preset or presets.default_preset(ctx.device or "cpu")).name
        if local:
            defaults["model_dir"] = spec.ref if spec.kind == "local" and spec.ref in local else local[0]
        defaults["model_demo"] = spec.ref if spec.kind == "demo" else presets.default_preset(ctx.device or "cpu").name
        saved = session.load_prefs(ctx.settings).get("model", {})
        if isinstance(saved, dict):
            defaults.update(
                {k: saved[k] for k in allowed if saved.get(k) in allowed[k]}
            )  # only values the widgets offer (the file is data)
        # First look, or back from another page: every key set (a stale value may linger
        # under a dropped widget's key), this session's kept choice first.
        for key, options in allowed.items():
            value = kept(key, None) if kept(key, None) in options else defaults.get(key)
            if value is not None:
                ss[key] = value
        return
    for key, options in allowed.items():  # a widget not drawn for a while (another kind of weights)
        if key not in ss and kept(key, None) in options:
            ss[key] = kept(key, None)


def _save_model_choice(ctx: PageContext) -> None:
    """Save this session's model choice in its folder (`session.save_prefs`), so a reload keeps it."""
    ss = st.session_state
    prefs = session.load_prefs(ctx.settings)
    choice = {k: kept(k, None) for k in MODEL_KEYS} | {k: ss.get(k) for k in MODEL_KEYS if k in ss}
    prefs["model"] = {k: v for k, v in choice.items() if isinstance(v, str)}
    session.save_prefs(ctx.settings, prefs)


def _model_changed(ctx: PageContext, key: str) -> None:
    """A model widget's on_change: keep the new value and save the choice (a user's change
    only: a page visit writes nothing to disk)."""
    keep(key, st.session_state.get(key))
    _save_model_choice(ctx)


def use_demo_weights() -> None:
    """Button callback: switch this session to untrained demo weights."""
    st.session_state["model_kind"] = MODEL_KINDS[2]


def _folder_label(folder: str) -> str:
    preset = preset_of_folder(folder)
    return f"{Path(folder).name} ({preset.label if preset else 'unknown preset'})"


def model_picker(ctx: PageContext) -> tuple[ModelSpec | None, Preset | None]:
    """Model choice widgets; returns the spec (None if incomplete) and its preset when known."""
    _init_model_state(ctx)
    kind = st.radio(
        "Weights", MODEL_KINDS, horizontal=True, key="model_kind", on_change=_model_changed, args=(ctx, "model_kind")
    )
    keep("model_kind", kind)
    label = {p.name: f"{p.label} · {p.params} · {p.hub_id}" for p in PRESETS}
    if kind == MODEL_KINDS[0]:
        name = st.selectbox(
            "Preset",
            list(label),
            format_func=label.__getitem__,
            key="model_preset",
            on_change=_model_changed,
            args=(ctx, "model_preset"),
            help="Weights come from the Hugging Face hub (cached after the first download).",
        )
        keep("model_preset", name)
        preset = PRESETS_BY_NAME[str(name)]
        return ModelSpec("hub", preset.hub_id), preset
    if kind == MODEL_KINDS[1]:
        folders = [str(p) for p in ctx.settings.local_checkpoints()]
        if not folders:
            st.info(
                "No local checkpoint is configured. Set DA3_MODEL_DIR to a checkpoint folder, or DA3_MODELS_ROOT "
                "to a folder of checkpoint folders (a hub download of depth-anything/DA3-* or a save_pretrained folder)."
            )
            return None, None
        # A choice among configured folders, never a typed path: users cannot make the server read arbitrary paths.
        folder = st.selectbox(
            "Checkpoint folder",
            folders,
            key="model_dir",
            on_change=_model_changed,
            args=(ctx, "model_dir"),
            format_func=_folder_label,
        )
        keep("model_dir", folder)
        return ModelSpec("local", str(folder)), preset_of_folder(str(folder))
    name = st.selectbox(
        "Preset to build untrained weights from",
        list(label),
        format_func=label.__getitem__,
        key="model_demo",
        on_change=_model_changed,
        args=(ctx, "model_demo"),
    )
    keep("model_demo", name)
    st.caption("Untrained weights exercise every feature offline; the geometry they produce is meaningless.")
    return ModelSpec("demo", str(name)), PRESETS_BY_NAME[str(name)]


@dataclass(frozen=True)
class RunParams:
    """The parameters a run is started with (DA3 API names)."""

    process_res: int
    process_res_method: str
    ref_view_strategy: str
    reference_view: int | None
    infer_gs: bool
    device: str
    use_ray_pose: bool = False
    align_to_input_ext_scale: bool = True
    chunk_mode: str = "auto"
    chunk: int = 0
    overlap: int = 0
    loop_closure: bool = True
    problems: tuple[str, ...] = ()  # values out of range, a sentence each: the run cannot start until they are fixed

    def as_dict(self) -> dict[str, Any]:
        d = {
            k: v
            for k, v in self.__dict__.items()
            if k not in ("chunk_mode", "chunk", "overlap", "loop_closure", "problems")
        }
        d["chunking"] = {
            "mode": self.chunk_mode,
            "chunk": self.chunk,
            "overlap": self.overlap,
            "loop_closure": self.loop_closure,
        }
        return d


CHUNK_MODES = {
    "auto": "auto: in chunks only when one call would not fit",
    "always": "always in chunks",
    "never": "never (one DA3 call)",
}


# What use_ray_pose costs, measured by benchmarks/bench_da3_options.py (the same run both ways,
# alternating; medians of 4): DA3-SMALL, 4 frames at process_res 504, float32 on a 2-core
# Xeon (shared). Its RANSAC runs mostly on one core, so the wall ratio exceeds the CPU ratio (x3.1).
RAY_POSE_COST = (
    "poses from DA3's ray head instead of its camera decoder: more accurate, slower. Measured on the same run "
    "(DA3-SMALL, 4 frames at 504 px, 2-core CPU): {ray_s:.1f} s against {decoder_s:.1f} s (x{ratio:.1f})."
)


RAY_POSE_MEASURED = {"decoder_s": 4.20, "ray_s": 17.89, "ratio": 4.26}


_METHOD_HELP = {
    "upper_bound_resize": "low res: the long side becomes process_res (DA3 default)",
    "lower_bound_resize": "high res: the short side becomes process_res",
    "upper_bound_crop": "long side to process_res, then crop (COLMAP export not possible)",
    "lower_bound_crop": "short side to process_res, then crop (COLMAP export not possible)",
}


def params_picker(ctx: PageContext, preset: Preset | None, names: list[str], cameras_given: bool = False) -> RunParams:
    """Run parameters with DA3's defaults; options a preset or device cannot use are disabled with the reason.

    ``cameras_given``: the run will have known cameras (DA3 then selects no reference view,
    and the Gaussians are not offered: DA3 leaves them in its own frame)."""
    multi = preset is None or preset.multi_view
    problems: list[str] = []
    cols = st.columns(3)
    lo, hi = PROCESS_RES_FIELD
    asked, problem = bounded_number(
        cols[0],
        "process_res",
        lo,
        hi,
        504,
        "rc_res",
        step=presets.PATCH_SIZE,
        help=f"Processing resolution in pixels, {lo} to {hi}. DA3 runs at a multiple of 14 (the value "
        "used is shown when it differs). DA3 default 504.",
    )
    problems += [problem] if problem else []
    method = cols[1].selectbox(
        "process_res_method",
        presets.PROCESS_RES_METHODS,
        key="rc_method",
        index=kept_index("rc_method", presets.PROCESS_RES_METHODS),
        format_func=lambda m: f"{m} — {_METHOD_HELP[m]}",
    )
    keep("rc_method", method)
    process_res = presets.snap_process_res(min(max(asked, lo), hi), method)
    if process_res != asked and not problem:
        cols[0].caption(f"DA3 runs at **{process_res}** (a multiple of 14).")
    device = cols[2].selectbox(
        "Device",
        presets.DEVICES,
        key="rc_device",
        index=kept_index("rc_device", presets.DEVICES),
        help="auto: CUDA, then Apple MPS, then CPU (on CPU: float32, or bfloat16 where the processor has it).",
    )
    keep("rc_device", device)
    cols = st.columns(3)
    strategy = cols[0].selectbox(
        "ref_view_strategy",
        presets.REF_VIEW_STRATEGIES,
        key="rc_strategy",
        disabled=not multi or cameras_given,
        index=kept_index("rc_strategy", presets.REF_VIEW_STRATEGIES),
        help="How DA3 picks the reference view; acts with 3 or more views on multi-view presets. "
        "With known cameras DA3 picks none (each view gets its camera's token).",
    )
    keep("rc_strategy", strategy)
    options = ["auto"] + list(range(len(names)))
    if st.session_state.get("rc_ref") not in options:
        # Back from another page (Streamlit dropped the widget): the kept choice; fewer frames than before: auto.
        st.session_state["rc_ref"] = kept("rc_ref", "auto") if kept("rc_ref", "auto") in options else "auto"
    ref = cols[1].selectbox(
        "Reference view",
        options,
        key="rc_ref",
        disabled=not multi or len(names) < 2,
        format_func=lambda o: "auto (use the strategy)" if o == "auto" else f"{o}: {names[o]}",
        help="Force one frame as the reference: the world frame follows that camera.",
    )
    keep("rc_ref", ref)
    gs_reason = gs_unavailable_reason(ctx, preset, device)
    if gs_reason is None and cameras_given:
        gs_reason = "not with known cameras (DA3 leaves the Gaussians in its own frame, not your cameras' world)"
    infer_gs = cols[2].toggle(
        "Infer 3D Gaussians",
        bool(kept("rc_gs", False)),
        key="rc_gs",
        disabled=gs_reason is not None,
        help="Adds DA3's 3D Gaussians: a viewer on the Point cloud page and a 3DGS PLY in the exports.",
    )
    keep("rc_gs", infer_gs)
    if gs_reason:
        cols[2].caption(f"Gaussians: {gs_reason}")
    if not multi:
        st.caption(
            f"{preset.label if preset else 'This preset'} is monocular: no camera poses and no confidence; "
            "the point cloud uses identity poses and a stated field of view."
        )
    row = st.columns([1, 2])
    ray = row[0].toggle(
        "use_ray_pose",
        bool(kept("rc_ray", False)),
        key="rc_ray",
        disabled=not multi,
        help="Poses from DA3's ray head (RANSAC on predicted rays) instead of its camera decoder. "
        "With known cameras it changes only the scale DA3 fits to them.",
    )
    keep("rc_ray", ray)
    row[1].caption(ray_pose_cost() if multi else "use_ray_pose: monocular presets predict no poses.")
    st.markdown("**Long runs: chunks**")
    chunk_cols = st.columns([2, 1, 1, 1.4])
    mode = chunk_cols[0].selectbox(
        "Chunked run",
        list(CHUNK_MODES),
        key="rc_chunk_mode",
        format_func=CHUNK_MODES.__getitem__,
        index=kept_index("rc_chunk_mode", list(CHUNK_MODES)),
        help="A chunked run sends the frames as overlapping chunks, one DA3 call each (side by side on a "
        "pool of workers), aligns them into one world frame and closes loops: any number of frames "
        "in bounded memory. Saved chunk by chunk, so a stopped run can be resumed.",
    )
    keep("rc_chunk_mode", mode)
    chunk, problem = bounded_number(
        chunk_cols[1],
        "Chunk size",
        0,
        1000,
        0,
        "rc_chunk",
        help="Frames per chunk, 0 to 1000; 0: the run "
        "guard picks the largest that fits in memory (at most 120, DA3-Streaming's).",
    )
    problems += [problem] if problem else []
    overlap, problem = bounded_number(
        chunk_cols[2],
        "Overlap",
        0,
        999,
        0,
        "rc_overlap",
        help="Frames shared by neighbouring chunks, 0 to 999, on which they are aligned; 0: a third of the chunk.",
    )
    problems += [problem] if problem else []
    loops = chunk_cols[3].toggle(
        "Loop closure",
        bool(kept("rc_loops", True)),
        key="rc_loops",
        help="When the camera comes back to a "
        "place it has seen, correct the drift between chunks (a pose graph over the chunks).",
    )
    keep("rc_loops", loops)
    chunk, overlap = min(max(chunk, 0), 1000), min(max(overlap, 0), 999)
    if chunk and overlap >= chunk:
        chunk_cols[2].caption(f"At most {chunk - 1} (chunk size - 1).")
        overlap = chunk - 1
    params = RunParams(
        process_res,
        method,
        strategy,
        None if ref == "auto" else int(ref),
        bool(infer_gs and gs_reason is None),
        device,
        use_ray_pose=bool(ray and multi),
        chunk_mode=str(mode),
        chunk=chunk,
        overlap=overlap,
        loop_closure=bool(loops),
        problems=tuple(problems),
    )
    return params


PROCESS_RES_FIELD = (presets.PATCH_SIZE, 2016)


def bounded_number(
    where: Any, label: str, lo: int, hi: int, default: int, key: str, step: int = 1, help: str | None = None
) -> tuple[int, str | None]:
    """A whole-number field that takes any value and says when it is out of ``lo..hi``
    (under the field); returns (value, the problem or None). Its value is kept across pages.

    Streamlit's own ``min_value``/``max_value`` are not used: out of range, the browser marks
    the field and keeps sending the last valid value, so a run used a number the field did
    not show (5000 typed, 2016 run)."""
    value = int(where.number_input(label, value=int(kept(key, default)), step=step, key=key, help=help))
    keep(key, value)
    if lo <= value <= hi:
        return value, None
    problem = f"{label} {value} is out of range: allowed {lo} to {hi}."
    where.error(problem, icon="🚫")
    return value, problem


def ray_pose_cost() -> str:
    """One line on what use_ray_pose costs, with the benchmark's figures."""
    return "use_ray_pose: " + RAY_POSE_COST.format(**RAY_POSE_MEASURED)


def gs_unavailable_reason(ctx: PageContext, preset: Preset | None, device: str) -> str | None:
    """Why 3D Gaussians cannot be inferred with this choice, or None if they can.

    DA3's GS head has no CUDA-only operation (checked on CPU: `tests/integration/test_gs_cpu.py`),
    so CPU runs are allowed; the run guard (`run_guard`) shows their cost and refuses what cannot fit."""
    if preset is None or not preset.gs_head:
        return "only presets with a GS head (DA3 Giant, Nested Giant-Large)"
    return None


@dataclass(frozen=True)
class GuardVerdict:
    """What the run guard decided before the Run button.

    Attributes:
        fits: The run may start.
        over_budget_ok: The user accepted a run over its time budget.
        chunked: Run it in chunks (`da3_core.chunks`).
        label: The Run button's text.
    """

    fits: bool
    over_budget_ok: bool = False
    chunked: bool = False
    label: str = "Run reconstruction"


def run_guard(
    ctx: PageContext, sizes: list[tuple[int, int]], model: ModelSpec | None, params: RunParams
) -> GuardVerdict:
    """The run guard's verdict, shown before the Run button: the estimated memory and time
    against what is available; for a run that cannot fit in one call, the chunked run with
    its own estimate (one click: the Run button runs it in chunks); else why and the ways on.
    A parameter out of range (``params.problems``) refuses it, named here by the button.
    """
    if params.problems:
        st.error(md("Run is off until this is fixed under Parameters: " + " ".join(params.problems)), icon="🚫")
        return GuardVerdict(False)
    if model is None or not sizes:
        return GuardVerdict(True)
    too_many = len(sizes) > ctx.settings.max_frames
    if params.chunk_mode == "always" or (too_many and params.chunk_mode != "never"):
        return _chunked_verdict(
            ctx,
            sizes,
            model,
            params,
            ""
            if params.chunk_mode == "always"
            else f"{len(sizes)} frames are more than one call takes here (DA3_MAX_FRAMES={ctx.settings.max_frames}).",
        )
    if too_many:
        st.error(
            f"{len(sizes)} frames are more than one call takes here (DA3_MAX_FRAMES={ctx.settings.max_frames}): "
            "choose a chunked run under Parameters, or fewer frames.",
            icon="🧮",
        )
        return GuardVerdict(False)
    found = ctx.service.estimate(sizes, model, params.as_dict())
    if found is None:
        st.caption("No estimate: the model's preset is unknown.")
        return GuardVerdict(True)
    est, ways = found
    if not est.fits_memory:
        from da3_core.runs.guard import memory_problem

        refusal = "This run would be refused: " + memory_problem(est, ways)
        if params.chunk_mode == "auto" and len(sizes) > 1 and not params.infer_gs:
            return _chunked_verdict(
                ctx,
                sizes,
                model,
                params,
                "One DA3 call would not fit: " + est.summary(),
                refused=refusal + " A chunked run does not fit either: not even two frames per chunk.",
            )
        st.error(md(refusal), icon="🧮")
        return GuardVerdict(False)
    if not est.fits_time:
        from da3_core.runs.guard import time_problem

        st.warning(md(time_problem(est, ways)), icon="⏱️")
        return GuardVerdict(
            True,
            bool(
                st.checkbox(
                    "Start it anyway",
                    key="rc_over_budget",
                    help="The estimate may be pessimistic; the run is stopped when its budget runs out.",
                )
            ),
        )
    st.caption(md("Estimate: " + est.summary()))
    return GuardVerdict(True)


def _chunked_verdict(
    ctx: PageContext, sizes: list[tuple[int, int]], model: ModelSpec, params: RunParams, why: str, refused: str = ""
) -> GuardVerdict:
    """The chunked run's plan and estimate, or why not even that fits (``refused``: the
    message then, when the one-call refusal says it better)."""
    try:
        choice = ctx.service.choose_chunks(sizes, model, params.as_dict())
    except RunRefused as exc:
        st.error(md(refused or f"{why} {exc}".strip()), icon="🧮")
        return GuardVerdict(False)
    except ValueError as exc:
        st.error(md(f"Chunked run: {exc}"), icon="🧮")
        return GuardVerdict(False)
    if params.infer_gs:
        st.error("3D Gaussians are not offered for chunked runs: turn them off under Parameters.", icon="🧮")
        return GuardVerdict(False)
    st.info(md((why + " " if why else "") + "Chunked run: " + choice.summary() + f" Why: {choice.reason}."), icon="🧩")
    return GuardVerdict(True, chunked=True, label=f"Run in {choice.plan.n_chunks} chunk(s)")


@dataclass(frozen=True)
class CameraChoice:
    """What the Known cameras section decided.

    Attributes:
        known: Cameras for every frame that will run, or None (DA3 estimates them).
        frames: Indices of the frames to run (all, unless the user runs only those with cameras).
        align: ``align_to_input_ext_scale``.
    """

    known: Any
    frames: list[int]
    align: bool = True


_ALIGN_HELP = (
    "On (DA3's default): the result keeps your cameras exactly, and depth is scaled to them, so views, "
    "figures and exports (GLB, PLY, COLMAP) are in your world frame and units and line up with your own model. "
    "Off: DA3 keeps its own scale and frame, and your cameras are moved into it (a similarity fitted to "
    "DA3's predicted poses)."
)


PARTIAL_ALL = "Let DA3 estimate every camera (the file is ignored)"


PARTIAL_SOME = "Run only the frames that have a camera"


def known_cameras_picker(frames: list, has_video: bool, preset: Preset | None) -> CameraChoice:
    """The optional Known cameras section of the Reconstruct page: upload, read, match table,
    the partial-cameras choice and the align control.

    Args:
        frames: The frames shown (`da3_core.media.inputs.Frame`).
        has_video: A video is among the uploads (its frames get names only on Run).
        preset: The chosen preset, when known.
    """
    from da3_core.media import camera_files, camera_match, cameras

    every = CameraChoice(None, list(range(len(frames))))
    # A plain bordered box, not an expander: an expander closed itself on the rerun an upload causes.
    with st.container(border=True, key="rc_cams_box"):
        st.markdown("**Known cameras** (optional)")
        st.caption(
            "Give your own cameras and DA3 reconstructs with them: a COLMAP sparse model (cameras + images, "
            ".txt or .bin, or a .zip of them) or a .json/.npz with DA3's field names (`extrinsics` N×4×4 or N×3×4 "
            "world-to-camera, OpenCV axes; `intrinsics` N×3×3 in pixels; `names` the image names; optional "
            "`width`/`height`). Cameras are matched to the frames by image name."
        )
        files = (
            st.file_uploader(
                "Camera files", type=list(cameras.CAMERA_EXTENSIONS), accept_multiple_files=True, key="rc_cams"
            )
            or []
        )
        if not files:
            return every
        if has_video:
            st.info(
                "Known cameras are matched to photos or example frames by name; video frames are named only when the run "
                "starts, so the cameras are not used with a video."
            )
            return every
        if preset is not None and not preset.multi_view:
            st.info(
                f"{preset.label} takes no cameras (it has no camera encoder): the cameras are not used. Pick a multi-view preset."
            )
            return every
        if not frames:
            st.caption("Add the photos (or pick the example) the cameras belong to.")
            return every
        key = tuple((f.file_id, f.size) for f in files)
        cached = st.session_state.get("rc_cams_read")
        if cached and cached[0] == key:
            read = cached[1]
        else:
            try:
                read = camera_files.read_camera_files([(f.name, f.getvalue()) for f in files])
            except cameras.CameraFileError as exc:
                read = exc
            st.session_state["rc_cams_read"] = (key, read)
        if isinstance(read, cameras.CameraFileError):
            st.error(md(f"Camera file not used: {read}"))
            st.caption(
                "Your frames are kept: without a usable camera file DA3 estimates the cameras. Fix the file and upload it again."
            )
            return every
        names, sizes = camera_match.names_and_sizes(frames)
        match = camera_match.match_cameras(read, names, sizes)
        st.table([{k: md(v) for k, v in row.items()} for row in match.table()])  # cells are Markdown: names are data
        st.markdown(md(match.summary()))
        chosen = list(range(len(frames)))
        known = match.known
        if not match.complete and match.matched:
            choice = st.radio("Frames without a camera", (PARTIAL_ALL, PARTIAL_SOME), key="rc_cam_partial")
            if choice == PARTIAL_SOME:
                chosen, known = match.matched, match.known_for_matched()
        if known is None:
            return every
        align = st.toggle("align_to_input_ext_scale", value=True, key="rc_cam_align", help=_ALIGN_HELP)
        st.caption(
            (
                "Cameras: " + known.label + ". Results stay in your cameras' world frame and units."
                if align
                else "Cameras: " + known.label + ", moved into DA3's frame and scale (align_to_input_ext_scale off)."
            )
            + " DA3's camera encoder reads the focal lengths (as fields of view) and the poses; the principal point is kept "
            "in the result's intrinsics."
        )
        return CameraChoice(known, chosen, bool(align))


def start_run(
    ctx: PageContext,
    images: list,
    names: list[str],
    source: str,
    model: ModelSpec,
    params: RunParams,
    cameras: Any = None,
    over_budget_ok: bool = False,
    chunked: bool = False,
    fps: float | None = None,
) -> Any:
    """Submit a run through the server's `RunService` (inputs saved, job queued; returns at
    once), watch it from this browser session, and remember the model choice.

    ``cameras``: known cameras for every frame (`da3_core.media.cameras.KnownCameras`), or None.
    ``over_budget_ok``: start it although the run guard expects it to overrun its time budget.

    Raises:
        RunRefused: The run guard refused it (nothing saved, no worker started)."""
    if chunked:
        p = params.as_dict()
        p["chunking"] = {**p["chunking"], "fps": fps}
        active = ctx.service.submit_chunked(ctx.session_dir, images, names, source, model, p, cameras=cameras)
    else:
        active = ctx.service.submit(
            ctx.session_dir,
            images,
            names,
            source,
            model,
            params.as_dict(),
            cameras=cameras,
            over_budget_ok=over_budget_ok,
        )
    session.watch(active)
    _save_model_choice(ctx)
    return active


def retry_with_demo_weights(ctx: PageContext, run_dir: Path) -> None:
    """The "Use untrained demo weights and run again" action: the run service runs the run's
    frames again with demo weights (`RunService.retry_with_demo_weights`); this browser
    watches the new run. A refusal is shown on the page."""
    from da3_core.runner.protocol import GPUError

    fallback = st.session_state.get("model_demo") or presets.default_preset(ctx.device or "cpu").name
    try:
        active = ctx.service.retry_with_demo_weights(run_dir, fallback_preset=str(fallback))
    except RunRefused as exc:  # the run guard: nothing saved, no worker started
        show_error(f"The run was not started. {exc}")
        return
    except (ValueError, OSError, GPUError) as exc:
        show_error(f"The run could not start: {exc}")
        return
    session.watch(active)
    _save_model_choice(ctx)
    st.rerun()


def resume_button(ctx: PageContext, run_id: str) -> None:
    """A Resume button under a stopped chunked run: it continues from the first missing chunk."""
    run_dir = session.run_dir(ctx.settings, run_id)
    if not records.is_chunked(run_dir):
        return
    if st.button(
        "Resume",
        key=f"rc_resume_{run_id}",
        type="primary",
        help="Continues from the first missing chunk; the saved chunks are not computed again.",
    ):
        _resume(ctx, run_dir)


def _resume(ctx: PageContext, run_dir: Path) -> None:
    try:
        active = ctx.service.resume(run_dir)
    except (ValueError, OSError) as exc:
        show_error(f"The run could not be resumed: {exc}")
        return
    session.watch(active)
    st.rerun()


def resumable_runs(ctx: PageContext) -> None:
    """The newest chunked run of this session that stopped before the end, with Resume."""
    for meta in session.list_runs(ctx.settings)[:5]:
        run_dir = session.run_dir(ctx.settings, meta.run_id)
        if meta.status in ("failed", "cancelled") and records.is_chunked(run_dir):
            st.info(f"Chunked run {meta.run_id} ({len(meta.names)} frames) stopped: {md(meta.error)}", icon="🧩")
            resume_button(ctx, meta.run_id)
            return
