"""Putting a chunked run together: align each chunk to the one before, close loops, and
write the frames into one world frame on disk.

These functions run in a child process of the server (`da3_core.chunks.service`), never in
the Streamlit process: they read chunks from the run folder (`da3_core.chunks.store`),
compute with numpy/scipy (`da3_core.scene.align`, `da3_core.scene.posegraph`) and write
back. Each step is deterministic and idempotent, so a resumed run ends bit-identical to an
uninterrupted one: the same chunks on disk give the same alignments, the same graph and the
same result bytes, whatever was written before the interruption.

The world frame of the result is chunk 0's (DA3's reference view of the first chunk). Chunk
k's transform ``S_k`` maps its own frame into that world: ``S_0`` is the identity and
``S_k = S_{k-1} ∘ A_k``, where ``A_k`` maps chunk k into chunk k-1 (fitted on their shared
frames); loop closure then adjusts every ``S_k`` together.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from da3_core.chunks import store
from da3_core.chunks.plan import ChunkPlan
from da3_core.scene import posegraph
from da3_core.scene.align import Sim3, align_overlap, transform_views

log = logging.getLogger(__name__)

ALIGN_DIR = "align"
GRAPH_FILE = store.GRAPH_FILE
MAX_PAIRS = 100_000
LOOP_WINDOW = 2
"""A loop chunk takes the candidate frame and up to this many neighbours on each side, at each place."""


# -- alignment mode ------------------------------------------------------------------------


def alignment_mode(options: dict[str, Any], meta0: dict[str, Any]) -> str:
    """``"sim3"`` (relative depth), ``"se3"`` (metric: scale kept) or ``"none"`` (known
    cameras put every chunk in the cameras' world already; mono presets have no poses)."""
    if options.get("cameras_given"):
        return "none"
    if not (meta0.get("params") or {}).get("cameras", "estimated").startswith("estimated"):
        return "none"  # "none (monocular preset)": no poses to align
    return "se3" if meta0.get("is_metric") else "sim3"


# -- pairwise alignment ----------------------------------------------------------------------


def _views(
    run_dir: Path, k: int, frames: list[int], loop: bool = False
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray]:
    """depth, conf (None when the chunk has none), extrinsics, intrinsics of chunk ``k``'s
    copies of run frames ``frames``."""
    meta = store.chunk_meta(run_dir, k, loop)
    index = {f: i for i, f in enumerate(meta["frame_ids"])}
    rows = [index[f] for f in frames]
    conf = store.chunk_array(run_dir, k, "conf", loop)
    return (
        np.asarray(store.required_chunk_array(run_dir, k, "depth", loop)[rows]),
        None if conf is None else np.asarray(conf[rows]),
        np.asarray(store.required_chunk_array(run_dir, k, "extrinsics", loop)[rows]),
        np.asarray(store.required_chunk_array(run_dir, k, "intrinsics", loop)[rows]),
    )


def fit(
    run_dir: Path, a: tuple[int, bool], b: tuple[int, bool], frames: list[int], with_scale: bool
) -> tuple[Sim3, dict[str, Any]]:
    """The Sim(3) mapping chunk ``b``'s frame into chunk ``a``'s, fitted on ``frames`` (run
    frame indices both hold). ``a``/``b``: (index, is_loop_chunk)."""
    da, ca, ea, ia = _views(run_dir, a[0], frames, a[1])
    db, cb, eb, ib = _views(run_dir, b[0], frames, b[1])
    sim, info = align_overlap(da, ca, ea, ia, db, cb, eb, ib, with_scale=with_scale, max_pairs=MAX_PAIRS, seed=0)
    return sim, {
        "frames": [int(f) for f in frames],
        "n_pairs": info.n_pairs,
        "rmse": info.rmse,
        "inlier_fraction": info.inlier_fraction,
        "iterations": info.iterations,
    }


def _align_path(run_dir: Path, k: int) -> Path:
    return store.chunks_dir(run_dir) / ALIGN_DIR / f"{k:04d}.json"


def pair_alignment(run_dir: Path, plan: ChunkPlan, k: int, mode: str) -> Sim3:
    """``A_k`` (chunk k into chunk k-1), computed once and saved in ``chunks/align/``."""
    path = _align_path(run_dir, k)
    if path.is_file():
        return Sim3.from_json(store.read_json(path)["sim3"])
    if mode == "none":
        sim, info = Sim3.identity(), {"mode": "none"}
    else:
        first, end = plan.overlap_with_previous(k)
        sim, info = fit(run_dir, (k - 1, False), (k, False), list(range(first, end)), with_scale=mode == "sim3")
    path.parent.mkdir(parents=True, exist_ok=True)
    store.write_json(path, {"sim3": sim.to_json(), "mode": mode, **info})
    return sim


# -- writing frames ---------------------------------------------------------------------------


def _resize_nearest(a: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """(K, h, w, ...) to (K, H, W, ...) by nearest neighbour (chunks whose processed size
    differs from chunk 0's: photos of mixed sizes)."""
    h, w = a.shape[1:3]
    rows = np.minimum((np.arange(hw[0]) * h / hw[0]).astype(int), h - 1)
    cols = np.minimum((np.arange(hw[1]) * w / hw[1]).astype(int), w - 1)
    return a[:, rows][:, :, cols]


def _open_result(run_dir: Path, plan: ChunkPlan, state: dict[str, Any]) -> dict[str, np.memmap]:
    """The result's arrays opened for writing (created from chunk 0's shapes on first use)."""
    folder = store.result_dir(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, np.memmap] = {}
    n = plan.n_frames
    for name in store.FIELDS:
        path = folder / f"{name}.npy"
        sample = store.chunk_array(run_dir, 0, name)
        if sample is None:
            continue
        shape = (n,) + tuple(sample.shape[1:])
        if name == "extrinsics":
            shape = (n, 3, 4)
        if path.is_file():
            out[name] = np.load(path, mmap_mode="r+", allow_pickle=False)
        else:
            out[name] = np.lib.format.open_memmap(path, mode="w+", dtype=sample.dtype, shape=shape)
    return out


def write_chunk_frames(run_dir: Path, plan: ChunkPlan, k: int, sim: Sim3, arrays: dict[str, np.memmap]) -> None:
    """Write the frames chunk ``k`` owns (`ChunkPlan.owned`) into the result, mapped by ``sim``."""
    first, end = plan.owned(k)
    meta = store.chunk_meta(run_dir, k)
    rows = [meta["frame_ids"].index(f) for f in range(first, end)]
    hw = (int(arrays["depth"].shape[1]), int(arrays["depth"].shape[2]))
    depth = np.asarray(store.required_chunk_array(run_dir, k, "depth")[rows], dtype=np.float32)
    own_hw = depth.shape[1:3]
    scale_xy = (hw[1] / own_hw[1], hw[0] / own_hw[0])
    ext = store.chunk_array(run_dir, k, "extrinsics")
    if ext is not None:
        new_ext, s = transform_views(np.asarray(ext[rows], dtype=np.float64), sim)
        arrays["extrinsics"][first:end] = new_ext.astype(np.float32)
        depth = depth * np.float32(s)
    if own_hw != hw:
        depth = _resize_nearest(depth, hw)
    arrays["depth"][first:end] = depth
    for name in ("conf", "images", "sky"):
        if name in arrays:
            source = store.chunk_array(run_dir, k, name)
            if source is None:  # e.g. chunk 0 saw sky and this chunk none: DA3 gives no mask then
                arrays[name][first:end] = False if name == "sky" else 1.0
                continue
            a = np.asarray(source[rows])
            arrays[name][first:end] = _resize_nearest(a, hw) if own_hw != hw else a
    if "intrinsics" in arrays:
        ixt = np.array(store.required_chunk_array(run_dir, k, "intrinsics")[rows], dtype=np.float32)
        if own_hw != hw:
            ixt[:, 0] *= scale_xy[0]
            ixt[:, 1] *= scale_xy[1]
        arrays["intrinsics"][first:end] = ixt


def _flush(arrays: dict[str, np.memmap]) -> None:
    for a in arrays.values():
        a.flush()


def advance(run_dir: str | Path) -> dict[str, Any]:
    """Align and write every chunk that can be, in order, with the sequential transforms.

    Stops at the first chunk not yet on disk (its successors wait for it: a chunk is
    aligned to the one before). Returns the state (``frames_ready``, ``chunks_written``).
    """
    run_dir = Path(run_dir)
    plan, options = store.read_plan(run_dir)
    state = store.read_state(run_dir)
    if state.get("final"):
        return state
    if not store.chunk_done(run_dir, 0):
        return state
    meta0 = store.chunk_meta(run_dir, 0)
    mode = alignment_mode(options, meta0)
    written: dict[str, Any] = dict(state.get("written") or {})
    arrays: dict[str, np.memmap] | None = None
    sim = Sim3.identity()
    ready = 0
    t0 = time.perf_counter()
    for k in range(plan.n_chunks):
        if not store.chunk_done(run_dir, k):
            break
        if k > 0:
            sim = sim.compose(pair_alignment(run_dir, plan, k, mode))
        if written.get(str(k)) != sim.to_json():
            arrays = arrays or _open_result(run_dir, plan, state)
            write_chunk_frames(run_dir, plan, k, sim, arrays)
            written[str(k)] = sim.to_json()
        ready = plan.owned(k)[1]
    if arrays is not None:
        _flush(arrays)
    state.update(
        {
            "n_frames": plan.n_frames,
            "frames_ready": ready,
            "written": written,
            "mode": mode,
            "is_metric": bool(meta0.get("is_metric")),
            "scale_factor": meta0.get("scale_factor"),
            "preset": meta0.get("preset", ""),
            "device": meta0.get("device", ""),
            "final": False,
        }
    )
    store.write_json(store.result_dir(run_dir) / store.STATE_FILE, state)
    log.debug("run %s: %d frame(s) assembled in %.2f s", run_dir.name, ready, time.perf_counter() - t0)
    return state


# -- loop closure -------------------------------------------------------------------------------


def _chunk_of_frames(plan: ChunkPlan) -> np.ndarray:
    return np.array([plan.owner(f) for f in range(plan.n_frames)], dtype=np.int64)


def descriptors(run_dir: Path, plan: ChunkPlan) -> np.ndarray | None:
    """(N, D) descriptor per run frame, from the chunk that owns it; None if chunks have none."""
    out = None
    for k in range(plan.n_chunks):
        d = store.chunk_array(run_dir, k, "descriptors")
        if d is None:
            return None
        first, end = plan.owned(k)
        ids = store.chunk_meta(run_dir, k)["frame_ids"]
        if out is None:
            out = np.zeros((plan.n_frames, d.shape[1]), dtype=np.float32)
        out[first:end] = d[[ids.index(f) for f in range(first, end)]]
    return out


def loop_frames(run_dir: str | Path, threshold: float = 0.85, max_loops: int = 8) -> list[dict[str, Any]]:
    """The loop-closure chunks to run: for each candidate loop (frames i and j of chunks at
    least two apart that look alike), the frames around i in i's chunk and around j in j's.

    Returns:
        ``[{"i", "j", "score", "chunk_i", "chunk_j", "frames_i", "frames_j"}]`` (run frame
        indices), best first; [] when the run has no descriptors, too few chunks, or no
        poses to correct.
    """
    run_dir = Path(run_dir)
    plan, options = store.read_plan(run_dir)
    if plan.n_chunks < 3 or alignment_mode(options, store.chunk_meta(run_dir, 0)) == "none":
        return []
    desc = descriptors(run_dir, plan)
    if desc is None:
        return []
    chunk_of = _chunk_of_frames(plan)
    found = posegraph.loop_candidates(desc, chunk_of, min_chunk_gap=2, threshold=threshold, max_loops=max_loops)
    out = []
    for i, j, score in found:
        a, b = int(chunk_of[i]), int(chunk_of[j])
        out.append(
            {
                "i": int(i),
                "j": int(j),
                "score": float(score),
                "chunk_i": a,
                "chunk_j": b,
                "frames_i": _window(plan, a, int(i)),
                "frames_j": _window(plan, b, int(j)),
            }
        )
    return out


def _window(plan: ChunkPlan, k: int, frame: int) -> list[int]:
    """The frames of chunk ``k`` within ``reach`` of ``frame``. A loop chunk (two windows) is one
    DA3 call, so it has at most ``plan.chunk`` frames: the chunk size the run guard chose to fit
    in memory (with LOOP_WINDOW's 5 frames a side, 10-frame loop chunks were OOM-killed in a
    2.7 GB container where the guard had chosen chunks of 6)."""
    s, e = plan.spans[k]
    reach = max(0, min(LOOP_WINDOW, (plan.chunk // 2 - 1) // 2))
    return list(range(max(s, frame - reach), min(e, frame + reach + 1)))


def close_loops(run_dir: str | Path, loops: list[dict[str, Any]]) -> dict[str, Any]:
    """Optimise the chunks' transforms with the sequential edges and one edge per loop chunk
    on disk (``chunks/l000L``: loop L of ``loops``); save them to ``chunks/graph.json``."""
    run_dir = Path(run_dir)
    plan, options = store.read_plan(run_dir)
    mode = alignment_mode(options, store.chunk_meta(run_dir, 0))
    edges = [posegraph.Edge(k - 1, k, pair_alignment(run_dir, plan, k, mode)) for k in range(1, plan.n_chunks)]
    used = []
    for n, loop in enumerate(loops):
        if not store.chunk_done(run_dir, n, loop=True):
            continue
        with_scale = mode == "sim3"
        try:
            t_ai, info_a = fit(run_dir, (loop["chunk_i"], False), (n, True), loop["frames_i"], with_scale)
            t_bj, info_b = fit(run_dir, (loop["chunk_j"], False), (n, True), loop["frames_j"], with_scale)
        except ValueError as exc:  # too few confident points in one window: skip that loop
            log.info("loop %d (frames %d-%d) skipped: %s", n, loop["i"], loop["j"], exc)
            continue
        # The loop chunk L maps into chunk a by t_ai and into chunk b by t_bj: b into a is t_ai ∘ t_bj⁻¹.
        edges.append(posegraph.Edge(loop["chunk_i"], loop["chunk_j"], t_ai.compose(t_bj.inverse()), kind="loop"))
        used.append({**loop, "rmse_i": info_a["rmse"], "rmse_j": info_b["rmse"]})
    initial = posegraph.chain(edges[: plan.n_chunks - 1], plan.n_chunks)
    if used:
        transforms, info = posegraph.optimize(plan.n_chunks, edges, initial=initial, with_scale=mode == "sim3")
    else:
        transforms, info = initial, {"n_loop_edges": 0}
    graph = {"transforms": [t.to_json() for t in transforms], "loops": used, "info": _plain(info)}
    store.write_json(store.chunks_dir(run_dir) / GRAPH_FILE, graph)
    return graph


def _plain(info: dict[str, Any]) -> dict[str, Any]:
    return {
        k: (float(v) if isinstance(v, (np.floating, float)) else int(v) if isinstance(v, (np.integer, int)) else v)
        for k, v in info.items()
    }


def finalize(run_dir: str | Path) -> dict[str, Any]:
    """Write every chunk with its final transform (loop-closed when ``chunks/graph.json``
    exists, else the sequential one) and mark the result final. Frames already written with
    the same transform are not written again."""
    run_dir = Path(run_dir)
    state = advance(run_dir)
    plan, _ = store.read_plan(run_dir)
    if int(state.get("frames_ready", 0)) != plan.n_frames:
        raise RuntimeError(
            f"run {run_dir.name}: only {state.get('frames_ready', 0)} of {plan.n_frames} frames are assembled"
        )
    graph_path = store.chunks_dir(run_dir) / GRAPH_FILE
    if graph_path.is_file():
        transforms = [Sim3.from_json(t) for t in store.read_json(graph_path)["transforms"]]
        written = dict(state.get("written") or {})
        arrays = None
        for k, sim in enumerate(transforms):
            if written.get(str(k)) != sim.to_json():
                arrays = arrays or _open_result(run_dir, plan, state)
                write_chunk_frames(run_dir, plan, k, sim, arrays)
                written[str(k)] = sim.to_json()
        if arrays is not None:
            _flush(arrays)
        state["written"] = written
    state["final"] = True
    store.write_json(store.result_dir(run_dir) / store.STATE_FILE, state)
    return state


# -- depth video ------------------------------------------------------------------------------

DEPTH_VIDEO = "depth_video.mp4"
DEPTH_PNGS = "depth_png16.zip"


def depth_video(run_dir: str | Path, fps: float = 10.0) -> dict[str, Any]:
    """For a video run: a colour-mapped depth mp4 of every frame with one depth scale for the
    whole run (a legend beside each frame), and the 16-bit PNG sequence with that scale, both
    in the run's ``exports/`` folder. Frame by frame from the memory-mapped result."""
    from da3_core.runs import records
    from da3_core.scene import depth_video as dv

    run_dir = Path(run_dir)
    meta = records.read_meta(run_dir)
    state = store.read_state(run_dir)
    depth = np.load(store.result_dir(run_dir) / "depth.npy", mmap_mode="r", allow_pickle=False)
    unit = "m" if state.get("is_metric") else "relative units"
    lo, hi = dv.global_depth_range(depth)
    out = records.exports_dir(run_dir)
    video = dv.write_depth_video(depth, out / DEPTH_VIDEO, fps=fps, lo=lo, hi=hi, unit=unit, names=list(meta.names))
    pngs = dv.write_depth_png_sequence(depth, out / DEPTH_PNGS, names=list(meta.names), unit=unit, lo=lo, hi=hi)
    return {
        "video": {k: (str(v) if isinstance(v, Path) else v) for k, v in video.items()},
        "pngs": {k: (str(v) if isinstance(v, Path) else v) for k, v in pngs.items()},
    }
