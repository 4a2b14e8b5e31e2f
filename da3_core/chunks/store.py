"""A chunked run on disk: its plan, each chunk as it lands, and the assembled result.

Layout inside the run folder (next to ``input/`` and ``run.json``, `da3_core.runs.records`)::

    chunks/plan.json          the `ChunkPlan` and the run's chunk options
    chunks/c0003/             one finished chunk: depth.npy conf.npy extrinsics.npy
                              intrinsics.npy images.npy [sky.npy] [descriptors.npy] meta.json
                              (written under a temporary name, then renamed: a chunk folder
                              that exists is complete; that is the record of what is done)
    chunks/l0001/             a loop-closure chunk (frames from two places), same files
    chunks/align/0003.json    how chunk 3 maps into chunk 2 (Sim(3) and fit figures)
    chunks/graph.json         the chunks' final transforms after loop closure
    result/                   the assembled run: depth.npy conf.npy extrinsics.npy
                              intrinsics.npy images.npy [sky.npy] (N frames, memory-mapped when
                              read) and state.json (which chunk was written with which
                              transform; how many frames from the start are ready; final)

Every array is read with ``allow_pickle=False``; result arrays with ``mmap_mode="r"``, so the
server's memory does not grow with the number of frames.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from da3_core.chunks.plan import ChunkPlan
from da3_core.contract import ChunkResult, ModelSpec, Reconstruction

CHUNKS_DIR = "chunks"
RESULT_DIR = "result"
PLAN_FILE = "plan.json"
STATE_FILE = "state.json"
GRAPH_FILE = "graph.json"
META = "meta.json"
FIELDS = ("depth", "conf", "extrinsics", "intrinsics", "images", "sky")
OPTIONAL = ("conf", "extrinsics", "intrinsics", "sky")


def chunks_dir(run_dir: Path) -> Path:
    return Path(run_dir) / CHUNKS_DIR


def result_dir(run_dir: Path) -> Path:
    return Path(run_dir) / RESULT_DIR


def is_chunked(run_dir: Path) -> bool:
    """True for a run folder made by a chunked run."""
    return (chunks_dir(run_dir) / PLAN_FILE).is_file()


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (temporary name, then rename)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


# -- the plan ---------------------------------------------------------------------------


def write_plan(run_dir: Path, plan: ChunkPlan, options: dict[str, Any]) -> None:
    """Save the plan and the chunk options (loop closure, alignment mode...)."""
    chunks_dir(run_dir).mkdir(parents=True, exist_ok=True)
    write_json(chunks_dir(run_dir) / PLAN_FILE, {"plan": plan.to_json(), "options": options})


def read_plan(run_dir: Path) -> tuple[ChunkPlan, dict[str, Any]]:
    data = read_json(chunks_dir(run_dir) / PLAN_FILE)
    return ChunkPlan.from_json(data["plan"]), dict(data.get("options") or {})


# -- chunks -------------------------------------------------------------------------------


def chunk_name(k: int, loop: bool = False) -> str:
    return f"{'l' if loop else 'c'}{k:04d}"


def chunk_path(run_dir: Path, k: int, loop: bool = False) -> Path:
    return chunks_dir(run_dir) / chunk_name(k, loop)


def chunk_done(run_dir: Path, k: int, loop: bool = False) -> bool:
    return (chunk_path(run_dir, k, loop) / META).is_file()


def done_chunks(run_dir: Path, plan: ChunkPlan) -> list[int]:
    """The plan's chunks already on disk."""
    return [k for k in range(plan.n_chunks) if chunk_done(run_dir, k)]


def save_chunk(run_dir: Path, k: int, result: ChunkResult, loop: bool = False) -> Path:
    """Save one chunk's result (complete or not at all: temporary folder, then rename).

    Saving the same chunk twice keeps the first copy (a chunk is never computed twice on
    purpose; if it was, the first result stays the one the run used).
    """
    final = chunk_path(run_dir, k, loop)
    if (final / META).is_file():
        return final
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    rec = result.rec
    for name in FIELDS:
        value = getattr(rec, name)
        if value is not None:
            np.save(tmp / f"{name}.npy", np.ascontiguousarray(value), allow_pickle=False)
    if result.descriptors is not None:
        np.save(tmp / "descriptors.npy", np.ascontiguousarray(result.descriptors, dtype=np.float32), allow_pickle=False)
    meta = {
        "chunk": result.chunk,
        "frame_ids": list(result.frame_ids),
        "names": list(rec.names),
        "is_metric": bool(rec.is_metric),
        "scale_factor": rec.scale_factor,
        "preset": rec.preset,
        "device": rec.device,
        "model": [rec.model.kind, rec.model.ref],
        "timings": {k2: float(v) for k2, v in rec.timings.items()},
        "params": json.loads(json.dumps(dict(rec.params), default=str)),
    }
    write_json(tmp / META, meta)
    if final.exists():  # a half-written folder from an older layout or a crash
        shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    return final


