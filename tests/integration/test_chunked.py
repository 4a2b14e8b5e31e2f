"""Chunked runs end to end: the run service, spawned workers, the assembler child process and
the run folder, with the ground-truth oracle (`tests.oracle`) standing in for DA3.

The oracle returns each chunk in its own random frame and scale with depth noise, so what
the tests check is the real machinery: chunk plan, saving as chunks land, Sim(3) alignment
on the overlaps, loop closure, resume after a cancel or a server restart (no chunk computed
twice, the result bit-identical), the frames so far while a run goes on, and memory-mapped
results.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from da3_core.chunks import store
from da3_core.chunks.plan import plan_chunks
from da3_core.config import Settings
from da3_core.runs import records
from da3_core.runs.service import RunService
from da3_core.scene.align import ate_rmse, camera_centres
from tests import oracle
from tests.oracle_tasks import oracle_chunk

PARAMS = {
    "process_res": 112,
    "process_res_method": "upper_bound_resize",
    "ref_view_strategy": "saddle_balanced",
    "reference_view": None,
    "infer_gs": False,
    "device": "cpu",
}


@pytest.fixture(scope="module")
def line_scene(tmp_path_factory):
    return oracle.make_oracle(tmp_path_factory.mktemp("oracle-line"), n_frames=40, path="line", width=64, height=48)


@pytest.fixture(scope="module")
def slow_scene(tmp_path_factory):
    """The line scene with a model that takes 0.3 s a chunk: runs to watch, cancel and resume."""
    return oracle.make_oracle(
        tmp_path_factory.mktemp("oracle-slow"),
        n_frames=40,
        path="line",
        width=64,
        height=48,
        options=oracle.OracleOptions(delay_s=0.3),
    )


@pytest.fixture(scope="module")
def slower_scene(tmp_path_factory):
    """A model that takes 1 s a chunk: the assembler (a process spawned on first use, slow
    on a loaded machine) has written the first frames long before the run ends."""
    return oracle.make_oracle(
        tmp_path_factory.mktemp("oracle-slower"),
        n_frames=40,
        path="line",
        width=64,
        height=48,
        options=oracle.OracleOptions(delay_s=1.0),
    )


@pytest.fixture(scope="module")
def loop_scene(tmp_path_factory):
    return oracle.make_oracle(
        tmp_path_factory.mktemp("oracle-loop"),
        n_frames=60,
        path="loop",
        width=64,
        height=48,
        options=oracle.OracleOptions(drift_deg=3.0, drift_scale=0.02, depth_noise=0.005),
    )


@pytest.fixture
def service(module_runner, tmp_path):
    svc = RunService(module_runner, Settings(workspace=tmp_path / "ws"), chunk_task=oracle_chunk)
    yield svc
    svc.close()


def session_dir(tmp_path: Path, tag: str = "a") -> Path:
    return tmp_path / "ws" / "sessions" / (tag * 32)


def start(
    service: RunService, tmp_path: Path, scene: Path, chunk: int, overlap: int, loops: bool = False, tag: str = "a"
):
    frames = oracle.frames(scene)
    names = [f"{i:04d}.png" for i in range(len(frames))]
    params = {**PARAMS, "chunking": {"chunk": chunk, "overlap": overlap, "loop_closure": loops}}
    return service.submit_chunked(
        session_dir(tmp_path, tag), frames, names, "upload", oracle.oracle_model(scene), params
    )


def wait(run, timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    while not run.finished:
        assert time.monotonic() < deadline, f"run stuck at {run.stage}"
        run.pump()
        time.sleep(0.05)
    return run.outcome


def ate_pct(run_dir: Path, scene: Path) -> float:
    rec = records.load_result(run_dir)
    gt = oracle.load_gt(scene)
    rmse, length = ate_rmse(camera_centres(np.asarray(rec.extrinsics, np.float64)), camera_centres(gt["extrinsics"]))
    return 100.0 * rmse / length


def test_a_chunked_run_ends_as_one_aligned_run(service, tmp_path, line_scene):
    run = start(service, tmp_path, line_scene, chunk=12, overlap=4)
    outcome = wait(run)
    assert outcome.ok, outcome.message
    meta = records.read_meta(run.run_dir)
    assert meta.status == "done" and meta.params["chunked"]["chunks"] == plan_chunks(40, 12, 4).n_chunks
    assert meta.params["chunked"]["alignment"] == "sim3"
    rec = records.load_result(run.run_dir, meta)
    assert rec.n_views == 40 and isinstance(rec.depth, np.memmap)  # memory-mapped: the server holds none of it
    assert rec.names == tuple(meta.names)
    # Every chunk came back at its own random scale and frame: aligned, the path matches the truth.
    assert ate_pct(run.run_dir, line_scene) < 0.5
    # Depth too: the first chunk defines the world, so its frames keep their scale; a later
    # frame's depth over the truth has the same ratio as the first frame's (one scale for all).
    gt = oracle.load_gt(line_scene)["depth"]
    valid = np.isfinite(gt) & (gt > 0)
    ratios = [float(np.median(np.asarray(rec.depth[i])[valid[i]] / gt[i][valid[i]])) for i in (0, 20, 39)]
    assert max(ratios) / min(ratios) < 1.02, ratios


def test_frames_so_far_are_readable_while_the_run_goes_on(service, tmp_path, slower_scene):
    line_scene = slower_scene
    run = start(service, tmp_path, line_scene, chunk=6, overlap=2)
    deadline = time.monotonic() + 60
    while store.frames_ready(run.run_dir) == 0:  # the first chunk is aligned and written
        assert time.monotonic() < deadline and not run.finished
        run.pump()
        assert run.status_line()
        time.sleep(0.005)
    run.cancel()  # stop it there, so what follows reads a run that is not done
    wait(run)
    meta = records.read_meta(run.run_dir)
    ready = store.frames_ready(run.run_dir)
    assert meta.status == "cancelled" and 0 < ready < 40
    part = records.load_result(run.run_dir, meta)
    assert part.n_views == ready and part.names == tuple(meta.names[:ready])
    whole = run_to_completion(service, tmp_path, line_scene, "p", chunk=6, overlap=2)
    full = records.load_result(whole.run_dir)
    np.testing.assert_array_equal(np.asarray(part.depth), np.asarray(full.depth[:ready]))  # the same frames, final


def run_to_completion(service, tmp_path, scene, tag, chunk=10, overlap=3):
    run = start(service, tmp_path, scene, chunk=chunk, overlap=overlap, tag=tag)
    assert wait(run).ok
    return run


def arrays(run_dir: Path) -> dict[str, np.ndarray]:
    return {p.stem: np.load(p, allow_pickle=False) for p in sorted(store.result_dir(run_dir).glob("*.npy"))}


def test_cancel_then_resume_computes_no_chunk_twice_and_matches_an_uninterrupted_run(service, tmp_path, slow_scene):
    line_scene = slow_scene
    whole = run_to_completion(service, tmp_path, line_scene, "b")
    run = start(service, tmp_path, line_scene, chunk=10, overlap=3, tag="c")
    deadline = time.monotonic() + 60
    while len(store.done_chunks(run.run_dir, run.plan)) < 2:
        assert time.monotonic() < deadline and not run.finished
        time.sleep(0.01)
    run.cancel()
    outcome = wait(run)
    assert outcome.status == "cancelled" and "Resume" in outcome.message
    assert records.read_meta(run.run_dir).status == "cancelled"
    first = set(run.computed)
    assert len(store.done_chunks(run.run_dir, run.plan)) >= 2

    again = service.resume(run.run_dir)
    assert wait(again).ok, again.outcome.message
    second = set(again.computed)
    assert not first & second, f"chunks computed twice: {first & second}"
    assert first | second == set(range(run.plan.n_chunks))
    a, b = arrays(whole.run_dir), arrays(again.run_dir)
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)  # bit-identical


def test_a_server_restart_marks_the_run_resumable_and_a_new_server_resumes_it(module_runner, tmp_path, slow_scene):
    line_scene = slow_scene
    first = RunService(module_runner, Settings(workspace=tmp_path / "ws"), chunk_task=oracle_chunk)
    run = start(first, tmp_path, line_scene, chunk=10, overlap=3, tag="d")
    deadline = time.monotonic() + 60
    while len(store.done_chunks(run.run_dir, run.plan)) < 1:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    run.cancel()  # the old server's thread stops; its run.json may still say anything
    wait(run)
    meta = records.read_meta(run.run_dir)
    records.write_meta(
        run.run_dir, type(meta)(**{**meta.__dict__, "status": "pending", "error": ""})
    )  # as a crash leaves it
    first.close()

    second = RunService(module_runner, Settings(workspace=tmp_path / "ws"), chunk_task=oracle_chunk)
    try:
        assert second.reconcile(session_dir(tmp_path, "d")) == [run.run_id]
        meta = records.read_meta(run.run_dir)
        assert meta.status == "failed" and "Resume" in meta.error
        resumed = second.resume(run.run_dir)
        assert wait(resumed).ok
        assert resumed.resumed_from >= 1 and records.read_meta(run.run_dir).status == "done"
        with pytest.raises(ValueError, match="already done"):
            second.resume(run.run_dir)
    finally:
        second.close()


def test_loop_closure_cuts_the_drift(service, tmp_path, loop_scene):
    plain = start(service, tmp_path, loop_scene, chunk=10, overlap=3, loops=False, tag="e")
    assert wait(plain).ok
    closed = start(service, tmp_path, loop_scene, chunk=10, overlap=3, loops=True, tag="f")
    assert wait(closed).ok, closed.outcome.message
    graph = json.loads((store.chunks_dir(closed.run_dir) / "graph.json").read_text())
    assert graph["loops"], "no loop was found on a path that comes back to its start"
    without, with_loops = ate_pct(plain.run_dir, loop_scene), ate_pct(closed.run_dir, loop_scene)
    assert with_loops * 2 < without, (without, with_loops)
    assert records.read_meta(closed.run_dir).params["chunked"]["loops_closed"] == len(graph["loops"])


def test_a_chunk_that_fails_fails_the_run_with_its_message_and_keeps_what_landed(service, tmp_path, line_scene):
    frames = oracle.frames(line_scene)
    frames[25] = frames[25][::-1].copy()  # not the frame the oracle rendered: its chunk fails
    names = [f"{i:04d}.png" for i in range(len(frames))]
    params = {**PARAMS, "chunking": {"chunk": 10, "overlap": 3, "loop_closure": False}}
    run = service.submit_chunked(
        session_dir(tmp_path, "g"), frames, names, "upload", oracle.oracle_model(line_scene), params
    )
    outcome = wait(run)
    assert outcome.status == "failed" and "ValueError" in outcome.message and "Resume" in outcome.message
    assert store.done_chunks(run.run_dir, run.plan), "the chunks before the failing one are kept"


def test_gaussians_are_refused_for_a_chunked_run(service, tmp_path, line_scene):
    with pytest.raises(ValueError, match="Gaussians"):
        service.submit_chunked(
            session_dir(tmp_path, "h"),
            oracle.frames(line_scene)[:4],
            list("abcd"),
            "upload",
            oracle.oracle_model(line_scene),
            {**PARAMS, "infer_gs": True, "chunking": {"chunk": 2, "overlap": 1}},
        )


def test_a_chunk_without_a_sky_mask_after_one_with_it_is_assembled(tmp_path):
    """DA3 gives no sky mask for frames without sky: a later chunk may lack what chunk 0 had."""
    from da3_core.chunks import assemble
    from da3_core.chunks.plan import plan_chunks
    from da3_core.contract import ChunkResult, ModelSpec, Reconstruction

    plan = plan_chunks(6, 4, 2)
    store.write_plan(tmp_path, plan, {"loop_closure": False})
    rng = np.random.default_rng(0)
    ext = np.tile(np.hstack([np.eye(3), np.zeros((3, 1))])[None], (4, 1, 1)).astype(np.float32)
    ixt = np.tile(np.array([[20.0, 0, 8], [0, 20.0, 6], [0, 0, 1]], np.float32)[None], (4, 1, 1))
    for k, (s, e) in enumerate(plan.spans):
        sky = np.zeros((4, 12, 16), bool) if k == 0 else None
        if sky is not None:
            sky[:, :2] = True
        rec = Reconstruction(
            depth=rng.uniform(1, 2, (4, 12, 16)).astype(np.float32),
            conf=np.ones((4, 12, 16), np.float32) * 2,
            extrinsics=ext,
            intrinsics=ixt,
            images=np.zeros((4, 12, 16, 3), np.uint8),
            sky=sky,
            is_metric=False,
            scale_factor=None,
            gaussians=None,
            names=tuple(f"f{i}" for i in range(s, e)),
            model=ModelSpec("demo", "da3-small"),
            preset="da3-small",
            device="cpu",
            params={"cameras": "estimated"},
        )
        store.save_chunk(tmp_path, k, ChunkResult(rec, tuple(range(s, e)), k))
    state = assemble.finalize(tmp_path)
    assert state["frames_ready"] == 6
    sky = np.load(store.result_dir(tmp_path) / "sky.npy", allow_pickle=False)
    assert sky[:3, :2].all() and not sky[3:].any()
