"""Large arrays cross the process boundary through shared memory, and nothing is left in
/dev/shm: after results are dropped, after kills, crashes, cancels and close."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from da3_core.runner import Runner, shm
from da3_core.runner.protocol import TaskCancelledError, TaskTimeoutError, WorkerCrashedError
from tests.runner.waiting import Gate

FT = "tests.fake_tasks"


def mine() -> list[str]:
    """This process's segments in /dev/shm."""
    return shm.segments(owner_pid=os.getpid())


def mapped_segments() -> list[str]:
    """Segments this process still maps (deleted names included)."""
    with open("/proc/self/maps") as f:
        return sorted({line.split("/dev/shm/")[1].split()[0] for line in f if f"/dev/shm/{shm.PREFIX}-" in line})


@pytest.fixture(autouse=True)
def nothing_left_behind():
    before = set(mine())
    yield
    gc.collect()
    assert set(mine()) <= before, f"left in /dev/shm: {sorted(set(mine()) - before)}"


def test_round_trip_keeps_values_and_maps_large_buffers():
    values = {
        "big": np.arange(300_000, dtype=np.float32).reshape(600, 500),
        "fortran": np.asfortranarray(np.random.default_rng(0).random((300, 200))),
        "strided": np.arange(200_000, dtype=np.int64)[::2],  # not contiguous: pickled in the stream
        "small": np.arange(10),
        "text": "hello",
    }
    packed = shm.pack(values)
    assert packed.segment is not None and len(packed.spans) == 2  # big and fortran only
    assert packed.segment in mine()
    received = shm.Received(packed, unlink_now=True)
    assert packed.segment not in mine()  # the name goes as soon as it is mapped
    out = received.load()
    received.release()
    for key, value in values.items():
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(out[key], value)
            assert out[key].dtype == value.dtype
        else:
            assert out[key] == value
    assert out["fortran"].flags.f_contiguous and not out["fortran"].flags.c_contiguous
    assert out["big"].flags.writeable
    # The big arrays view the shared pages (no copy): their memory belongs to the mapping.
    assert packed.segment in mapped_segments()
    del out
    gc.collect()
    assert packed.segment not in mapped_segments()  # dropping the result frees it


def test_small_values_use_no_segment():
    packed = shm.pack({"a": np.arange(100), "b": [1, 2, 3]})
    assert packed.segment is None and packed.spans == ()
    assert shm.unpack(packed)["b"] == [1, 2, 3]


def test_a_failed_pack_leaves_nothing(monkeypatch):
    def broken(*_a, **_k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(shm, "_write_all", broken)
    with pytest.raises(OSError, match="No space"):
        shm.pack({"a": np.ones(2**20, np.uint8)})


def test_sweep_removes_a_dead_makers_segments_and_orphans():
    # A segment "made" by a process that has exited, for this owner: removed by sweep.
    child = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    )
    dead_pid = int(child.stdout)
    name = f"{shm.PREFIX}-{os.getpid()}-{dead_pid}-1-abcd1234"
    fd = os.open(f"/dev/shm/{name}", os.O_CREAT | os.O_RDWR, 0o600)
    os.close(fd)
    assert shm.sweep(owner_pid=os.getpid(), maker_pid=dead_pid) == [name]
    # A segment whose owning server is gone: removed by sweep_orphans, ours are kept.
    orphan = f"{shm.PREFIX}-{dead_pid}-{dead_pid}-1-abcd1234"
    os.close(os.open(f"/dev/shm/{orphan}", os.O_CREAT | os.O_RDWR, 0o600))
    kept = shm.pack({"a": np.ones(2**20, np.uint8)})
    assert shm.sweep_orphans() == [orphan]
    assert kept.segment in mine()
    shm.unlink(kept.segment)


# -- through the runner ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def warm():
    r = Runner(cancel_grace_s=1.0)
    yield r
    r.close()
    assert not mine()


def test_arguments_and_results_cross_and_are_freed(warm):
    frames = [np.full((480, 640, 3), i, np.uint8) for i in range(4)]
    assert warm.call(f"{FT}:sum_arrays", frames) == float(sum(i * 480 * 640 * 3 for i in range(4)))
    result = warm.call(f"{FT}:big_result", 16)
    assert result.nbytes == 16 * 2**20 and float(result.sum()) == result.size
    assert not mine()  # every name is gone already: the result's is unlinked on receipt
    assert len(mapped_segments()) == 1  # the result's pages, held by `result`
    del result
    gc.collect()
    assert mapped_segments() == []


def test_a_job_read_twice_returns_the_same_value(warm):
    job = warm.submit(f"{FT}:big_result", (4,))
    assert job.result(30) is job.result(30)


def test_timeout_while_results_are_pending_leaves_nothing(runner):
    with pytest.raises(TaskTimeoutError):
        runner.call(f"{FT}:sleep_then_big", 30, 64, duration=1)
    assert runner.call(f"{FT}:big_result", 1).nbytes == 2**20


def test_crash_after_making_a_segment_leaves_nothing(runner):
    runner.call(f"{FT}:square", 2)
    with pytest.raises(WorkerCrashedError):
        runner.call(f"{FT}:leave_segment_then_die", os.getpid())
    assert not mine()  # swept when the dead worker was reaped


def test_cancelled_queued_and_closed_calls_free_their_arguments(runner, tmp_path):
    frames = [np.ones((480, 640, 3), np.uint8)] * 8
    blocker = runner.submit(
        f"{FT}:gate", Gate(tmp_path, "never-opened").args
    )  # holds the worker: the two below stay queued
    queued = runner.submit(f"{FT}:sum_arrays", (frames,))
    left = runner.submit(f"{FT}:sum_arrays", (frames,))
    assert len(mine()) == 2  # the two queued calls' arguments
    queued.cancel()
    with pytest.raises(TaskCancelledError):
        queued.result(5)
    assert len(mine()) == 1
    runner.close()  # the last one is dropped unrun
    assert not mine()
    assert blocker.done() and left.done()


def test_a_server_that_died_leaves_nothing_for_the_next(tmp_path):
    """A parent killed while a worker holds results: the next runner sweeps its segments."""
    code = (
        "import os, time, numpy as np\n"
        "from da3_core.runner import Runner\n"
        "r = Runner()\n"
        "job = r.submit('tests.fake_tasks:sum_arrays', ([np.ones(2**22, np.uint8)],))\n"  # arguments in /dev/shm
        "r.submit('tests.fake_tasks:sleep_for', (30,))\n"
        "r.submit('tests.fake_tasks:sum_arrays', ([np.ones(2**22, np.uint8)],))\n"  # queued: its segment waits
        "print(os.getpid(), flush=True)\n"
        "time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=os.getcwd(), stdout=subprocess.PIPE, text=True)
    try:
        dead = int(proc.stdout.readline())
        deadline = time.monotonic() + 10
        while not shm.segments(owner_pid=dead) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert shm.segments(owner_pid=dead), "the queued call's arguments should be in /dev/shm"
    finally:
        proc.kill()
        proc.wait(10)
    Runner(workers=1).close()  # a new server starts: it sweeps what the dead one left
    assert shm.segments(owner_pid=dead) == []
