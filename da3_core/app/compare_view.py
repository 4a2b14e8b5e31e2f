"""The Compare page's sections: two runs side by side, a run scored against its reference, and
the evaluate-a-folder flow (a COLMAP model and its images, run at two settings, one table).

Nothing here computes a metric: every comparison is a `da3_core.runs.compare.CompareRequest`
run by the server's `Comparer` (a spawned child process held by the run service). The page
never blocks: a fragment re-runs twice a second while a comparison is queued or running and
redraws the page when it ends; results are read from the session folder, so a reload finds
them. Nothing here imports torch or scipy.
"""

from __future__ import annotations

import collections
import json
import time
from pathlib import Path
from typing import Any, cast

import numpy as np
import streamlit as st

from da3_core import presets
from da3_core.app import session
from da3_core.app.text import md
from da3_core.app.ui import PageContext, link, show_error
from da3_core.app.view_state import keep, kept, kept_index
from da3_core.contract import ModelSpec
from da3_core.runs import compare, records
from da3_core.scene import compare_figures

EXAMPLES_ROOT = Path(__file__).resolve().parents[2] / "examples"
EVALUATIONS_FILE = "evaluations.json"
SHOW = {"both": "Both", "a": "A only", "b": "B only"}
EVAL_RES_DEFAULTS = (280, 504)


# --------------------------------------------------------------------------------------
# Runs and labels
# --------------------------------------------------------------------------------------


def done_runs(ctx: PageContext) -> list[records.RunMeta]:
    """This session's finished runs, newest first."""
    return [m for m in session.list_runs(ctx.settings) if m.status == "done"]


def run_label(meta: records.RunMeta, twins: int = 1) -> str:
    """``label · res 504 · cameras estimated`` (and the id's tail when two read alike)."""
    p = meta.params or {}
    bits = [meta.label()]
    if "process_res" in p:
        bits.append(f"res {p['process_res']}")
    bits.append(f"cameras {p.get('cameras', 'estimated')}")
    text = " · ".join(bits)
    return text + (f" · {meta.run_id[-6:]}" if twins > 1 else "")


def labels_of(metas: list[records.RunMeta]) -> dict[str, str]:
    counts = collections.Counter(run_label(m) for m in metas)
    return {m.run_id: run_label(m, counts[run_label(m)]) for m in metas}


def _fmt(value: float) -> str:
    if value is None or not np.isfinite(value):
        return "—" if value is None or np.isnan(value) else ("∞" if value > 0 else "-∞")
    if value == 0:
        return "0"
    return f"{value:.4g}"


# --------------------------------------------------------------------------------------
# One comparison job: cached result, live status, or a button
# --------------------------------------------------------------------------------------


def job_block(
    ctx: PageContext, request: compare.CompareRequest, button: str, key: str
) -> compare.CompareSummary | None:
    """The result of ``request`` when it is on disk; else its live status while it runs (a
    fragment that redraws the page when it ends), its error, or the button that starts it."""
    out = Path(request.out)
    cached = compare.read_cached(out)
    if cached is not None:
        return cached
    comparer = ctx.service.comparer
    job = comparer.job(out)
    if job is not None and not job.pending:
        summary = job.summary()
        if summary is not None:  # done, but its files could not be read back: show it from memory
            return summary
        if job.error:
            show_error(f"The comparison failed: {job.error}")
    if job is None or not job.pending:
        if not st.button(button, key=key, type="primary"):
            return None
        try:
            job = comparer.submit(request)
        except Exception as exc:  # noqa: BLE001 - shown with its reason; nothing is lost
            show_error(f"The comparison could not be started: {type(exc).__name__}: {exc}")
            return None
    with st.container():
        st.fragment(run_every=0.5)(_status_body)(ctx, str(out), key)
    return None


def _status_body(ctx: PageContext, out: str, key: str) -> None:
    job = ctx.service.comparer.job(out)
    if job is None or not job.pending:
        st.rerun(scope="app")  # it ended: the page draws the result or the error
        return
    with st.container(border=True):
        st.markdown(f"**{md(job.line)}**")
        if not job.future.running() and st.button("Cancel", key=f"{key}_cancel"):
            ctx.service.comparer.cancel(out)
            st.rerun(scope="app")


