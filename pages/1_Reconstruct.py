"""Reconstruct: frames in (photos, a video, or a bundled example), model and parameters, run."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import streamlit as st

from da3_core import cameras, inputs, runs, session, ui
from da3_core.run_service import RunRefused
from da3_core.runner.protocol import GPUError
from da3_core.text import md

ctx = ui.page_setup("Reconstruct", "▶️", status_in_main=True)
settings = ctx.settings
EXAMPLES_ROOT = Path(inputs.__file__).resolve().parents[1] / "examples"

st.title("Reconstruct")


@st.cache_data(show_spinner=False, max_entries=32)
def probe(name: str, data: bytes) -> inputs.VideoInfo:
    return inputs.probe_video(name, data, settings)


def image_preview(images: list) -> inputs.Batch:
    """Decoded photos, cached per upload set for this session."""
    key = tuple((f.file_id, f.size) for f in images)
    cached = st.session_state.get("rc_preview")
    if cached and cached[0] == key:
        return cached[1]
    batch = inputs.load_batch(images, settings, max_frames=settings.max_chunked_frames)
    st.session_state["rc_preview"] = (key, batch)
    return batch


source = st.radio("Frames from", ("Upload photos or a video", "Example scene"), horizontal=True, key="rc_source")
frames: list[inputs.Frame] = []
videos: list = []
video_sizes: list[tuple[int, int]] = []  # (width, height) of each frame the videos will give, for the run guard
files: list = []
shown_warnings: set[str] = set()


def warn(reason: str) -> None:
    """A rejection, shown once per page run (file names are data: never Markdown)."""
    if reason not in shown_warnings:
        shown_warnings.add(reason)
        st.warning(md(reason), icon="🚫")


if source.startswith("Upload"):
    files = st.file_uploader(
        "Photos (jpg, png, bmp, tiff, webp, HEIC/HEIF, AVIF) and/or a video (mp4, mov, avi, mkv, webm)",
        type=list(inputs.UPLOAD_EXTENSIONS),
        accept_multiple_files=True,
        key="rc_files",
    ) or []
    # Sniff each upload once per rerun, from its first bytes only (no copy of the whole file).
    is_video = {f.file_id: inputs.sniff(bytes(f.getbuffer()[:64])).kind == "video" for f in files}
    infos = {}
    for video in (f for f in files if is_video[f.file_id]):
        try:
            infos[video.file_id] = probe(video.name, video.getvalue())
        except inputs.InputError as exc:
            warn(str(exc))
    # Only videos that can be read count: an unreadable one gets its warning, no controls, no Run.
    videos = [f for f in files if f.file_id in infos]
    if videos:
        c1, c2 = st.columns(2)
        fps = c1.slider("Frames per second to take from the video", *inputs.TARGET_FPS_RANGE, value=inputs.DEFAULT_TARGET_FPS, step=0.1, key="rc_fps",
                        help="DA3's rule: one frame every max(1, int(video fps / this)).")
        cap = c2.number_input("Frame cap (whole run)", 1, settings.max_chunked_frames, min(32, settings.max_frames), key="rc_cap",
                              help=f"One DA3 call takes at most DA3_MAX_FRAMES={settings.max_frames}; more frames run in chunks "
                                   f"(up to DA3_MAX_CHUNKED_FRAMES={settings.max_chunked_frames}).")
    photos = [f for f in files if not is_video[f.file_id]]
    preview = image_preview(photos) if photos else inputs.Batch([], [], [])

    frames = list(preview.frames)
    for rejected in preview.rejected:
        warn(rejected.reason)
    budget = (int(cap) if videos else settings.max_chunked_frames) - len(frames)
    for video in videos:
        info = infos[video.file_id]
        plan = inputs.plan_video(info, float(fps), max(0, budget))
        st.info(f"**{md(inputs.display_name(video.name))}**: {info.duration_s:.1f} s, {info.width}x{info.height} at {info.fps:.2f} fps — {md(plan.summary)}")
        budget -= plan.n_frames
        video_sizes += [(info.width, info.height)] * plan.n_frames
else:
    examples = inputs.list_examples(EXAMPLES_ROOT)
    if not examples:
        st.error(f"No example scenes found under {md(EXAMPLES_ROOT.name)}.")
    else:
        by_key = {e.key: e for e in examples}
        key = st.selectbox("Example", list(by_key), format_func=lambda k: f"{by_key[k].title} ({len(by_key[k].files)} views)", key="rc_example")
        st.caption(by_key[key].description)
        frames = inputs.load_example(by_key[key], settings)

if frames:
    shown = frames[:12]
    st.image([f.image for f in shown], caption=[f.name for f in shown], width=140)
    if len(frames) > len(shown):
        st.caption(f"+ {len(frames) - len(shown)} more")
    notes = [f"{md(f.name)}: {md(f.note)}" for f in frames if f.note]
    if notes:
        with st.expander(f"Notes on {len(notes)} frame(s)"):
            st.markdown("\n".join(f"- {n}" for n in notes))

cams_box = st.container()  # drawn here, filled once the preset is known (below)
left, right = st.columns([3, 2])
with left, st.container(border=True):
    st.subheader("Model")
    model, preset = ui.model_picker(ctx)
with cams_box:
    cam_choice = ui.known_cameras_picker(frames, bool(videos), preset)
names = [frames[i].name for i in cam_choice.frames]
run_box = right.container(border=True)  # filled below, once the parameters are known (they sit under the columns)
with st.expander("Parameters", expanded=False):
    params = ui.params_picker(ctx, preset, names, cameras_given=cam_choice.known is not None)
params = dataclasses.replace(params, align_to_input_ext_scale=cam_choice.align)
with run_box:
    st.subheader("Run")
    busy = session.watching(ctx.service) is not None
    sizes = [(frames[i].image.shape[1], frames[i].image.shape[0]) for i in cam_choice.frames] + video_sizes
    verdict = ui.run_guard(ctx, sizes, model, params) if not busy else ui.GuardVerdict(True)
    over_budget_ok = verdict.over_budget_ok
    ready = bool(frames or videos) and model is not None and not busy and verdict.fits
    run_clicked = st.button(verdict.label, type="primary", disabled=not ready, key="rc_run", width="stretch")
    if busy:
        st.caption("A run of yours is in progress; its status is below and in the sidebar.")
    elif not (frames or videos):
        st.caption("Add photos, a video, or pick an example.")


def start(frames_to_run: list[inputs.Frame], source_label: str, known: cameras.KnownCameras | None = None) -> None:
    if not frames_to_run:
        st.error("No usable frame: see the messages above.")
        return
    try:
        ui.start_run(ctx, [f.image for f in frames_to_run], [f.name for f in frames_to_run], source_label, model, params, cameras=known,
                     over_budget_ok=over_budget_ok, chunked=verdict.chunked, fps=float(fps) if videos else None)
    except RunRefused as exc:  # the run guard: nothing saved, no worker started, the uploads stay on the page
        ui.show_error(f"The run was not started. {exc}")
        return
    except (ValueError, GPUError) as exc:
        ui.show_error(f"The run could not start: {exc}")
        return
    st.rerun()


if run_clicked and model is not None and not busy:
    if source.startswith("Upload"):
        with st.spinner("Reading frames…"):
            batch = inputs.load_batch(photos + videos, settings, target_fps=float(fps) if videos else inputs.DEFAULT_TARGET_FPS,
                                      max_frames=int(cap) if videos else settings.max_chunked_frames)
        for rejected in batch.rejected:
            warn(rejected.reason)
        to_run = list(batch.frames)
        if cam_choice.known is not None:  # photos only (no video): the frames the table matched
            if [f.name for f in to_run] != [f.name for f in frames]:
                st.error("The frames changed since the cameras were matched: check the table and run again.")
                st.stop()
            to_run = [to_run[i] for i in cam_choice.frames]
        start(to_run, "video" if videos else "upload", cam_choice.known)
    else:
        start([frames[i] for i in cam_choice.frames], f"example:{st.session_state.get('rc_example')}", cam_choice.known)

# A retry of a run whose weights were missing, with demo weights and the same frames.
retry = st.session_state.pop("rc_retry", None)
if retry and model is not None and session.watching(ctx.service) is None:
    run_dir = session.run_dir(settings, retry)
    meta = runs.read_meta(run_dir)
    retry_frames, exact = ctx.service.frames_for_retry(run_dir)
    if not exact:
        st.caption("The frames are re-read from the run folder (saved as JPEG q95: close to, not exactly, the first run's).")
    saved = runs.load_cameras(run_dir, meta)
    start([inputs.Frame(n, img, meta.source) for n, img in zip(meta.names, retry_frames)], meta.source,
          None if saved is None else cameras.KnownCameras(*saved))

ui.pending_status(ctx)
if st.session_state.get(session.OUTCOME) is None and session.watching(ctx.service) is None:
    ui.resumable_runs(ctx)  # chunked runs stopped by a server restart or an earlier session

outcome: session.Outcome | None = st.session_state.get(session.OUTCOME)
if outcome is not None and session.watching(ctx.service) is None:
    if outcome.ok:
        meta = runs.read_meta(session.run_dir(settings, outcome.run_id))
        total = meta.timings.get("total", 0.0)
        chunked = meta.params.get("chunked") or {}
        how = (f", {chunked.get('chunks')} chunks of {chunked.get('chunk')} (overlap {chunked.get('overlap')}), alignment "
               f"{chunked.get('alignment') or 'none'}, {chunked.get('loops_closed', 0)} loop(s) closed" if chunked else "")
        st.success(f"Done: {len(meta.names)} view(s) with {meta.preset} on {meta.device} in {total:.1f} s{how}, "
                   f"cameras: {cameras.describe(meta.params)} (run {meta.run_id}).")
        for col, key in zip(st.columns(3), ("depth", "cloud", "exports")):
            with col:
                ui.link(key)
    elif outcome.outcome.status == "cancelled":
        st.info(f"Cancelled: run {outcome.run_id} was stopped ({md(outcome.outcome.message)}). Its frames are kept in the run folder.", icon="⏹️")
        ui.resume_button(ctx, outcome.run_id)
    else:
        ui.show_error(f"Run {outcome.run_id} failed. {outcome.outcome.message}", outcome.outcome.traceback)
        st.caption("Its frames are kept in the run folder.")
        ui.resume_button(ctx, outcome.run_id)
        if outcome.outcome.model_unavailable:
            st.button(
                "Use untrained demo weights and run again",
                type="primary",
                key="rc_use_demo",
                on_click=lambda rid=outcome.run_id: (ui.use_demo_weights(), st.session_state.__setitem__("rc_retry", rid)),
                help="Builds untrained weights from the preset once (about a second for DA3 Small) and re-runs the same frames.",
            )
