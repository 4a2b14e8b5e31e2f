"""Faults, each ten times in a row: the caller gets the right error within 2 s, the next call
succeeds, no orphan or zombie process remains, no temporary file leaks."""

from __future__ import annotations

import os
import signal
import tempfile
import threading
import time
from pathlib import Path

import psutil
import pytest

from da3_core.runner.protocol import TaskError, TaskTimeoutError, WorkerCrashedError
from da3_core.runner import Runner

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


def temp_entries(folder: Path) -> set[str]:
    names = set(os.listdir(folder))
    shm = Path("/dev/shm")
    if shm.is_dir():  # multiprocessing's semaphores and shared memory
        names |= {f"shm:{p}" for p in os.listdir(shm) if p.startswith(("sem.mp", "psm_", "mp-"))}
    return names


def descendants() -> list[psutil.Process]:
    return psutil.Process().children(recursive=True)


def kill_from_outside(runner: Runner) -> None:
    """SIGKILL the worker while it runs a call (as the OOM killer or an operator would)."""
    pid = runner.worker_pid

    def later() -> None:
        time.sleep(0.2)
        os.kill(pid, signal.SIGKILL)

    threading.Thread(target=later, daemon=True).start()
    runner.call(f"{FT}:stubborn", 30, duration=60)


FAULTS = {
    "sigkill mid-call": (kill_from_outside, WorkerCrashedError, "SIGKILL"),
    "segfault": (lambda r: r.call(f"{FT}:die_by_segfault"), WorkerCrashedError, "SIGSEGV"),
    "os._exit": (lambda r: r.call(f"{FT}:die_by_exit", 9), WorkerCrashedError, "exit code 9"),
    "duration overrun": (lambda r: r.call(f"{FT}:stubborn", 30, duration=0.5), TaskTimeoutError, "budget of 0.5 s"),
    "exception": (lambda r: r.call(f"{FT}:fail", "bad input"), TaskError, "bad input"),
    "memory exhaustion": (lambda r: r.call(f"{FT}:exhaust_memory"), TaskError, "MemoryError"),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_fault_ten_times_in_a_row(fault, private_tmp):
    inject, error_type, text = FAULTS[fault]
    before_tmp = temp_entries(private_tmp)
    runner = Runner(cancel_grace_s=1.0)
    worst = 0.0
    try:
        runner.call(f"{FT}:square", 1)
        for i in range(REPEATS):
            budget = {"duration overrun": 0.5}.get(fault, 0.0)
            t0 = time.monotonic()
            with pytest.raises(error_type) as info:
                inject(runner)
            # Time from the fault to the caller's error (an overrun's budget is not the fault).
            elapsed = time.monotonic() - t0 - budget - (0.2 if fault == "sigkill mid-call" else 0.0)
            worst = max(worst, elapsed)
            assert text in str(info.value), (i, str(info.value))
            assert elapsed < 2.0, f"{fault} #{i}: error after {elapsed:.2f} s"
            assert runner.call(f"{FT}:square", i) == i * i, f"{fault} #{i}: next call failed"
            zombies = [p.pid for p in descendants() if p.status() == psutil.STATUS_ZOMBIE]
            assert not zombies, f"{fault} #{i}: zombies {zombies}"
            assert len([p for p in descendants() if p.is_running()]) <= 2  # the live worker (+ a resource tracker)
    finally:
        runner.close()
    time.sleep(0.2)
    assert not [p for p in descendants() if p.name().startswith("python") and p.status() != psutil.STATUS_ZOMBIE and "resource_tracker" not in " ".join(p.cmdline())]
    leaked = temp_entries(private_tmp) - before_tmp
    assert not leaked, f"temporary files left behind: {sorted(leaked)}"
    print(f"{fault}: worst {worst:.3f} s over {REPEATS}")
