"""Exports: every format as a download, made when asked and kept in the run folder."""

from __future__ import annotations

import dataclasses
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import streamlit as st

from da3_core import presets
from da3_core.app import session, ui, view_state, views
from da3_core.app.text import md
from da3_core.app.viewer import glb_viewer_html
from da3_core.runner.protocol import GPUError
from da3_core.runs import exports, records
from da3_core.scene import depth_video, export, features, geometry, mesh_build, voxel

ctx = ui.page_setup("Exports", "📦")
st.title("Exports")
run_dir, meta, rec = ui.require_active_run(ctx)
out_dir = records.exports_dir(run_dir)
cs = view_state.cloud_settings(rec, widgets=False)
st.caption(
    f"Point formats use the Point cloud page's filters: {cs.filters.conf_percentile:g}% confidence percentile, "
    f"max {cs.filters.max_points:,} points, cameras {'on' if cs.show_cameras else 'off'}. Files are also written to the run folder."
)


cameras, world = session.world_points(meta.run_id, rec, cs.fov_deg)  # cached; the downloads below reuse it


def hidden(rel: Path) -> bool:
    """A part of the folder not offered by itself: anything under a hidden name (files being
    written are hidden until complete)."""
    return any(part.startswith(".") for part in rel.parts)


# A chunked run keeps one folder per chunk and its memory-mapped arrays: listed as groups.
GROUPED = {
    "input": "the frames as the model received them",
    "chunks": "each chunk as it landed (resume reads them)",
    "result": "the assembled arrays (.npy, memory-mapped)",
}


