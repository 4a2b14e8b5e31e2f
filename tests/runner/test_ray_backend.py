"""The Ray backend (``DA3_RAY_ADDRESS``): what is particular to it.

The isolation contract itself runs on Ray too (tests/runner/test_runner_contract.py, the
``[ray]`` cases). Here: connecting (a missing Ray, bad addresses, a head started where a Ray
token exists: docs/RAY.md), one actor per GPU of a
cluster (two fake-GPU nodes of `ray.cluster_utils.Cluster`), how crashes, overruns and
cancels end or keep the actor, progress as it happens, results that are read-only views of
Ray's object store, a server that never imports torch, and one real DA3-SMALL run.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import psutil
import pytest

from da3_core.contract import ModelSpec, Reconstruction, ReconstructRequest
from da3_core.runner import Progress, Queued, Runner, Started
from da3_core.runner.backends.ray import RaySlot, make_ray_slots
from da3_core.runner.protocol import TaskCancelledError, TaskTimeoutError, WorkerCrashedError, WorkerStartError
from da3_core.runs import tasks
from tests.conftest import ROOT, run_python
from tests.runner.ray_support import ray_runner, settled
from tests.runner.waiting import PROMPT_S, Gate, until_running, until_started

FT = "tests.fake_tasks"


@pytest.fixture
def ray_warm(ray_module_runner):
    yield ray_module_runner
    deadline = time.monotonic() + 5
    while ray_module_runner.status().state == "busy" and time.monotonic() < deadline:
        time.sleep(0.05)


# -- connecting ------------------------------------------------------------------------
def test_missing_ray_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    with pytest.raises(WorkerStartError) as info:
        make_ray_slots("auto", address="auto")
    message = str(info.value)
    assert (
        "Ray is not installed" in message
        and "pip install -r requirements-ray.txt" in message
        and "DA3_RAY_ADDRESS" in message
    )
    with pytest.raises(WorkerStartError, match="requirements-ray.txt"):
        Runner(isolation="ray", ray_address="10.0.0.1:6379")


def test_bad_addresses_fail_fast_with_what_to_check():
    """In a fresh interpreter (this one is connected to the session's cluster): nothing listening,
    a port that answers but is not Ray (Ray's own client would retry for minutes), a typo."""
    code = textwrap.dedent(
        """
        import os, socket, sys, threading, time
        import da3_core.runner.backends.ray_connect as rb
        from da3_core.runner import Runner
        from da3_core.runner.protocol import WorkerStartError

        closed = socket.socket(); closed.bind(("0.0.0.0", 0)); free_port = closed.getsockname()[1]; closed.close()
        server = socket.socket(); server.bind(("0.0.0.0", 0)); server.listen(8)
        threading.Thread(target=lambda: [server.accept() for _ in range(100)], daemon=True).start()
        rb.CONNECT_TIMEOUT_S = 3.0
        for address in (f"127.0.0.1:{free_port}", f"127.0.0.1:{server.getsockname()[1]}", "no-port-here"):
            t0 = time.monotonic()
            try:
                Runner(isolation="ray", ray_address=address)
                print("CONNECTED", address)
            except WorkerStartError as exc:
                print(f"{time.monotonic() - t0:.2f}|{address}|{exc}".replace(chr(10), " "))
        sys.stdout.flush()
        os._exit(0)  # a ray.init that never got an answer is still waiting in its thread
        """
    )
    lines = [line for line in run_python(code, timeout=120).splitlines() if "|" in line or "CONNECTED" in line]
    assert len(lines) == 3, lines
    for line in lines:
        seconds, address, message = line.split("|", 2)
        assert float(seconds) < 6.0, line
        assert address in message and "DA3_RAY_ADDRESS" in message and "ray status" in message
    assert "nothing answers" in lines[0]
    assert "did not answer as a Ray cluster within 3 s" in lines[1]
    assert "host:port" in lines[2]


TOKEN_DRIVER = textwrap.dedent(
    """
    import json, os, sys, time
    import ray
    import da3_core.runner.backends.ray_connect as rb
    from da3_core.runner import Runner
    from da3_core.runner.protocol import WorkerStartError

    address, as_remote = sys.argv[1], sys.argv[2] == "remote"
    report = {}
    if as_remote:  # first as if the head ran on another machine: this machine's token is not sent unasked
        on_this_machine, rb._on_this_machine = rb._on_this_machine, lambda target: False
        t0 = time.monotonic()
        try:
            Runner(isolation="ray", ray_address=address)
            report["remote"] = "CONNECTED"
        except WorkerStartError as exc:
            report["remote"], report["remote_s"] = str(exc), time.monotonic() - t0
        report["mode_after_remote"] = os.environ.get("RAY_AUTH_MODE")
        rb._on_this_machine = on_this_machine
    runner = Runner(isolation="ray", ray_address=address, workers=1)
    report["square"] = runner.call("tests.fake_tasks:square", 7)
    report["mode"] = os.environ.get("RAY_AUTH_MODE")
    runner.close()
    ray.shutdown()
    print(json.dumps(report), flush=True)
    """
)


def _token_driver(head, address: str, as_remote: bool) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", TOKEN_DRIVER, address, "remote" if as_remote else "local"],
        cwd=ROOT,
        env=head.env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 0, out.stderr[-4000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_head_started_where_a_ray_token_exists(token_head):
    """`ray start --head` where a Ray token exists turns token authentication on (Ray 2.60), and
    a client without ``RAY_AUTH_MODE=token`` used to fail after 20 s with "Failed to connect",
    which did not mention the token. Now, in a fresh interpreter on that machine (its home
    folder, ``RAY_AUTH_MODE`` unset): ``DA3_RAY_ADDRESS=auto`` and the head's ``host:port``
    connect with the machine's token, as ``ray.init("auto")`` does; a head elsewhere that wants
    a token fails at once with an error that says so and how to pass it."""
    report = _token_driver(token_head, token_head.address, as_remote=True)
    message = report["remote"]
    assert report["remote_s"] < PROMPT_S, report  # the GCS answers in milliseconds; ray.init failed after 20 s
    for text in (
        "requires a Ray token",
        "RAY_AUTH_MODE=token",
        str(token_head.token_file),
        token_head.address,
        "DA3_RAY_ADDRESS",
        "ray get-auth-token",
    ):
        assert text in message, message
    assert report["mode_after_remote"] is None  # nothing sent unasked
    assert report["square"] == 49 and report["mode"] == "token"  # host:port of this machine

    report = _token_driver(token_head, "auto", as_remote=False)
    assert report["square"] == 49 and report["mode"] == "token"


def test_worker_counts_on_a_cluster_without_gpus(ray_cluster):
    slots = make_ray_slots("auto")
    assert [(s.label, s.device, s.use_gpu) for s in slots] == [("actor 1", "Ray CPU", False)]
    assert [s.label for s in make_ray_slots(3)] == ["actor 1", "actor 2", "actor 3"]
    for bad in ("0", "many"):
        with pytest.raises(ValueError, match="DA3_WORKERS"):
            make_ray_slots(bad)


def test_an_actor_the_cluster_cannot_place_fails_to_start_clearly(ray_cluster):
    """A GPU actor on a cluster without GPUs waits for Ray to place it, up to start_timeout_s."""
    r = Runner(slots=[RaySlot(0, "actor 1", use_gpu=True)], start_timeout_s=1.0)
    try:
        t0 = time.monotonic()
        with pytest.raises(WorkerStartError, match=r"did not start within 1 s: the cluster may have no free GPU"):
            r.call(f"{FT}:square", 2)
        assert time.monotonic() - t0 < 3.0
        assert settled(r).workers[0].state == "stopped" and r.worker_starts == 0
    finally:
        r.close()


# -- a pool over a cluster ---------------------------------------------------------------
def test_one_actor_per_fake_gpu_side_by_side_one_fifo(gpu_nodes, tmp_path):
    r = Runner(isolation="ray", workers="auto", cancel_grace_s=1.0)
    try:
        assert [(s.label, s.device) for s in r.slots] == [("actor 1", "Ray GPU"), ("actor 2", "Ray GPU")]
        jobs = [r.submit(f"{FT}:tagged", (str(i), 0.6)) for i in range(2)]
        pids = {job.result(60)[1] for job in jobs}
        assert len(pids) == 2
        # Each actor has Ray's GPU of its node: CUDA_VISIBLE_DEVICES is set for it.
        assert [r.call(f"{FT}:visible_devices") for _ in range(2)] == ["0", "0"]
        states = [s.state_report for s in r.slots]
        assert [st.get("cuda_visible_devices") for st in states] == ["0", "0"]
        assert states[0]["node_id"] != states[1]["node_id"]  # one per fake-GPU node
        assert all(s.device.startswith("Ray GPU · ") for s in r.slots)

        # Side by side: both calls run at once (each holds its actor until the test opens its
        # gate), on the two actors.
        gates = [Gate(tmp_path, f"side-{i}") for i in range(2)]
        jobs = [r.submit(f"{FT}:gate", g.args) for g in gates]
        for job in jobs:
            until_running(job)
        for g in gates:
            g.open()
        assert {job.result(30)[1] for job in jobs} == pids

        # One FIFO for the pool, with true positions (both actors held while the calls queue).
        gates = [Gate(tmp_path, f"fifo-{i}") for i in range(2)]
        blockers = [r.submit(f"{FT}:gate", g.args) for g in gates]
        for b in blockers:
            assert any(isinstance(e, Started) for e in until_started(b))
        waiting = [r.submit(f"{FT}:tagged", (str(i),)) for i in range(3)]
        assert [w.poll_events()[0] for w in waiting] == [Queued(1, 2), Queued(2, 3), Queued(3, 4)]
        gates[0].open()
        until_started(waiting[0])
        gates[1].open()
        for w in waiting + blockers:
            w.result(30)
        starts = [w.started_at for w in waiting]
        assert starts == sorted(starts)
        assert {w.worker for w in waiting} <= {"actor 1", "actor 2"}
        status = r.status()
        assert [w.label for w in status.workers] == ["actor 1", "actor 2"] and all(w.pid for w in status.workers)
    finally:
        r.close()


def test_more_actors_than_gpus_share_them(gpu_nodes):
    slots = make_ray_slots(3)
    assert [(s.use_gpu, s.gpu_share) for s in slots] == [(True, 0.5)] * 3
    r = Runner(slots=slots)
    try:
        jobs = [r.submit(f"{FT}:tagged", (str(i), 0.3)) for i in range(3)]
        assert len({job.result(60)[1] for job in jobs}) == 3  # all three placed and serving
    finally:
        r.close()


def _gone(pid: int, within_s: float = PROMPT_S) -> bool:
    """The process ended (a zombie until its parent, Ray's raylet, reaps it, counts), now or
    within ``within_s`` (a dead actor's process is reaped by the raylet, a moment later)."""
    deadline = time.monotonic() + within_s
    while True:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)


# -- the actor's life --------------------------------------------------------------------
def test_crash_is_reported_within_2_s_and_a_fresh_actor_serves_the_next_call(ray_cluster):
    r = ray_runner()
    try:
        pid = r.call(f"{FT}:worker_pid")
        t0 = time.monotonic()
        with pytest.raises(WorkerCrashedError) as info:
            r.call(f"{FT}:die_by_exit", 3)
        assert time.monotonic() - t0 < 2.0
        assert "Ray actor" in str(info.value)
        assert r.worker_pid is None and _gone(pid)
        assert r.call(f"{FT}:worker_pid") not in (None, pid)
        assert r.worker_starts == 2
    finally:
        r.close()


def test_overrun_kills_the_actor_and_the_next_call_works(ray_cluster):
    r = ray_runner()
    try:
        pid = r.call(f"{FT}:worker_pid")
        with pytest.raises(TaskTimeoutError) as info:
            r.call(f"{FT}:sleep_then_big", 30, 1, duration=0.5)
        assert 0.5 <= info.value.elapsed_s < 1.5
        assert _gone(pid, 0)  # ray.kill, and waited for
        assert r.call(f"{FT}:square", 3) == 9 and r.worker_pid != pid
    finally:
        r.close()


def test_cancel_cooperative_keeps_the_actor_and_a_stubborn_task_is_killed(ray_cluster):
    r = ray_runner(cancel_grace_s=1.0)
    try:
        pid = r.call(f"{FT}:worker_pid")
        job = r.submit(f"{FT}:cancellable", (30,), duration=60)
        until_running(job)
        t0 = time.monotonic()
        job.cancel()  # reaches the task through the actor's control group, while `run` is busy
        with pytest.raises(TaskCancelledError, match="cancelled by its caller"):
            job.result(10)
        # At the task's next checkpoint (20 ms), not at its end (30 s); and by the task itself
        # (the message above; no kill after the 1 s grace): the same actor serves on.
        assert time.monotonic() - t0 < PROMPT_S
        assert r.call(f"{FT}:worker_pid") == pid and r.worker_starts == 1

        job = r.submit(f"{FT}:stubborn", (30,), duration=60)
        until_running(job)
        job.cancel()
        t0 = time.monotonic()
        with pytest.raises(TaskCancelledError, match="did not stop within 1 s and was restarted"):
            job.result(10)
        assert 0.9 < time.monotonic() - t0 < 1.0 + PROMPT_S  # killed after the grace, not before; not at the task's end
        assert _gone(pid, 0)
        assert r.call(f"{FT}:worker_pid") != pid and r.worker_starts == 2
    finally:
        r.close()


def test_restart_during_a_call(ray_cluster):
    r = ray_runner()
    try:
        job = r.submit(f"{FT}:stubborn", (30,), duration=60)
        until_running(job)
        r.restart()
        with pytest.raises(TaskCancelledError, match="the worker was restarted"):
            job.result(5)
        assert settled(r).workers[0].state == "stopped"
        assert r.call(f"{FT}:square", 2) == 4
    finally:
        r.close()


def test_progress_arrives_while_the_task_runs(ray_warm, tmp_path):
    """Each report reaches the caller while the task runs, not all at the end: the task waits
    for the caller to acknowledge each report before it makes the next (it would time out
    waiting for the first if reports only came with the result)."""
    seen: list[Progress] = []
    job = ray_warm.submit(f"{FT}:progress_acked", (str(tmp_path), 5))
    for event in job.events(timeout=60):
        if isinstance(event, Progress):
            seen.append(event)
            (tmp_path / f"ack-{len(seen)}").touch()
    assert job.result(10) == 5
    assert [p.detail for p in seen] == [f"{i}/5" for i in range(1, 6)]
    assert all(p.elapsed_s < job.elapsed_s for p in seen)


def test_results_are_read_only_views_of_the_object_store(ray_warm):
    ray_warm.call(f"{FT}:big_result", 1)  # warm
    me = psutil.Process()
    rss0 = me.memory_info().rss
    t0 = time.monotonic()
    out = ray_warm.call(f"{FT}:big_result", 256)
    elapsed = time.monotonic() - t0
    grown = (me.memory_info().rss - rss0) / 2**20
    assert isinstance(out, np.ndarray) and out.nbytes == 256 * 2**20
    assert not out.flags.writeable and not out.flags.owndata
    with pytest.raises(ValueError, match="read-only"):
        out[0] = 2.0
    assert grown < 64, f"receiving 256 MB grew this process by {grown:.0f} MB: a copy was made"
    assert out[:4].tolist() == [1.0] * 4 and out[-1] == 1.0
    assert elapsed < 10
    del out


def test_worker_state_and_torch_stays_out_of_this_process(ray_warm):
    out = ray_warm.call(f"{FT}:cpu_tensors", duration=120)
    assert isinstance(out["plain"], np.ndarray)
    slot = ray_warm.slots[0]
    assert isinstance(slot, RaySlot)
    state = ray_warm.status().workers[0]
    assert state.device.startswith("Ray CPU · ") and state.pid == state.state_report["pid"]
    assert state.state_report["torch_imported"] is True and state.state_report["node_ip"] == slot.node_ip
    assert state.rss_mb and state.rss_mb > 50  # a local actor: its memory is shown
    assert "torch" not in sys.modules
    assert not [m for m in sys.modules if m.split(".")[0] in ("torch", "depth_anything_3", "torchvision")]


def test_large_arguments_arrive_intact(ray_warm):
    arrays = [np.full((480, 640, 3), i, np.uint8) for i in range(4)]  # 3.7 MB: beside the request, not inside it
    assert ray_warm.call(f"{FT}:sum_arrays", arrays) == float(sum(a.sum(dtype=np.int64) for a in arrays))
    back = ray_warm.call(f"{FT}:echo", {"frames": arrays, "small": [1, 2]})
    assert back["small"] == [1, 2] and all(np.array_equal(a, b) for a, b in zip(arrays, back["frames"]))


def test_concurrent_callers_on_one_actor(ray_warm):
    results: dict[int, object] = {}

    def call(i: int) -> None:
        results[i] = ray_warm.call(f"{FT}:square", i)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == {i: i * i for i in range(8)}


# -- the real model ----------------------------------------------------------------------
def test_real_da3_small_reconstruction_through_ray(ray_warm, workspace):
    frames = []
    for i in range(2):
        yy, xx = np.mgrid[0:96, 0:128]
        frames.append(
            np.stack([(xx + 20 * i) % 256, (yy * 2) % 256, (xx * yy // 37 + 50 * i) % 256], -1).astype(np.uint8)
        )
    request = ReconstructRequest(tuple(frames), ("a.png", "b.png"), ModelSpec("demo", "da3-small"), process_res=56)
    events = []
    rec = tasks.reconstruct.call(request, str(workspace / "demo-weights"), runner=ray_warm, on_event=events.append)
    assert isinstance(rec, Reconstruction)
    n, h, w = rec.depth.shape
    assert n == 2 and max(h, w) == 56 and rec.depth.dtype == np.float32 and np.isfinite(rec.depth).all()
    assert rec.extrinsics.shape == (2, 3, 4) and rec.intrinsics.shape == (2, 3, 3)
    assert rec.images.shape == (2, h, w, 3) and rec.untrained and rec.device == "cpu"
    stages = [e.stage for e in events if isinstance(e, Progress)]
    assert "inference" in stages
    assert "torch" not in sys.modules
