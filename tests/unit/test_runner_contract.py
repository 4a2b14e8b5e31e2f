"""The isolation contract (docs/ISOLATION.md), item by item, with tiny fake tasks and a real worker.

Each test would fail if its item broke. Tasks live in tests/fake_tasks.py; the worker
imports them by name, as it imports the real DA3 task.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import psutil
import pytest

from da3_core.contract import (
    ArgumentNotPicklableError,
    ResultNotCPUError,
    TaskCancelledError,
    TaskError,
    TaskTimeoutError,
    WorkerCrashedError,
)
from da3_core.gpu import Progress, Queued, Runner, Started, gpu
from tests import fake_tasks

FT = "tests.fake_tasks"


def no_zombies() -> bool:
    return all(c.status() != psutil.STATUS_ZOMBIE for c in psutil.Process().children(recursive=True))


# 1. The parent never imports torch (the full-app check is in tests/integration and tests/app).
def test_parent_modules_import_without_torch():
    code = textwrap.dedent(
        """
        import sys
        import da3_core.config, da3_core.contract, da3_core.gpu, da3_core.tasks, da3_core.presets
        import da3_core.worker.loop, da3_core.worker.context, da3_core.worker.tocpu
        from da3_core.gpu import Runner
        r = Runner()
        assert r.call("tests.fake_tasks:heavy_modules_imported") == []
        r.close()
        bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'depth_anything_3', 'torchvision'))
        print(bad)
        assert not bad, bad
        """
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=fake_tasks.__file__.rsplit("/tests/", 1)[0], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# 2. The worker is a spawned process (not forked): it does not see the parent's in-memory state.
def test_worker_is_spawned_not_forked(runner):
    assert runner._ctx.get_start_method() == "spawn"
    fake_tasks._FAKE_MODEL["model"] = "set in the parent"  # a fork would inherit this
    try:
        assert runner.call(f"{FT}:cached_model_loads") == 1
    finally:
        fake_tasks._FAKE_MODEL.clear()
    pid = runner.worker_pid
    assert pid != os.getpid()
    assert psutil.Process(pid).ppid() == os.getpid()


# 3. The model is cached in a module-global of the worker: loaded once, reused.
def test_model_cached_in_worker_global(runner):
    loads = [runner.call(f"{FT}:cached_model_loads") for _ in range(3)]
    assert loads == [1, 1, 1]
    assert runner.worker_starts == 1


# 4. Arguments cross by pickle; an unpicklable one fails in the caller, named, before any work.
def test_unpicklable_argument_fails_in_caller_with_its_name(runner):
    with pytest.raises(ArgumentNotPicklableError) as info:
        fake_tasks.square.submit(lambda: 1, runner=runner)
    assert info.value.argument == "x"
    assert "'x'" in str(info.value)
    with pytest.raises(ArgumentNotPicklableError, match="'value'"):
        runner.submit(f"{FT}:echo", (threading.Lock(),), signature=__import__("inspect").signature(fake_tasks.echo))
    assert runner.worker_starts == 0  # nothing was queued or started
    assert runner.status().queue_length == 0


def test_gpu_rejects_closures():
    def inner(x):
        return x

    with pytest.raises(TypeError, match="module-level"):
        gpu(inner)


# 5. Only CPU data comes back: tensors at any depth become numpy; what cannot is refused by path.
def test_tensors_at_any_depth_come_back_as_numpy(runner):
    out = runner.call(f"{FT}:cpu_tensors", duration=120)
    assert isinstance(out["plain"], np.ndarray) and out["plain"].tolist() == [0, 1, 2]
    assert isinstance(out["list"][0], np.ndarray)
    deep = out["list"][1]["deep"][0]
    assert isinstance(deep, np.ndarray) and deep.dtype == np.float32  # bfloat16 widened
    assert type(out["pair"]).__name__ == "Pair" and isinstance(out["pair"].left, np.ndarray)
    assert isinstance(out["holder"], fake_tasks.Holder) and isinstance(out["holder"].tensors[0], np.ndarray)
    assert type(out["aux"]) is dict and isinstance(out["aux"]["feat"], np.ndarray)  # addict -> dict
    assert type(out["gaussians"]) is dict and out["gaussians"]["means"].shape == (1, 4, 3)  # DA3 class -> dict
    assert out["dtype"] == "torch.float32"
    assert isinstance(out["grad"], np.ndarray)
    assert "torch" not in sys.modules  # unpickling all that needed no torch here


@pytest.mark.parametrize("path", ["gaussians.means", "frames[1]"])
def test_meta_tensor_is_refused_with_its_path(runner, path):
    t0 = time.monotonic()
    with pytest.raises(ResultNotCPUError) as info:
        runner.call(f"{FT}:meta_tensor_at", path, duration=120)
    assert path in str(info.value.message)
    assert "meta" in info.value.message
    assert time.monotonic() - t0 < 60  # the caller never blocks on a bad result
    pid = runner.worker_pid
    assert runner.call(f"{FT}:worker_pid") == pid  # the worker stays up


def test_torch_objects_and_unpicklable_results_are_refused(runner):
    with pytest.raises(ResultNotCPUError, match="torch"):
        runner.call(f"{FT}:torch_object_in_result", duration=120)
    with pytest.raises(ResultNotCPUError):
        runner.call(f"{FT}:unpicklable_result")
    assert runner.call(f"{FT}:square", 3) == 9


# 6. duration: the worker is killed when the budget runs out; the next call gets a fresh one.
def test_duration_kills_and_next_call_works(runner):
    pid = runner.call(f"{FT}:worker_pid")
    t0 = time.monotonic()
    with pytest.raises(TaskTimeoutError) as info:
        fake_tasks.overrun.call(30, runner=runner)
    elapsed = time.monotonic() - t0
    assert info.value.budget_s == 1.0
    assert 1.0 <= info.value.elapsed_s < 2.0 and elapsed < 3.0
    assert "1.0 s" in str(info.value)
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert runner.call(f"{FT}:square", 4) == 16
    assert runner.worker_pid != pid


def test_duration_callable_of_arguments(runner):
    job = fake_tasks.sleep_for.submit(0.1, runner=runner)
    assert job.budget_s == pytest.approx(5.1)
    assert job.result(30) == 0.1


# 7. A dead worker gives a crash error with exit code or signal within 2 s; the next call works.
@pytest.mark.parametrize(
    "task,expect",
    [("die_by_sigkill", "SIGKILL"), ("die_by_segfault", "SIGSEGV"), ("die_by_exit", "exit code 7")],
)
def test_worker_death_is_reported_fast_and_recovered(runner, task, expect):
    runner.call(f"{FT}:worker_pid")  # warm: measure the crash, not the start
    t0 = time.monotonic()
    with pytest.raises(WorkerCrashedError) as info:
        runner.call(f"{FT}:{task}")
    assert time.monotonic() - t0 < 2.0
    assert expect in str(info.value)
    assert runner.call(f"{FT}:square", 5) == 25
    assert no_zombies()


def test_worker_killed_from_outside_mid_call(runner):
    pid = runner.call(f"{FT}:worker_pid")
    job = runner.submit(f"{FT}:stubborn", (30,), duration=60)
    time.sleep(0.3)
    os.kill(pid, signal.SIGKILL)
    t0 = time.monotonic()
    with pytest.raises(WorkerCrashedError, match="SIGKILL"):
        job.result(10)
    assert time.monotonic() - t0 < 2.0
    assert runner.call(f"{FT}:square", 6) == 36


# 8. Exceptions keep type name, message and worker traceback; the worker stays warm.
def test_exception_keeps_type_message_traceback(runner):
    pid = runner.call(f"{FT}:worker_pid")
    with pytest.raises(ValueError) as info:  # also a ValueError, so callers can catch it as one
        runner.call(f"{FT}:fail", "bad frame 3")
    err = info.value
    assert isinstance(err, TaskError)
    assert err.type_name == "ValueError" and err.message == "bad frame 3"
    assert "fake_tasks.py" in err.remote_traceback and "in fail" in err.remote_traceback
    assert "bad frame 3" in str(err)
    with pytest.raises(TaskError) as info2:
        runner.call(f"{FT}:fail_custom", "custom")
    assert info2.value.type_name == "CustomFailure" and info2.value.module == "tests.fake_tasks"
    assert runner.call(f"{FT}:worker_pid") == pid


# 9. One call at a time, first come first served; many callers; no result to the wrong caller.
def test_many_threads_fifo_and_positions(runner):
    runner.call(f"{FT}:worker_pid")
    blocker = runner.submit(f"{FT}:tagged", ("blocker", 0.5))
    assert any(isinstance(e, Started) for e in _until_started(blocker))
    jobs = []
    for i in range(8):
        jobs.append(runner.submit(f"{FT}:tagged", (f"caller-{i}", 0.02)))
    first_positions = [next(iter(j.events(poll_s=0.01))) for j in jobs]
    assert all(isinstance(e, Queued) for e in first_positions)
    assert [e.position for e in first_positions] == list(range(1, 9))
    assert [e.ahead for e in first_positions] == list(range(1, 9))

    results: dict[int, object] = {}

    def collect(i: int) -> None:
        results[i] = jobs[i].result(60)

    threads = [threading.Thread(target=collect, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert blocker.result(10)[0] == "blocker"
    assert [results[i][0] for i in range(8)] == [f"caller-{i}" for i in range(8)]
    starts = [j.started_at for j in jobs]
    assert starts == sorted(starts)  # served in submission order
    assert all(j.started_at >= blocker.finished_at for j in jobs)  # one at a time


def _until_started(job):
    for event in job.events(poll_s=0.01):
        yield event
        if isinstance(event, Started):
            return


def test_positions_move_up_as_queue_drains(runner):
    runner.call(f"{FT}:worker_pid")
    first = runner.submit(f"{FT}:tagged", ("a", 0.3))
    list(_until_started(first))
    runner.submit(f"{FT}:tagged", ("b", 0.3))
    last = runner.submit(f"{FT}:tagged", ("c", 0.0))
    seen = list(last.events(poll_s=0.01))
    assert [(e.position, e.ahead) for e in seen if isinstance(e, Queued)] == [(2, 2), (1, 1)]
    assert isinstance(seen[-1], Started) or any(isinstance(e, Started) for e in seen)
    assert last.result(5)[0] == "c"


# 10. Progress streams while the task runs; cancel and giving up do not leave the worker busy.
def test_progress_events_stream_in_order(runner):
    events = []
    assert runner.call(f"{FT}:progress_steps", 5, on_event=events.append) == 5
    progress = [e for e in events if isinstance(e, Progress)]
    assert [p.detail for p in progress] == [f"{i}/5" for i in range(1, 6)]
    fractions = [p.fraction for p in progress]
    assert fractions == sorted(fractions) and fractions[0] == 0.0
    assert isinstance(events[0], Queued) and any(isinstance(e, Started) for e in events)


def test_cancel_cooperative_keeps_worker(runner):
    pid = runner.call(f"{FT}:worker_pid")
    job = runner.submit(f"{FT}:cancellable", (30,), duration=60)
    time.sleep(0.3)
    t0 = time.monotonic()
    job.cancel()
    with pytest.raises(TaskCancelledError):
        job.result(10)
    assert time.monotonic() - t0 < 1.0
    assert runner.call(f"{FT}:worker_pid") == pid


def test_cancel_stubborn_task_kills_after_grace(runner):
    pid = runner.call(f"{FT}:worker_pid")
    job = runner.submit(f"{FT}:stubborn", (30,), duration=60)
    time.sleep(0.3)
    job.cancel()
    with pytest.raises(TaskCancelledError, match="restarted"):
        job.result(10)
    assert runner.call(f"{FT}:worker_pid") != pid


def test_cancel_while_queued(runner):
    runner.call(f"{FT}:worker_pid")
    runner.submit(f"{FT}:tagged", ("a", 0.5))
    queued = runner.submit(f"{FT}:square", (2,))
    queued.cancel()
    with pytest.raises(TaskCancelledError, match="queued"):
        queued.result(1)


def test_caller_giving_up_cancels_the_call(runner):
    pid = runner.call(f"{FT}:worker_pid")

    class GaveUp(Exception):
        pass

    def on_event(event):
        if isinstance(event, Progress):
            raise GaveUp  # what Streamlit does to a script whose session went away

    with pytest.raises(GaveUp):
        runner.call(f"{FT}:progress_steps", 1000, 0.05, on_event=on_event, duration=120)
    t0 = time.monotonic()
    assert runner.call(f"{FT}:square", 7) == 49  # the worker was freed, not busy for 50 s
    assert time.monotonic() - t0 < 2.0
    assert runner.worker_pid == pid


def test_abandoned_calls_are_cancelled():
    """A watched call whose watcher goes silent (a closed tab) is cancelled, queued or running."""
    r = Runner(cancel_grace_s=0.5, abandon_after_s=0.5)
    try:
        pid = r.call(f"{FT}:worker_pid")
        running = r.submit(f"{FT}:cancellable", (30,), duration=60)
        queued = r.submit(f"{FT}:square", (3,))
        running.touch()
        queued.touch()
        t0 = time.monotonic()
        with pytest.raises(TaskCancelledError):
            running.result(10)
        with pytest.raises(TaskCancelledError, match="left"):
            queued.result(10)
        assert time.monotonic() - t0 < 3.0
        unwatched = r.submit(f"{FT}:tagged", ("kept", 1.0))  # never touched: never abandoned
        assert unwatched.result(10)[0] == "kept"
        assert r.call(f"{FT}:worker_pid") == pid
    finally:
        r.close()


# 11. The worker never outlives the server (killed, terminated, interrupted or exiting).
@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM", "SIGINT", "exit"])
def test_worker_exits_when_parent_dies(how):
    code = textwrap.dedent(
        f"""
        import os, sys, time
        from da3_core.gpu import Runner
        r = Runner()
        print(r.call("tests.fake_tasks:worker_pid"), flush=True)
        if {how!r} == "exit":
            sys.exit(0)
        time.sleep(60)
        """
    )
    root = fake_tasks.__file__.rsplit("/tests/", 1)[0]
    parent = subprocess.Popen([sys.executable, "-c", code], cwd=root, stdout=subprocess.PIPE, text=True)
    worker = int(parent.stdout.readline())
    assert psutil.pid_exists(worker)
    if how != "exit":
        parent.send_signal(getattr(signal, how))
    parent.wait(30)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if not psutil.pid_exists(worker) or psutil.Process(worker).status() == psutil.STATUS_ZOMBIE:
            break
        time.sleep(0.05)
    assert not psutil.pid_exists(worker) or psutil.Process(worker).status() == psutil.STATUS_ZOMBIE


# 12. In-process mode exists for debugging; isolated is the default.
def test_inprocess_mode_and_isolated_default(monkeypatch):
    from da3_core.config import load_settings
    from da3_core.gpu import default_runner, set_default_runner

    assert load_settings({}).isolation == "isolated"
    r = Runner(isolation="inprocess")
    try:
        assert r.call(f"{FT}:worker_pid") == os.getpid()
        events = []
        assert r.call(f"{FT}:progress_steps", 3, 0.0, on_event=events.append) == 3
        assert sum(isinstance(e, Progress) for e in events) == 3
        with pytest.raises(ValueError, match="boom"):
            r.call(f"{FT}:fail", "boom")
    finally:
        r.close()
    monkeypatch.delenv("DA3_ISOLATION", raising=False)
    set_default_runner(None)
    d = default_runner()
    try:
        assert d.isolation == "isolated"
        assert fake_tasks.square(3) == 9
        assert d.worker_pid not in (None, os.getpid())
    finally:
        d.close()
        set_default_runner(None)


def test_memory_exhaustion_in_worker_recovers(runner):
    runner.call(f"{FT}:worker_pid")
    t0 = time.monotonic()
    with pytest.raises((TaskError, WorkerCrashedError)) as info:
        runner.call(f"{FT}:exhaust_memory")
    assert time.monotonic() - t0 < 2.0
    if isinstance(info.value, TaskError):
        assert info.value.type_name == "MemoryError"
    assert runner.call(f"{FT}:square", 8) == 64


def test_close_during_a_call_ends_it_cleanly():
    from da3_core.contract import RunnerClosedError

    r = Runner()
    r.call(f"{FT}:worker_pid")
    pid = r.worker_pid
    running = r.submit(f"{FT}:stubborn", (30,), duration=60)
    queued = r.submit(f"{FT}:square", (2,))
    time.sleep(0.3)
    r.close()
    with pytest.raises(RunnerClosedError):
        running.result(5)
    with pytest.raises(RunnerClosedError):
        queued.result(5)
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert r.status().state == "closed"


def test_status_reports_state_and_errors(runner):
    assert runner.status().state in ("stopped", "starting")
    runner.call(f"{FT}:worker_pid")
    st = runner.status()
    assert st.state == "idle" and st.worker_pid and st.worker_rss_mb and st.worker_rss_mb > 1
    with pytest.raises(ValueError):
        runner.call(f"{FT}:fail", "recorded")
    st = runner.status()
    assert st.calls_failed == 1 and st.recent_errors[-1].message == "recorded"
    runner.restart()
    assert runner.status().state == "stopped"
    assert runner.call(f"{FT}:square", 2) == 4
    assert runner.status().worker_starts == 2