def show_summary(
    summary: compare.CompareSummary, arrays: dict[str, np.ndarray], labels: tuple[str, str], key: str
) -> None:
    """The numbers with their definitions, the overlay with its toggle, the difference maps."""
    threshold = (
        f" · F1 threshold {summary.threshold:.3g} {summary.unit} ({summary.threshold_pct:g} % of the reference's median depth)"
        if summary.threshold is not None
        else ""
    )
    aligned = (
        f"{labels[1]} aligned to {labels[0]} by a similarity fitted to the {summary.alignment} (scale {summary.scale:.4g})"
        if summary.alignment not in ("none", "none (relative poses)")
        else "relative poses (no alignment needed)"
        if summary.alignment.startswith("none (")
        else "no alignment (no cameras)"
    )
    st.caption(
        md(
            f"{len(summary.shared)} shared frame(s) · {aligned}{threshold} · computed in a child process in "
            f"{summary.seconds:.2f} s"
        )
    )
    rows = [{"metric": r["metric"], "value": _fmt(r["value"]), "definition": r["definition"]} for r in summary.table()]
    st.table(rows)
    for note in summary.notes:
        st.caption(md(note))
    if "cloud_a" in arrays and "cloud_b" in arrays:
        show = st.radio(
            "Show",
            list(SHOW),
            format_func=SHOW.__getitem__,
            horizontal=True,
            key=f"{key}_show",
            help=f"{labels[0]} in blue, {labels[1]} in orange (aligned into {labels[0]}'s world).",
        )
        fig = compare_figures.overlay_figure(
            arrays["cloud_a"],
            arrays["cloud_b"],
            show=cast(compare_figures.Show, show),
            labels=labels,
            uirevision=summary.key,
        )
        st.plotly_chart(fig, key=f"{key}_fig", width="stretch", config={"displaylogo": False})
        st.caption(
            f"{labels[0]} blue, {labels[1]} orange · a seeded sample of at most {compare.OVERLAY_POINTS:,} points each "
            "(the numbers use every valid pixel, up to 200,000 per side)"
        )
    if "depth_diff" in arrays and len(arrays["depth_diff"]):
        names = [str(n) for n in arrays["names"]]
        i = st.selectbox(
            "View", list(range(len(names))), format_func=lambda j: f"{j + 1}: {names[j]}", key=f"{key}_view"
        )
        per_abs = arrays["per_view_abs_rel"][i]
        per_delta = arrays["per_view_delta_1"][i]
        scale = arrays["per_view_scale"][i]
        fig = compare_figures.difference_figure(
            arrays["depth_diff"][i], stride=int(arrays.get("diff_stride", np.asarray(1)))
        )
        st.plotly_chart(fig, key=f"{key}_diff", width="stretch", config={"displaylogo": False})
        st.caption(
            md(
                f"(s·d_{labels[1]} − d_{labels[0]}) / d_{labels[0]} after this view's median scale s = {_fmt(scale)} · "
                f"AbsRel {_fmt(per_abs)} · δ<1.25 {_fmt(per_delta)} · blue: {labels[1]} nearer, red: farther, grey: "
                "no depth in one of them"
            )
        )


# --------------------------------------------------------------------------------------
# Section 1: two runs
# --------------------------------------------------------------------------------------


def threshold_input(key: str) -> float:
    return float(
        st.number_input(
            "F1 threshold (% of the reference's median depth)",
            min_value=0.1,
            max_value=50.0,
            value=compare.DEFAULT_THRESHOLD_PCT,
            step=0.5,
            key=key,
            help="A point counts as matched (precision, recall, F1) when its nearest neighbour in the other cloud is "
            "closer than this. DA3's benchmark uses 5 cm on rooms a few metres deep, about 1-2 %.",
        )
    )


