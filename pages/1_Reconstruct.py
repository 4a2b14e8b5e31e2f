"""Reconstruct: frames in (photos, a video, or a bundled example), model and parameters, run."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import streamlit as st

from da3_core.app import run_form, session, ui, view_state
from da3_core.app.text import md
from da3_core.media import batches, cameras, filenames, image_io, inputs, video_io
from da3_core.runner.protocol import GPUError
from da3_core.runs import guard
from da3_core.runs.service import RunRefused

ctx = ui.page_setup("Reconstruct", "▶️", status_in_main=True)
settings = ctx.settings
EXAMPLES_ROOT = Path(__file__).resolve().parents[1] / "examples"

st.title("Reconstruct")


@st.cache_data(show_spinner=False, max_entries=32)
def probe(name: str, data: bytes) -> video_io.VideoInfo:
    return video_io.probe_video(name, data, settings)


def image_preview(images: list) -> inputs.Batch:
    """Decoded photos, cached per upload set for this session."""
    key = tuple((f.file_id, f.size) for f in images)
    cached = st.session_state.get("rc_preview")
    if cached and cached[0] == key:
        return cached[1]
    batch = batches.load_batch(images, settings, max_frames=settings.max_chunked_frames)
    st.session_state["rc_preview"] = (key, batch)
    return batch


# What the page was given is kept per browser session (Streamlit drops the state of widgets
# a page run does not draw: another page, or the other source): values in `view_state.keep`, and the
# uploads themselves, which a file uploader cannot be given back.
KEPT_UPLOADS = "rc_uploads_kept"  # uploads from before the uploader was last dropped, still in use
LAST_UPLOADS = "rc_uploads_last"  # every upload in use at the last page run
SOURCES = ("Upload photos or a video", "Example scene")
source = st.radio(
    "Frames from", SOURCES, horizontal=True, key="rc_source", index=view_state.kept_index("rc_source", SOURCES)
)
view_state.keep("rc_source", source)
frames: list[inputs.Frame] = []
videos: list = []
video_sizes: list[tuple[int, int]] = []  # (width, height) of each frame the videos will give, for the run guard
files: list = []
cap_problem: str | None = None  # the frame cap out of range
shown_warnings: set[str] = set()


def warn(reason: str) -> None:
    """A rejection, shown once per page run (file names are data: never Markdown)."""
    if reason not in shown_warnings:
        shown_warnings.add(reason)
        st.warning(md(reason), icon="🚫")


if source.startswith("Upload"):
    ss = st.session_state
    if "rc_files" not in ss and ss.get(LAST_UPLOADS):  # the uploader was dropped: it comes back empty
        ss[KEPT_UPLOADS] = ss.pop(LAST_UPLOADS)
    new_files = (
        st.file_uploader(
            "Photos (jpg, png, bmp, tiff, webp, HEIC/HEIF, AVIF) and/or a video (mp4, mov, avi, mkv, webm)",
            type=list(inputs.UPLOAD_EXTENSIONS),
            accept_multiple_files=True,
            key="rc_files",
        )
        or []
    )
    fresh = {f.file_id for f in new_files}
    kept_files = [f for f in ss.get(KEPT_UPLOADS, []) if f.file_id not in fresh]
    if kept_files:
        c1, c2 = st.columns([4, 1], vertical_alignment="center")
        listed = ", ".join(filenames.display_name(f.name) for f in kept_files[:5]) + (
            ", …" if len(kept_files) > 5 else ""
        )
        c1.caption(md(f"{len(kept_files)} file(s) kept from before: {listed}") + " (used with any you add above).")
        c2.button(
            "Clear kept files",
            key="rc_clear_kept",
            on_click=lambda: ss.pop(KEPT_UPLOADS, None),
            help="Forget the files uploaded before you left this page; the ones in the box above stay.",
        )
    files = kept_files + list(new_files)
    ss[LAST_UPLOADS] = files
    # Sniff each upload once per rerun, from its first bytes only (no copy of the whole file); a
    # damaged file named as a video is a video that cannot be read, not an unknown image.
    is_video = {f.file_id: image_io.looks_like_video(f.name, bytes(f.getbuffer()[:64])) for f in files}
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
        fps = c1.slider(
            "Frames per second to take from the video",
            *video_io.TARGET_FPS_RANGE,
            step=0.1,
            key="rc_fps",
            value=float(view_state.kept("rc_fps", video_io.DEFAULT_TARGET_FPS)),
            help="DA3's rule: one frame every max(1, int(video fps / this)).",
        )
        view_state.keep("rc_fps", fps)
        cap, cap_problem = run_form.bounded_number(
            c2,
            "Frame cap",
            1,
            settings.max_chunked_frames,
            min(32, settings.max_frames),
            "rc_cap",
            help=f"Frames of the whole run, 1 to {settings.max_chunked_frames}. One DA3 call takes at most DA3_MAX_FRAMES="
            f"{settings.max_frames}; more frames run in chunks (up to DA3_MAX_CHUNKED_FRAMES={settings.max_chunked_frames}).",
        )
        cap = min(max(cap, 1), settings.max_chunked_frames)
    photos = [f for f in files if not is_video[f.file_id]]
    preview = image_preview(photos) if photos else inputs.Batch([], [], [])

    frames = list(preview.frames)
    for rejected in preview.rejected:
        warn(rejected.reason)
    budget = (int(cap) if videos else settings.max_chunked_frames) - len(frames)
    for video in videos:
        info = infos[video.file_id]
        plan = video_io.plan_video(info, float(fps), max(0, budget))
        st.info(
            f"**{md(filenames.display_name(video.name))}**: {info.duration_s:.1f} s, {info.width}x{info.height} at {info.fps:.2f} fps — {md(plan.summary)}"
        )
        budget -= plan.n_frames
        video_sizes += [(info.width, info.height)] * plan.n_frames
else:
    examples = batches.list_examples(EXAMPLES_ROOT)
    if not examples:
        st.error(f"No example scenes found under {md(EXAMPLES_ROOT.name)}.")
    else:
        by_key = {e.key: e for e in examples}
        key = st.selectbox(
            "Example",
            list(by_key),
            format_func=lambda k: f"{by_key[k].title} ({len(by_key[k].files)} views)",
            key="rc_example",
            index=view_state.kept_index("rc_example", list(by_key)),
        )
        view_state.keep("rc_example", key)
        st.caption(by_key[key].description)
        frames = batches.load_example(by_key[key], settings)

if frames:
    shown = frames[:12]
    # Image captions are Markdown too: names are data (`**x**.jpg` must not turn bold).
    st.image([f.image for f in shown], caption=[md(f.name) for f in shown], width=140)
    if len(frames) > len(shown):
        st.caption(md(f"+ {len(frames) - len(shown)} more"))  # a leading "+ " would start a list
    notes = [f"{md(f.name)}: {md(f.note)}" for f in frames if f.note]
    if notes:
        with st.expander(f"Notes on {len(notes)} frame(s)"):
            st.markdown("\n".join(f"- {n}" for n in notes))
crop_box = st.container()  # DA3's centre crop of mixed shapes: said here, once the parameters are known (below)

cams_box = st.container()  # drawn here, filled once the preset is known (below)
left, right = st.columns([3, 2])
with left, st.container(border=True):
    st.subheader("Model")
    model, preset = run_form.model_picker(ctx)
with cams_box:
    cam_choice = run_form.known_cameras_picker(frames, bool(videos), preset)
names = [frames[i].name for i in cam_choice.frames]
run_box = right.container(border=True)  # filled below, once the parameters are known (they sit under the columns)
with st.expander("Parameters", expanded=False):
    params = run_form.params_picker(ctx, preset, names, cameras_given=cam_choice.known is not None)
params = dataclasses.replace(
    params,
    align_to_input_ext_scale=cam_choice.align,
    problems=params.problems + ((cap_problem,) if videos and cap_problem else ()),
)
sizes = [(frames[i].image.shape[1], frames[i].image.shape[0]) for i in cam_choice.frames] + video_sizes
crop = guard.centre_crop_notice(sizes, params.process_res, params.process_res_method)
if crop:
    crop_box.info(md(crop), icon="✂️")
with run_box:
    st.subheader("Run")
    busy = session.watching(ctx.service) is not None
    verdict = run_form.run_guard(ctx, sizes, model, params) if not busy else run_form.GuardVerdict(True)
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
        run_form.start_run(
            ctx,
            [f.image for f in frames_to_run],
            [f.name for f in frames_to_run],
            source_label,
            model,
            params,
            cameras=known,
            over_budget_ok=over_budget_ok,
            chunked=verdict.chunked,
            fps=float(fps) if videos else None,
        )
    except RunRefused as exc:  # the run guard: nothing saved, no worker started, the uploads stay on the page
        ui.show_error(f"The run was not started. {exc}")
        return
    except (ValueError, GPUError) as exc:
        ui.show_error(f"The run could not start: {exc}")
        return
    st.rerun()


if run_clicked and model is not None and not busy:
    if source.startswith("Upload"):
        if videos:
            with st.spinner("Reading frames…"):
                batch = batches.load_batch(photos + videos, settings, target_fps=float(fps), max_frames=int(cap))
        else:  # the photos as decoded for the preview: decoding them again doubled this process's share for a while
            batch = preview
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

ui.pending_status(ctx)
# This browser's run (the one it watches, or the last one it watched to its end): one object,
# from the run service while it holds the run, else from the run folder.
view = session.run_view(ctx.service)
if view is None:
    run_form.resumable_runs(ctx)  # chunked runs stopped by a server restart or an earlier session
elif view.finished:
    if view.ok:
        st.success(
            f"Done: {view.n_views} view(s) with {view.preset} on {view.device} in {view.took()}{view.chunk_text()}, "
            f"cameras: {cameras.describe(view.params)} (run {view.run_id})."
        )
        if view.retry_of:
            st.caption(
                f"A re-run of run {view.retry_of} with untrained demo weights, on "
                + (
                    "the same frames."
                    if view.retry_frames == "exact"
                    else "its frames re-read from the run folder (saved as JPEG q95: close to, not exactly, the first run's)."
                )
            )
        for col, key in zip(st.columns(3), ("depth", "cloud", "exports")):
            with col:
                ui.link(key)
    elif view.status == "cancelled":
        st.info(
            f"Cancelled: run {view.run_id} was stopped ({md(view.message)}). Its frames are kept in the run folder.",
            icon="⏹️",
        )
        run_form.resume_button(ctx, view.run_id)
    else:
        ui.show_error(f"Run {view.run_id} failed. {view.message}", view.traceback)
        st.caption("Its frames are kept in the run folder.")
        run_form.resume_button(ctx, view.run_id)
        if view.model_unavailable and st.button(
            "Use untrained demo weights and run again",
            type="primary",
            key="rc_use_demo",
            on_click=run_form.use_demo_weights,  # the weights choice follows (a callback: the radio is drawn above)
            help="Builds untrained weights from the preset once (about a second for DA3 Small) and re-runs the same frames.",
        ):
            run_form.retry_with_demo_weights(ctx, view.run_dir)
