"""Faults, each ten times in a row: the caller gets the right error within 2 s, the next call
succeeds, no orphan or zombie process remains, no temporary file leaks.

Only this test's files are counted, so that other processes of the machine (a parallel test
run, another user) cannot fail it or hide a leak: its private TMPDIR, the runner's
shared-memory segments owned by this process (their names carry the owner's pid), and the
``/dev/shm`` files (multiprocessing's semaphores) that this runner's workers had mapped.
"""

from __future__ import annotations

import os
import signal
import tempfile
import time
from pathlib import Path

import psutil
import pytest

from da3_core.runner import Runner, shm
from da3_core.runner.protocol import TaskError, TaskTimeoutError, WorkerCrashedError
from tests.runner.waiting import PROMPT_S, until_running, wait_until

# Sixty crash cycles, each with a fresh worker: tens of seconds. Run with `-m slow` or a plain `pytest`.
pytestmark = pytest.mark.slow

FT = "tests.fake_tasks"
REPEATS = 10


@pytest.fixture
def private_tmp(tmp_path, monkeypatch):
    """A temp dir only this test's processes (the parent and the workers it spawns) use."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setenv("TMPDIR", str(folder))
    monkeypatch.setattr(tempfile, "tempdir", None)  # forget the cached default
    yield folder
    tempfile.tempdir = None


SHM = Path("/dev/shm")


def worker_shm_files(runner: Runner) -> set[str]:
    """The ``/dev/shm`` files the runner's live workers have mapped now (a worker killed later
    cannot unlink what it made: such a file would be left behind)."""
    names: set[str] = set()
    for worker in runner.status().workers:
        if worker.pid is None:
            continue
        try:
            maps = psutil.Process(worker.pid).memory_maps(grouped=True)
        except psutil.Error:
            continue
        names |= {Path(m.path).name for m in maps if m.path.startswith(f"{SHM}/")}
    return names


def temp_entries(folder: Path, watched: set[str]) -> set[str]:
    """This test's temporary files: its TMPDIR's entries, this process's runner segments, and
    those of ``watched`` (names in /dev/shm seen mapped by its workers) that still exist."""
    names = set(os.listdir(folder))
    names |= {f"shm:{name}" for name in shm.segments(owner_pid=os.getpid())}
    names |= {f"shm:{name}" for name in watched if (SHM / name).exists()}
    return names


def descendants(but: frozenset[int] | set[int] = frozenset()) -> list[psutil.Process]:
    """This process's child processes, but those in ``but`` (started before the test: under
    pytest-xdist an earlier module of the same test process may still hold a server's runner)."""
    return [p for p in psutil.Process().children(recursive=True) if p.pid not in but]


def kill_from_outside(runner: Runner, clock: dict[str, float]) -> None:
    """SIGKILL the worker while it runs a call (as the OOM killer or an operator would); the
    fault's time goes in ``clock`` (the 2 s bound counts from it)."""
    pid = runner.worker_pid
    job = runner.submit(f"{FT}:stubborn", (30,), duration=60)
    until_running(job)  # mid-call
    clock["fault"] = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    job.result(30)


FAULTS = {
    "sigkill mid-call": (kill_from_outside, WorkerCrashedError, "SIGKILL"),
    "segfault": (lambda r, _: r.call(f"{FT}:die_by_segfault"), WorkerCrashedError, "SIGSEGV"),
    "os._exit": (lambda r, _: r.call(f"{FT}:die_by_exit", 9), WorkerCrashedError, "exit code 9"),
    "duration overrun": (lambda r, _: r.call(f"{FT}:stubborn", 30, duration=0.5), TaskTimeoutError, "budget of 0.5 s"),
    "exception": (lambda r, _: r.call(f"{FT}:fail", "bad input"), TaskError, "bad input"),
    "memory exhaustion": (lambda r, _: r.call(f"{FT}:exhaust_memory"), TaskError, "MemoryError"),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_fault_ten_times_in_a_row(fault, private_tmp):
    inject, error_type, text = FAULTS[fault]
    watched: set[str] = set()
    before_tmp = temp_entries(private_tmp, watched)
    older = {p.pid for p in descendants()}
    runner = Runner(cancel_grace_s=1.0)
    worst = 0.0
    try:
        runner.call(f"{FT}:square", 1)
        for i in range(REPEATS):
            watched |= worker_shm_files(runner)
            budget = {"duration overrun": 0.5}.get(fault, 0.0)
            clock = {"fault": time.monotonic()}
            with pytest.raises(error_type) as info:
                inject(runner, clock)
            # Time from the fault to the caller's error (an overrun's budget is not the fault).
            elapsed = time.monotonic() - clock["fault"] - budget
            worst = max(worst, elapsed)
            assert text in str(info.value), (i, str(info.value))
            assert elapsed < 2.0, f"{fault} #{i}: error after {elapsed:.2f} s"
            assert runner.call(f"{FT}:square", i) == i * i, f"{fault} #{i}: next call failed"
            zombies = [p.pid for p in descendants(older) if p.status() == psutil.STATUS_ZOMBIE]
            assert not zombies, f"{fault} #{i}: zombies {zombies}"
            assert len([p for p in descendants(older) if p.is_running()]) <= 2  # the live worker (+ a resource tracker)
            watched |= worker_shm_files(runner)
    finally:
        runner.close()

    def workers_left() -> list[psutil.Process]:
        left = []
        for p in descendants(older):
            try:
                if (
                    p.name().startswith("python")
                    and p.status() != psutil.STATUS_ZOMBIE
                    and "resource_tracker" not in " ".join(p.cmdline())
                ):
                    left.append(p)
            except psutil.NoSuchProcess:
                pass
        return left

    wait_until(lambda: not workers_left(), PROMPT_S)  # close ends the worker; its exit takes a moment
    assert not workers_left()
    leaked = temp_entries(private_tmp, watched) - before_tmp
    assert not leaked, f"temporary files left behind: {sorted(leaked)}"
    print(f"{fault}: worst {worst:.3f} s over {REPEATS}")