def zip_folder(folder: Path, top: str) -> bytes:
    """``folder`` as a zip whose entries sit under ``top/`` (hidden files left out)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(folder.rglob("*")):
            if p.is_file() and not hidden(p.relative_to(folder)):
                zf.write(p, f"{top}/{p.relative_to(folder)}")
    return buf.getvalue()


VOXEL_TARGET_MAX = 1_000_000  # the prefilled voxel leaves min(this, a quarter of the filtered points)


def voxel_cloud() -> tuple[geometry.PointCloud, float] | None:
    """The "Voxel downsampling" option: None when off, else the filtered cloud merged to one
    point per voxel and the voxel size. Drawn above the downloads; GLB and PLY use its cloud."""
    if not st.toggle(
        "Voxel downsampling",
        key="ex_voxel",
        help="GLB and PLY keep one point per occupied voxel (mean position and colour) of the filtered "
        "points, so overlapping views no longer stack duplicate points and density evens out.",
    ):
        return None
    base = geometry.apply_filters(world, cs.filters)
    if len(base) == 0:
        st.caption("No point passes the filters: nothing to downsample.")
        return None
    # Prefill with a size that leaves about a quarter of the points (at most 1,000,000), once per
    # run and filters: a value the user typed stays until those change.
    basis = (meta.run_id, cs.filters, cs.fov_deg)
    if st.session_state.get("ex_voxel_basis") != basis or "ex_voxel_size" not in st.session_state:
        target = max(1, min(VOXEL_TARGET_MAX, len(base) // 4))
        st.session_state["ex_voxel_size"] = float(f"{voxel.suggest_voxel(base.points, target):.3g}")
        st.session_state["ex_voxel_basis"] = basis
    size = st.number_input(
        f"Voxel size ({base.unit})",
        min_value=1e-9,
        format="%.4g",
        key="ex_voxel_size",
        step=float(10.0 ** (np.floor(np.log10(st.session_state["ex_voxel_size"])) - 1)),
        help=f"Edge of the cubic voxels, in the run's unit. Prefilled with the size that leaves about a quarter of the "
        f"filtered points (at most {VOXEL_TARGET_MAX:,}); larger voxels leave fewer points.",
    )
    points, colors = voxel.voxel_downsample(base.points, base.colors, float(size))
    # Merged points come from several pixels: they have no view or pixel of their own (-1).
    none = np.full(len(points), -1, dtype=np.int32)
    merged = dataclasses.replace(base, points=points, colors=colors, view_index=none, pixel_index=none)
    st.caption(
        f"{len(points):,} points after voxel downsampling with {float(size):.4g} {base.unit} voxels "
        f"(from {len(base):,} filtered points); GLB and PLY below use them."
    )
    return merged, float(size)


voxelled = voxel_cloud()


def filename(fmt: str) -> str:
    """The file name of a format; point formats say the voxel size when downsampled."""
    name = export.FILENAMES[fmt]
    if voxelled is not None and fmt in ("glb", "ply"):
        stem, ext = name.rsplit(".", 1)
        name = f"{stem}_voxel{voxelled[1]:.4g}.{ext}"
    return name


def made(fmt: str, colorized: bool = False):
    """A deferred download: the file is built (and saved in the run folder) only when clicked.

    It runs in a thread of its own, outside the script run: it must not touch st.session_state.
    """
    merged = voxelled[0] if voxelled is not None else None
    name = filename(fmt)

    def build() -> bytes:
        cloud = None
        if fmt in ("glb", "ply"):
            cloud = merged if merged is not None else geometry.apply_filters(world, cs.filters)
        data = export.export_bytes(
            fmt, rec, cloud, cameras, show_cameras=cs.show_cameras, colorized_depth=colorized, hw=world.shape[1:]
        )
        export.write_bytes(out_dir, name, data)
        return data

    return build


DESCRIPTIONS = {
    "glb": (
        "GLB scene",
        "points in true colour + camera wireframes (Blender, three.js, any glTF viewer)",
        "model/gltf-binary",
    ),
    "ply": ("PLY point cloud", "binary, with colours (MeshLab, CloudCompare, Open3D)", "application/octet-stream"),
    "npz": (
        "NPZ arrays",
        "depth, conf, extrinsics (N,3,4 world-to-camera), intrinsics, image, sky: DA3's field names",
        "application/octet-stream",
    ),
    "depth_png": (
        "16-bit depth PNGs",
        "one PNG per view in a zip, with depth_scale.json to recover values",
        "application/zip",
    ),
    "normals_png": (
        "16-bit normal PNGs",
        "one RGB PNG per view in a zip (normal = value / 65535 * 2 - 1; x, y, z in the camera's OpenCV axes), "
        "with normals.json",
        "application/zip",
    ),
}
for fmt in export.EXPORT_FORMATS:
    title, what, mime = DESCRIPTIONS[fmt]
    c1, c2 = st.columns([3, 2])
    c1.markdown(f"**{title}** — {what}")
    c2.download_button(
        f"Download {filename(fmt)}",
        data=made(fmt),
        file_name=f"{meta.run_id}-{filename(fmt)}",
        mime=mime,
        key=f"ex_{fmt}",
        width="stretch",
        on_click="ignore",
    )

video_file, png16_file = out_dir / depth_video.VIDEO_FILENAME, out_dir / depth_video.PNG_SEQUENCE_FILENAME
if video_file.is_file() or png16_file.is_file():
    st.divider()
    st.markdown("**Depth of every frame** (written by the chunked run, one depth scale for all frames)")
    if video_file.is_file():
        st.video(str(video_file))
        st.download_button(
            f"Download {depth_video.VIDEO_FILENAME}",
            data=lambda: video_file.read_bytes(),
            file_name=f"{meta.run_id}-{depth_video.VIDEO_FILENAME}",
            mime="video/mp4",
            key="ex_depth_video",
            on_click="ignore",
        )
    if png16_file.is_file():
        c1, c2 = st.columns([3, 2])
        try:  # the central directory and a small json: cheap even for thousands of frames
            with zipfile.ZipFile(png16_file) as zf:
                doc = json.loads(zf.read(export.DEPTH_SCALE_FILE))
            lo, hi = doc["range"]
            about = f"{len(doc['views']):,} frames, depth {lo:.4g}..{hi:.4g} {doc['unit']}, one scale for all"
        except (OSError, zipfile.BadZipFile, KeyError, ValueError, TypeError):
            about = "one scale for all frames"
        c1.markdown(f"**16-bit depth PNGs of every frame** — {about}; depth_scale.json recovers the values")
        c2.download_button(
            f"Download {depth_video.PNG_SEQUENCE_FILENAME}",
            data=lambda: png16_file.read_bytes(),
            file_name=f"{meta.run_id}-{depth_video.PNG_SEQUENCE_FILENAME}",
            mime="application/zip",
            key="ex_depth_png16",
            width="stretch",
            on_click="ignore",
        )

st.divider()
st.markdown("**Made by DA3's own exporters in the worker**")
st.caption(
    "Each is a job of the worker's queue: it waits its turn, can be cancelled, is written to the run folder's "
    "exports/ under a hidden name and renamed when complete, and this page finds it again after a reload."
)


def worker_export(kind: str, label: str, key: str, c1, c2, options: dict) -> None:
    """One export made in the worker: its button in ``c2`` (off while a job of this kind is
    pending), and in ``c1`` its estimate, its live status (`ui.export_status`) and, once done,
    its end; the download (in ``c2``) only once the job is done."""
    before = ctx.service.export_status(run_dir, kind)
    pending = before is not None and before.pending
    if meta.status != "done":
        c2.caption("Available once the run is done.")
        return
    if c2.button(
        label,
        key=key,
        width="stretch",
        disabled=pending,
        help="Being made: see its status."
        if pending
        else "Queued on the worker; this page shows its place and progress.",
    ):
        try:
            ctx.service.submit_export(run_dir, kind, rec, **options)
        except (ValueError, OSError, GPUError) as exc:
            ui.show_error(
                f"The {exports.EXPORT_TITLES[kind]} could not be queued: {getattr(exc, 'message', exc)}",
                getattr(exc, "remote_traceback", ""),
            )
        else:
            st.rerun()  # drawn again with the button off and the job's status
    with c1:
        status = ui.export_status(ctx, run_dir, kind)
    if status is None or status.pending:
        if status is None:
            try:
                c1.caption(md(ctx.service.export_estimate(run_dir, kind, rec, **options).note()))
            except (ValueError, OSError):
                pass
        return
    if status.ok:
        made = export_made(kind)
        if made is None:
            c1.caption(f"The {status.title} made earlier is no longer in the run folder: make it again.")
            return
        c1.success(export_done_text(status))
        offer_download(kind, made, c2)
    elif status.status == "cancelled":
        c1.info(f"The {status.title} was cancelled ({md(status.message)}); nothing half-written was kept.", icon="⏹️")
    else:
        with c1:
            ui.show_error(f"The {status.title} failed: {status.message}", status.traceback)


def export_made(kind: str) -> Path | None:
    """The finished export on disk (the COLMAP or mesh folder, the PLY, the mp4, the NPZ), or None if gone."""
    target = exports.export_target(run_dir, kind)
    if kind in ("colmap", "mesh"):
        return target if target.is_dir() and any(target.iterdir()) else None
    return target if target.is_file() else None


def export_done_text(status) -> str:
    names = ", ".join(Path(f).name for f in status.files) or "no file"
    if status.kind == "colmap":
        what = f"COLMAP model written: {names} (exports/colmap in the run folder)"
    elif status.kind == "gs_ply":
        what = "3DGS PLY written (exports/gs_ply/0000.ply in the run folder)"
    elif status.kind == "mesh":
        info = status.info
        what = (
            f"Fused mesh: {int(info.get('fused_faces') or 0):,} triangles ({info.get('tsdf', {}).get('describe', '')}); "
            f"per-view meshes: {int(info.get('view_faces') or 0):,} triangles (pixel stride {info.get('view_stride')}); "
            f"fusion {float(info.get('fuse_s') or 0):.1f} s, worker peak memory {info.get('peak_rss_mb')} MB. "
            "Saved in the run folder (exports/mesh)"
        )
    elif status.kind == "features":
        info = status.info
        what = (
            f"Feature maps of layers {', '.join(map(str, info.get('layers') or []))}: {info.get('views')} views, "
            f"{'x'.join(map(str, info.get('grid') or []))} cells of {info.get('channels')} channels, float16, "
            f"{info.get('mb')} MB. Saved in the run folder (exports/{features.FEATURES_FILENAME})"
        )
    else:
        info = status.info
        what = (
            f"{info.get('frames')} frames, {info.get('width')}×{info.get('height')}, rendered in {float(info.get('render_s') or 0):.1f} s"
            + (f" (+{float(info['compile_s']):.0f} s compiling gsplat)" if info.get("compile_s") else "")
            + ". Saved in the run folder (exports/gs_video.mp4)"
        )
    return f"{what}, in {status.took()}." if status.took() else f"{what}."


def file_download(where, label: str, path: Path, name: str, mime: str, key: str) -> None:
    """A download button for a finished file, read only when clicked."""
    where.download_button(
        f"Download {label}",
        data=lambda: path.read_bytes(),
        file_name=f"{meta.run_id}-{name}",
        mime=mime,
        key=key,
        width="stretch",
        on_click="ignore",
    )


# kind -> (label, file name after the run id, MIME type, widget key) of single-file exports.
SINGLE_FILE = {
    "features": ("feature maps (NPZ)", features.FEATURES_FILENAME, "application/octet-stream", "ex_features_dl"),
    "gs_ply": ("3DGS PLY", "gaussians.ply", "application/octet-stream", "ex_gs_ply_dl"),
}


def offer_download(kind: str, made: Path, where) -> None:
    """The download of a finished export (only when its job is done: never a half-written file)."""
    if kind == "colmap":
        where.download_button(
            "Download COLMAP model (zip)",
            data=lambda: zip_folder(made, f"{meta.run_id}-colmap"),
            file_name=f"{meta.run_id}-colmap.zip",
            mime="application/zip",
            key="ex_colmap_zip",
            width="stretch",
            on_click="ignore",
        )
    elif kind == "mesh":
        files = views.mesh_files(run_dir)
        for fmt in ("glb", "ply", "obj", "views"):
            if fmt in files:
                label = "per-view meshes (GLB)" if fmt == "views" else f"fused mesh ({fmt.upper()})"
                mime = "model/gltf-binary" if files[fmt].suffix == ".glb" else "application/octet-stream"
                file_download(where, label, files[fmt], f"mesh-{files[fmt].name}", mime, f"ex_mesh_dl_{fmt}")
    elif kind in SINGLE_FILE:
        label, name, mime, key = SINGLE_FILE[kind]
        file_download(where, label, made, name, mime, key)
    else:
        st.video(str(made))
        st.download_button(
            "Download the video (mp4)",
            data=lambda: made.read_bytes(),
            file_name=f"{meta.run_id}-gs-video.mp4",
            mime="video/mp4",
            key="ex_gsv_dl",
            on_click="ignore",
        )


c1, c2 = st.columns([3, 2])
colmap_reason = None
if not str(rec.params.get("process_res_method", "upper_bound_resize")).endswith("resize"):
    colmap_reason = "this run used a crop method; DA3's COLMAP exporter needs upper_bound_resize or lower_bound_resize"
elif not rec.has_poses or rec.conf is None:
    colmap_reason = f"{rec.preset} predicts no camera poses or confidence"
c1.markdown(
    "**COLMAP sparse model** — cameras, images (named as your frames) and points (binary), for COLMAP, gsplat "
    "and nerfstudio; intrinsics at the frames' size. Reconstruct reads it back as known cameras."
)
if colmap_reason:
    c2.caption(f"Unavailable: {colmap_reason}.")
else:
    worker_export(
        "colmap", "Make COLMAP model", "ex_colmap", c1, c2, {"conf_percentile": float(cs.filters.conf_percentile)}
    )
c1, c2 = st.columns([3, 2])
c1.markdown("**3D Gaussians (3DGS PLY)**")
if rec.gaussians is None:
    c2.caption("Unavailable: this run has no Gaussians (presets with a GS head, with 'Infer 3D Gaussians').")
else:
    worker_export("gs_ply", "Make 3DGS PLY", "ex_gs", c1, c2, {})

if rec.gaussians is not None:
    st.markdown("**Novel-view video of the Gaussians** (DA3's trajectories, rendered in the worker with gsplat)")
    why = ctx.worker_info.get("gs_video_unavailable") if ctx.worker_info else "the worker has not reported yet"
    if why:
        st.caption(f"Unavailable here: {why}")
        made_video = export_made("gs_video")
        if made_video is not None:  # rendered earlier (on a GPU server): still offered
            offer_download("gs_video", made_video, st)
    else:
        c = st.columns(4)
        trajectory = c[0].selectbox(
            "Trajectory",
            presets.GS_TRAJECTORIES,
            key="ex_gsv_trj",
            help="DA3's camera paths: smooth follows the input cameras, extend adds a wander and a dolly zoom in the middle.",
        )
        fps = c[1].number_input("fps", min_value=6, max_value=60, value=24, key="ex_gsv_fps")
        crf = c[2].slider("Quality (crf, lower is better)", min_value=12, max_value=35, value=18, key="ex_gsv_crf")
        depth_panel = c[3].checkbox("Depth beside colour", key="ex_gsv_depth")
        button_row = st.container()  # the button above its status
        worker_export(
            "gs_video",
            "Render the video",
            "ex_gsv",
            st.container(),
            button_row,
            {"trajectory": str(trajectory), "fps": int(fps), "crf": int(crf), "depth_panel": bool(depth_panel)},
        )

st.divider()
st.markdown("**Meshes and feature maps** (worker jobs, like the exports above)")
c1, c2 = st.columns([3, 2])
c1.markdown(
    "**Meshes** — a fused mesh of all views by TSDF fusion (GLB, PLY, OBJ) and one mesh per view cut at depth "
    "jumps (one GLB), with the Point cloud page's confidence and sky filters."
)
mesh_options = {"conf_percentile": float(cs.filters.conf_percentile), "fov_deg": float(cs.fov_deg)}
c1.caption(md(views.mesh_preview_text(meta.run_id, rec, mesh_options["conf_percentile"], mesh_options["fov_deg"])))
worker_export("mesh", "Make meshes", "ex_mesh", c1, c2, mesh_options)
mesh_files = views.mesh_files(run_dir)
mesh_status = ctx.service.export_status(run_dir, "mesh")
if "glb" in mesh_files and mesh_status is not None and mesh_status.ok:
    faces = int(mesh_status.info.get("fused_faces") or 0)
    if faces > mesh_build.VIEWER_MAX_FACES:
        st.caption(
            f"The fused mesh has {faces:,} triangles, more than the in-page viewer draws "
            f"({mesh_build.VIEWER_MAX_FACES:,}): download it instead."
        )
    elif st.toggle("View the fused mesh", key="ex_mesh_view", help="Drawn by the app's three.js viewer, in the page."):
        import streamlit.components.v1 as components

        components.html(glb_viewer_html(mesh_files["glb"].read_bytes(), height=520, show_cameras=False), height=530)

c1, c2 = st.columns([3, 2])
c1.markdown(
    "**Feature maps** — DA3's backbone features (`export_feat_layers`) of the layers you choose, for every view: "
    "one more forward pass on the run's frames, float16 NPZ; seen as PCA colours here and on the Depth maps page."
)
bb = features.backbone(rec.preset)
if bb is None:
    c2.caption(f"Unavailable: the backbone of {rec.preset or 'this checkpoint'} is not known to the app.")
elif records.is_chunked(run_dir):
    c2.caption("Unavailable for chunked runs (no single forward pass).")
else:
    chosen = c1.multiselect(
        f"Layers (0..{bb.blocks - 1}; the depth head reads {', '.join(map(str, bb.out_layers))})",
        list(range(bb.blocks)),
        default=[bb.out_layers[-1]],
        key="ex_feat_layers",
        max_selections=8,
    )
    if chosen:
        worker_export("features", "Make feature maps", "ex_features", c1, c2, {"layers": [int(x) for x in chosen]})
    else:
        c2.caption("Choose at least one layer.")
    saved = views.feature_maps(run_dir) if export_made("features") is not None else None
    if saved is not None:
        layer = st.selectbox("Feature map layer", saved.layers, key="ex_feat_show", format_func=lambda k: f"layer {k}")
        pca = views.feature_pca(meta.run_id, run_dir, int(layer))
        if pca is not None:
            shown = min(saved.n_views, 16)
            cols = st.columns(4)
            for i in range(shown):
                cols[i % 4].image(
                    features.upsample(pca[0][i], pca[1]), caption=f"{i + 1}: {saved.names[i]}", width="stretch"
                )
            if saved.n_views > shown:
                st.caption(
                    f"First {shown} of {saved.n_views} views; every view is in the NPZ and on the Depth maps page."
                )

st.divider()
st.subheader("The run folder")
st.caption(f"`{meta.run_id}` in this session's folder of the server's workspace (`DA3_WORKSPACE`).")
files = sorted(p for p in run_dir.rglob("*") if p.is_file() and not hidden(p.relative_to(run_dir)))
groups: dict[str, list[Path]] = {}
for path in files:
    top = path.relative_to(run_dir).parts[0]
    if top in GROUPED and len(path.relative_to(run_dir).parts) > 1 and (top != "input" or len(meta.names) > 12):
        groups.setdefault(top, []).append(path)
for top, members in groups.items():
    size = sum(p.stat().st_size for p in members)
    st.markdown(
        f"`{top}/` · {len(members):,} files · {size / 2**20:,.1f} MiB · {GROUPED[top]} (in the folder's zip below)"
    )
for path in (p for p in files if not any(p in m for m in groups.values())):
    rel = path.relative_to(run_dir)
    c1, c2 = st.columns([4, 1])
    c1.markdown(f"`{rel}` · {path.stat().st_size / 1024:,.0f} KiB")
    c2.download_button(
        "Download",
        data=lambda p=path: p.read_bytes(),
        file_name=f"{meta.run_id}-{str(rel).replace('/', '-')}",
        key=f"ex_file_{rel}",
        width="stretch",
        on_click="ignore",
    )


st.download_button(
    "Download the whole run folder (zip)",
    data=lambda: zip_folder(run_dir, meta.run_id),
    file_name=f"{meta.run_id}.zip",
    mime="application/zip",
    key="ex_zip",
    type="primary",
    on_click="ignore",
)