def compare_section(ctx: PageContext) -> None:
    metas = done_runs(ctx)
    if len(metas) < 2:
        st.info(
            "Comparing needs two finished runs of the same frames in this session: run the same photos or example twice "
            "with different settings (preset, process_res, known or estimated cameras)."
        )
        link("reconstruct", "Reconstruct: make the runs")
        return
    by_id = {m.run_id: m for m in metas}
    ids = list(by_id)
    labels = labels_of(metas)
    cols = st.columns(2)
    kept_a = kept("cmp_a", ids[1])
    a = cols[0].selectbox(
        "Run A (the reference)",
        ids,
        index=ids.index(kept_a) if kept_a in ids else 1,
        key="cmp_a",
        format_func=labels.__getitem__,
    )
    keep("cmp_a", a)
    b = cols[1].selectbox(
        "Run B (aligned to A)", ids, index=kept_index("cmp_b", ids), key="cmp_b", format_func=labels.__getitem__
    )
    keep("cmp_b", b)
    ma, mb = by_id[a], by_id[b]
    if a == b:
        st.warning("Pick two different runs.")
        return
    shared = [n for n in ma.names if n in set(mb.names)]
    if not shared:
        st.warning(
            md(
                f"Runs {a} and {b} share no frame (frames are matched by name: {', '.join(ma.names[:3])}… against "
                f"{', '.join(mb.names[:3])}…). Compare two runs of the same photos or example."
            )
        )
        return
    st.caption(f"{len(shared)} shared frame(s) of {len(ma.names)} in A and {len(mb.names)} in B.")
    pct = threshold_input("cmp_thr")
    dir_a, dir_b = session.run_dir(ctx.settings, a), session.run_dir(ctx.settings, b)
    out = compare.cache_dir(ctx.session_dir) / compare.cache_key(a, b, pct)
    request = compare.CompareRequest("runs", str(dir_a), str(dir_b), pct, str(out))
    summary = job_block(ctx, request, "Compare", "cmp_go")
    if summary is not None:
        show_summary(summary, compare.read_arrays(out), ("A", "B"), "cmp")


# --------------------------------------------------------------------------------------
# Section 2: against a reference
# --------------------------------------------------------------------------------------


def reference_section(ctx: PageContext) -> None:
    metas = done_runs(ctx)
    refs = {}
    for m in metas:
        ref = compare.reference_for(session.run_dir(ctx.settings, m.run_id), m, EXAMPLES_ROOT)
        if ref is not None:
            refs[m.run_id] = ref
    if not refs:
        st.info(
            "No run of this session has a reference yet. A run of a bundled example is scored against the example's "
            "true cameras and depth; a run given known cameras (COLMAP or JSON) against those cameras; or evaluate a "
            "folder below."
        )
        return
    labels = labels_of([m for m in metas if m.run_id in refs])
    ids = list(refs)
    rid = st.selectbox(
        "Run", ids, index=kept_index("cmp_ref_run", ids), key="cmp_ref_run", format_func=labels.__getitem__
    )
    keep("cmp_ref_run", rid)
    ref = refs[rid]
    st.caption(md(f"Scored against {ref.label}."))
    pct = threshold_input("cmp_ref_thr") if ref.kind == "example" else compare.DEFAULT_THRESHOLD_PCT
    out = compare.cache_dir(ctx.session_dir) / compare.cache_key(rid, None, pct, ref.kind)
    request = compare.CompareRequest(ref.kind, str(session.run_dir(ctx.settings, rid)), "", pct, str(out), ref.path)
    summary = job_block(ctx, request, "Score against the reference", "cmp_ref_go")
    if summary is not None:
        show_summary(summary, compare.read_arrays(out), ("truth", "run"), "cmp_ref")


# --------------------------------------------------------------------------------------
# Section 3: evaluate a folder
# --------------------------------------------------------------------------------------


def read_evaluations(session_dir: Path) -> list[dict[str, Any]]:
    """The evaluations started in this session (newest last); [] when none or unreadable."""
    try:
        data = json.loads((compare.cache_dir(session_dir) / EVALUATIONS_FILE).read_text())
    except (OSError, ValueError):
        return []
    return (
        [e for e in data if isinstance(e, dict) and isinstance(e.get("runs"), list)] if isinstance(data, list) else []
    )


def add_evaluation(session_dir: Path, entry: dict[str, Any]) -> None:
    folder = compare.cache_dir(session_dir)
    folder.mkdir(parents=True, exist_ok=True)
    found = read_evaluations(session_dir) + [entry]
    tmp = folder / (EVALUATIONS_FILE + ".tmp")
    tmp.write_text(json.dumps(found, indent=1))
    tmp.replace(folder / EVALUATIONS_FILE)