def chunk_meta(run_dir: Path, k: int, loop: bool = False) -> dict[str, Any]:
    return read_json(chunk_path(run_dir, k, loop) / META)


def chunk_array(run_dir: Path, k: int, name: str, loop: bool = False, mmap: bool = True) -> np.ndarray | None:
    """One array of a saved chunk (memory-mapped), or None when the chunk has none."""
    path = chunk_path(run_dir, k, loop) / f"{name}.npy"
    if not path.is_file():
        return None
    return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)


def required_chunk_array(run_dir: Path, k: int, name: str, loop: bool = False) -> np.ndarray:
    """`chunk_array` of an array the chunk must have (e.g. depth); FileNotFoundError if it has none."""
    a = chunk_array(run_dir, k, name, loop)
    if a is None:
        raise FileNotFoundError(f"chunk {k} of run {Path(run_dir).name} has no {name}.npy")
    return a


def loop_chunks(run_dir: Path) -> list[int]:
    """Indices of the saved loop-closure chunks."""
    out = []
    for p in sorted(chunks_dir(run_dir).glob("l[0-9][0-9][0-9][0-9]")):
        if (p / META).is_file():
            out.append(int(p.name[1:]))
    return out


# -- the assembled result -----------------------------------------------------------------


def read_state(run_dir: Path) -> dict[str, Any]:
    """``result/state.json`` ({} before the first chunk is written)."""
    path = result_dir(run_dir) / STATE_FILE
    try:
        return dict(read_json(path))
    except (OSError, ValueError):
        return {}


def frames_ready(run_dir: Path) -> int:
    """Frames from the start of the run that are aligned and written (0 before any)."""
    return int(read_state(run_dir).get("frames_ready", 0))


def load_result(
    run_dir: Path,
    names: list[str],
    model: ModelSpec,
    *,
    params: dict[str, Any] | None = None,
    timings: dict[str, float] | None = None,
    ready_only: bool = True,
) -> Reconstruction:
    """The assembled run as a `Reconstruction` whose arrays are read-only memory maps.

    Args:
        run_dir: The run folder.
        names: The run's frame names (``run.json``).
        model: The run's model.
        params / timings: What the run's metadata says.
        ready_only: Only the frames ready so far (a run still in progress); False reads
            all N (a finished run).

    Raises:
        FileNotFoundError: No frame is ready yet.
    """
    state = read_state(run_dir)
    n = int(state.get("frames_ready", 0)) if ready_only else int(state.get("n_frames", 0))
    if n <= 0:
        raise FileNotFoundError(f"no frame of run {Path(run_dir).name} is assembled yet")
    folder = result_dir(run_dir)
    arrays: dict[str, np.ndarray | None] = {}
    for name in FIELDS:
        path = folder / f"{name}.npy"
        arrays[name] = np.load(path, mmap_mode="r", allow_pickle=False)[:n] if path.is_file() else None
    depth, images = arrays["depth"], arrays["images"]
    if depth is None or images is None:  # written with the first frames, before the state says so
        raise FileNotFoundError(f"run {Path(run_dir).name}'s result has no depth or images")
    run_params = dict(params or {})
    run_params["chunked_frames_ready"] = n
    return Reconstruction(
        depth=depth,
        conf=arrays["conf"],
        extrinsics=arrays["extrinsics"],
        intrinsics=arrays["intrinsics"],
        images=images,
        sky=arrays["sky"],
        is_metric=bool(state.get("is_metric", False)),
        scale_factor=state.get("scale_factor"),
        gaussians=None,
        names=tuple(names[:n]),
        model=model,
        preset=str(state.get("preset", "")),
        device=str(state.get("device", "")),
        timings=dict(timings or {}),
        params=run_params,
    )


def remove_result(run_dir: Path) -> None:
    shutil.rmtree(result_dir(run_dir), ignore_errors=True)
