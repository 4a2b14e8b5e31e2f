"""A pool of workers on one machine: one per GPU (found without torch), pinned with
CUDA_VISIBLE_DEVICES, one global FIFO with true queue positions, faults kept to their call.

Calls that must run side by side, or keep a worker busy while the test looks, are `Gate`s
(`tests.runner.waiting`): what is asserted never depends on how fast this machine is."""

from __future__ import annotations

import os
import stat
import threading

import pytest

from da3_core.config import ConfigError, load_settings
from da3_core.runner import Queued, Runner, Started
from da3_core.runner.devices import GPU, plan_workers, visible_gpus
from da3_core.runner.protocol import TaskCancelledError, TaskTimeoutError, WorkerCrashedError
from tests.runner.waiting import Gate, until_running, until_started

FT = "tests.fake_tasks"

NVIDIA_SMI = """#!/bin/sh
# A stand-in for nvidia-smi on a machine with two GPUs (prints what the real one prints).
echo "0, GPU-aaaaaaaa-1111-2222-3333-444444444444, NVIDIA H100 80GB HBM3, 81559"
echo "1, GPU-bbbbbbbb-1111-2222-3333-444444444444, NVIDIA H100 80GB HBM3, 81559"
"""


@pytest.fixture
def two_gpus(tmp_path, monkeypatch):
    exe = tmp_path / "nvidia-smi"
    exe.write_text(NVIDIA_SMI)
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


@pytest.fixture(scope="module")
def pool():
    r = Runner(workers=2, cancel_grace_s=1.0)
    yield r
    r.close()