def evaluate_section(ctx: PageContext) -> None:
    from da3_core.app import run_form
    from da3_core.media import camera_files, camera_match, cameras, inputs

    st.caption(
        "Upload a COLMAP model (cameras + images, .txt or .bin, or a .zip) and its images. Both settings run through "
        "the normal queue with DA3 estimating the cameras (the model's cameras are not given to DA3), and each run's "
        "cameras are scored against COLMAP's."
    )
    cam_files = st.file_uploader(
        "COLMAP model", type=list(cameras.CAMERA_EXTENSIONS), accept_multiple_files=True, key="cmp_ev_cams"
    )
    img_files = st.file_uploader(
        "Its images", type=list(inputs.IMAGE_EXTENSIONS), accept_multiple_files=True, key="cmp_ev_imgs"
    )
    model, _preset = run_form.model_picker(ctx)
    model_b = second_weights(model)
    cols = st.columns(2)
    res = [
        int(
            cols[i].number_input(
                f"Setting {'AB'[i]}: process_res",
                min_value=14,
                max_value=2016,
                value=EVAL_RES_DEFAULTS[i],
                step=14,
                key=f"cmp_ev_res_{'ab'[i]}",
            )
        )
        for i in range(2)
    ]
    same = model_b is None or model_b == model
    ready = bool(cam_files and img_files and model is not None and (res[0] != res[1] or not same))
    if res[0] == res[1] and same:
        st.caption("Pick two different weights or two different process_res values.")
    if st.button("Run both settings", key="cmp_ev_go", disabled=not ready) and model is not None:
        models = [model, model_b or model]
        _start_evaluation(ctx, cam_files or [], img_files or [], models, res, camera_files, camera_match, cameras)
    evaluations = read_evaluations(ctx.session_dir)
    if evaluations:
        _show_evaluation(ctx, evaluations[-1])


def second_weights(model: ModelSpec | None) -> ModelSpec | None:
    """Setting B's weights: another preset of the same kind (hub or demo) as setting A's, or
    A's own (None when A is a local folder: there is nothing of the same kind to offer)."""
    if model is None or model.kind == "local":
        return None
    current = presets.preset_for(model.ref)
    if current is None:
        return None
    names = [current.name] + [p.name for p in presets.PRESETS if p.multi_view and p.name != current.name]
    chosen = st.selectbox(
        "Setting B: weights",
        names,
        format_func=lambda n: (
            f"{presets.PRESETS_BY_NAME[n].label} (as setting A)"
            if n == current.name
            else presets.PRESETS_BY_NAME[n].label
        ),
        key="cmp_ev_model_b",
        help="Setting A uses the weights chosen above; B may use another preset of the same kind "
        "(untrained demo weights of another preset are built in the worker on first use).",
    )
    if chosen == current.name:
        return model
    other = presets.PRESETS_BY_NAME[chosen]
    return ModelSpec(model.kind, other.name if model.kind == "demo" else other.hub_id)


def setting_label(model: ModelSpec, res: int, both_models_same: bool) -> str:
    """A setting's column title: its process_res, and its weights when the two differ."""
    if both_models_same:
        return f"process_res {res}"
    preset = presets.preset_for(model.ref)
    return f"{preset.label if preset else model.ref} · process_res {res}"


def _start_evaluation(
    ctx: PageContext,
    cam_files: list,
    img_files: list,
    models: list[ModelSpec],
    res: list[int],
    camera_files,
    camera_match,
    cameras,
) -> None:
    from da3_core.app.run_form import RunParams
    from da3_core.media import batches
    from da3_core.presets import REF_VIEW_STRATEGIES
    from da3_core.runs.service import RunRefused

    batch = batches.load_batch(img_files, ctx.settings)
    for bad in batch.rejected:
        st.warning(md(bad.reason))
    if len(batch.frames) < 2:
        st.error("The evaluation needs at least 2 readable images.")
        return
    try:
        read = camera_files.read_camera_files([(f.name, f.getvalue()) for f in cam_files])
    except cameras.CameraFileError as exc:
        st.error(md(f"COLMAP model not used: {exc}"))
        return
    names, sizes = camera_match.names_and_sizes(batch.frames)
    match = camera_match.match_cameras(read, names, sizes)
    if len(match.matched) < 2:
        st.error(md(f"Fewer than 2 images have a camera in the model: {match.summary()}"))
        return
    images = [f.image for f in batch.frames]
    run_ids, labels = [], []
    same = models[0] == models[1]
    for model, r in zip(models, res):
        label = setting_label(model, r, same)
        params = RunParams(
            process_res=r,
            process_res_method="upper_bound_resize",
            ref_view_strategy=REF_VIEW_STRATEGIES[0],
            reference_view=None,
            infer_gs=False,
            device="auto",
        ).as_dict()
        try:
            active = ctx.service.submit(ctx.session_dir, images, names, "upload", model, params)
        except RunRefused as exc:
            st.error(md(f"Setting {label} was refused: {exc}"))
            continue
        except Exception as exc:  # noqa: BLE001 - said with its reason; the other run goes on
            show_error(f"Setting {label} could not be started: {type(exc).__name__}: {exc}")
            continue
        compare.save_reference(active.run_dir, match.extrinsics, match.intrinsics, names, match.source)
        session.watch(active)
        run_ids.append(active.run_id)
        labels.append(label)
    if run_ids:
        add_evaluation(
            ctx.session_dir,
            {"created": time.time(), "runs": run_ids, "labels": labels, "source": match.source, "frames": len(names)},
        )


def _show_evaluation(ctx: PageContext, entry: dict[str, Any]) -> None:
    run_ids = [str(r) for r in entry["runs"]]
    labels = [str(x) for x in entry.get("labels", run_ids)]
    st.markdown(
        f"**Evaluation of {entry.get('frames', '?')} frames against the {md(str(entry.get('source', '')))} cameras**"
    )
    metas = {}
    for rid in run_ids:
        try:
            metas[rid] = records.read_meta(session.run_dir(ctx.settings, rid))
        except (OSError, ValueError):
            st.warning(md(f"Run {rid} of this evaluation is gone."))
    pending = [rid for rid, m in metas.items() if m.status == "pending"]
    if pending:
        for rid in pending:
            view = session.view_of(ctx.service, session.run_dir(ctx.settings, rid))
            st.caption(md(f"{labels[run_ids.index(rid)]}: {view.line if view is not None else 'pending'}"))
        with st.container():
            st.fragment(run_every=1.0)(_evaluation_poll)(ctx, pending)
        return
    for rid, m in metas.items():
        if m.status != "done":
            st.warning(md(f"{labels[run_ids.index(rid)]} (run {rid}) {m.status}: {m.error}"))
    columns: dict[str, compare.CompareSummary] = {}
    waiting = []
    for rid, m in metas.items():
        if m.status != "done":
            continue
        run_dir = session.run_dir(ctx.settings, rid)
        ref = compare.reference_for(run_dir, m, EXAMPLES_ROOT)
        if ref is None or ref.kind != "cameras":
            continue
        out = compare.cache_dir(ctx.session_dir) / compare.cache_key(
            rid, None, compare.DEFAULT_THRESHOLD_PCT, "cameras"
        )
        cached = compare.read_cached(out)
        if cached is not None:
            columns[labels[run_ids.index(rid)]] = cached
            continue
        job = ctx.service.comparer.job(out)
        if job is None:
            job = ctx.service.comparer.submit(
                compare.CompareRequest("cameras", str(run_dir), "", compare.DEFAULT_THRESHOLD_PCT, str(out), ref.path)
            )
        if job.pending:
            waiting.append(str(out))
        elif job.error:
            show_error(f"Scoring {labels[run_ids.index(rid)]} failed: {job.error}")
    if waiting:
        st.caption("Scoring the cameras in a child process…")
        with st.container():
            st.fragment(run_every=0.5)(_scores_poll)(ctx, waiting)
        return
    if not columns:
        return
    keys = [k for k in compare.DISPLAY_ORDER if any(k in s.numbers for s in columns.values())]
    definitions = {k: d for s in columns.values() for k, d in s.definitions.items()}
    rows = [
        {
            "metric": compare.LABELS.get(k, k),
            **{c: _fmt(s.numbers.get(k, float("nan"))) for c, s in columns.items()},
            "definition": definitions[k],
        }
        for k in keys
    ]
    st.table(rows)
    st.caption("Cameras only: a COLMAP model holds no dense depth, so depth and clouds are not scored here.")


def _evaluation_poll(ctx: PageContext, pending: list[str]) -> None:
    for rid in pending:
        try:
            if records.read_meta(session.run_dir(ctx.settings, rid)).status == "pending":
                return
        except (OSError, ValueError):
            continue
    st.rerun(scope="app")


def _scores_poll(ctx: PageContext, outs: list[str]) -> None:
    if any((job := ctx.service.comparer.job(o)) is not None and job.pending for o in outs):
        return
    st.rerun(scope="app")


def render(ctx: PageContext) -> None:
    """The whole Compare page below its title."""
    st.subheader("Compare two runs")
    compare_section(ctx)
    st.divider()
    st.subheader("Score against a reference")
    reference_section(ctx)
    st.divider()
    st.subheader("Evaluate a folder")
    evaluate_section(ctx)