def test_gpus_are_found_without_torch_and_narrowed_by_cuda_visible_devices(two_gpus, monkeypatch):
    gpus = visible_gpus()
    assert [(g.visible_id, g.name, g.memory_mb) for g in gpus] == [
        ("0", "NVIDIA H100 80GB HBM3", 81559),
        ("1", "NVIDIA H100 80GB HBM3", 81559),
    ]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert [g.visible_id for g in visible_gpus()] == ["1"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-bbbbbbbb")  # a UUID prefix, as CUDA reads it
    assert [g.uuid[:12] for g in visible_gpus()] == ["GPU-bbbbbbbb"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # no GPU visible
    assert visible_gpus() == []


def test_no_nvidia_smi_means_one_cpu_worker(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert visible_gpus() == []
    assert [(p.device, p.env) for p in plan_workers("auto", [])] == [("CPU", {})]


def test_the_plan_pins_each_worker_to_a_gpu():
    gpus = [GPU("0", "A"), GPU("1", "B")]
    assert [p.env for p in plan_workers("auto", gpus)] == [{"CUDA_VISIBLE_DEVICES": "0"}, {"CUDA_VISIBLE_DEVICES": "1"}]
    assert [p.env["CUDA_VISIBLE_DEVICES"] for p in plan_workers("3", gpus)] == ["0", "1", "0"]  # shared round-robin
    assert [p.device for p in plan_workers(2, [])] == ["CPU", "CPU"]
    for bad in ("0", "-1", "many"):
        with pytest.raises(ValueError, match="DA3_WORKERS"):
            plan_workers(bad, gpus)


def test_da3_workers_setting_is_checked():
    assert load_settings({}).workers == "auto"
    assert load_settings({"DA3_WORKERS": "4"}).workers == "4"
    with pytest.raises(ConfigError, match="DA3_WORKERS"):
        load_settings({"DA3_WORKERS": "zero"})


def test_auto_starts_one_pinned_worker_per_gpu(two_gpus, tmp_path):
    r = Runner(workers="auto")
    try:
        assert [s.device for s in r.slots] == ["GPU 0 · NVIDIA H100 80GB HBM3", "GPU 1 · NVIDIA H100 80GB HBM3"]
        gates = [Gate(tmp_path, "x"), Gate(tmp_path, "y")]
        jobs = [r.submit(f"{FT}:gate", g.args) for g in gates]
        for job in jobs:
            until_running(job)  # both running: at once, so on both workers
        for g in gates:
            g.open()
        pids = {job.result(60)[1] for job in jobs}
        assert len(pids) == 2  # both workers served, at once
        # Each worker sees only its GPU (CUDA reads this when torch initialises it there).
        seen = sorted(r.slots[i].state_report.get("cuda_visible_devices") for i in range(2))
        assert seen == ["0", "1"]
    finally:
        r.close()


def test_two_workers_run_two_calls_at_once(pool, tmp_path):
    # Side by side, shown by events rather than timed (a 1.1 s bound on two 0.6 s calls failed
    # on a loaded machine): both calls run at once, each holding its worker until the test
    # opens its gate; one worker alone could never run the second before the first ended.
    gates = [Gate(tmp_path, str(i)) for i in range(2)]
    jobs = [pool.submit(f"{FT}:gate", g.args) for g in gates]
    for job in jobs:
        until_running(job)
    assert all(not job.done() for job in jobs)
    for g in gates:
        g.open()
    pids = {job.result(30)[1] for job in jobs}
    assert len(pids) == 2 and pids == {w.pid for w in pool.status().workers}
    # Their times in the workers overlap too, as the caller saw them.
    first, second = jobs
    assert first.started_at < second.finished_at and second.started_at < first.finished_at


def test_one_fifo_with_true_positions(pool, tmp_path):
    # Both workers held by gates while the waiting calls queue; then the gates open one after
    # the other, so the order in which the waiting calls start is the dispatcher's, not a race
    # between two slots freed at the same instant (CI saw two starts 0.16 ms apart recorded
    # out of order).
    gates = [Gate(tmp_path, str(i)) for i in range(2)]
    blockers = [pool.submit(f"{FT}:gate", g.args) for g in gates]
    for b in blockers:
        assert any(isinstance(e, Started) for e in until_started(b))
    waiting = [pool.submit(f"{FT}:tagged", (str(i),)) for i in range(3)]
    # Each sees its place: position 1 runs next; ahead counts the two running calls too.
    assert [w.poll_events()[0] for w in waiting] == [Queued(1, 2), Queued(2, 3), Queued(3, 4)]
    order = []
    lock = threading.Lock()
    for w in waiting:
        w.add_done_callback(lambda job: (lock.acquire(), order.append(job.call_id), lock.release()))
    gates[0].open()
    started = {waiting[0].call_id: until_started(waiting[0])[-1]}  # on the freed worker
    gates[1].open()
    started.update({w.call_id: until_started(w)[-1] for w in waiting[1:]})
    for w in waiting:
        w.result(30)
    # First come, first served: calls started in the order they were submitted.
    starts = [waiting[i].started_at for i in range(3)]
    assert starts == sorted(starts)
    assert all(s.worker for s in started.values())
    for b in blockers:
        b.result(30)
    status = pool.status()
    assert len(status.workers) == 2 and status.queue_length == 0


def test_a_crash_touches_only_its_own_call(pool, tmp_path):
    gate = Gate(tmp_path, "slow")
    slow = pool.submit(f"{FT}:gate", gate.args)
    until_running(slow)
    with pytest.raises(WorkerCrashedError):
        pool.call(f"{FT}:die_by_sigkill")
    assert not slow.done()  # still running through the other worker's crash
    gate.open()
    assert slow.result(30)[0] == gate.name  # the other worker went on
    assert pool.call(f"{FT}:square", 3) == 9


def test_a_timeout_and_a_cancel_touch_only_their_own_call(pool, tmp_path):
    gate = Gate(tmp_path, "slow")
    slow = pool.submit(f"{FT}:gate", gate.args)
    until_running(slow)
    with pytest.raises(TaskTimeoutError):
        pool.call(f"{FT}:overrun", 30, duration=1)  # its worker is killed
    stubborn = pool.submit(f"{FT}:stubborn", (30,))  # ignores the cancel: killed after the grace
    until_running(stubborn)
    stubborn.cancel()
    with pytest.raises(TaskCancelledError):
        stubborn.result(10)
    assert not slow.done()  # still running through both kills
    gate.open()
    assert slow.result(30)[0] == gate.name
    assert pool.call(f"{FT}:square", 4) == 16


def test_status_shows_each_worker(pool):
    pool.call(f"{FT}:square", 1)
    status = pool.status()
    assert [w.label for w in status.workers] == ["worker 1", "worker 2"]
    assert all(w.device == "CPU" for w in status.workers)
    assert status.worker_starts == sum(w.starts for w in status.workers)
    assert status.calls_ok == sum(w.calls_ok for w in status.workers)
