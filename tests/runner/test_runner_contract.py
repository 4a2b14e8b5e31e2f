"""The isolation contract (docs/ISOLATION.md), item by item, with tiny fake tasks and a real worker.

Each test would fail if its item broke. Tasks live in tests/fake_tasks.py; the worker
imports them by name, as it imports the real DA3 task.

Every test about the contract runs on both backends: ``[process]`` (spawned worker
processes) and ``[ray]`` (Ray actors, on the session's local Ray cluster of
tests/runner/ray_support.py). Tests about spawned processes themselves (spawn, parent death) and
about in-process mode run once.

Tests that leave the worker alive and healthy share one module-scoped runner per backend
(``warm``), which saves a worker start, and for the tensor tests a torch import, per test.
Tests that kill, break, restart or count the worker get a fresh one (``any_runner``).

No test sleeps to let a call start: each waits for the call's own events
(`tests.runner.waiting`), and a call that must stay running while the test looks at the
queue is a `Gate` the test opens. Time bounds are the contract's own (2 s for a crash) or
`PROMPT_S`, far from the broken alternative each test names.
"""

from __future__ import annotations

import logging
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import psutil
import pytest

from da3_core.contract import ModelSpec, ReadOnlyDict, Reconstruction
from da3_core.runner import Progress, Queued, Runner, Started, gpu
from da3_core.runner.protocol import (
    ArgumentNotPicklableError,
    ResultNotCPUError,
    TaskCancelledError,
    TaskError,
    TaskTimeoutError,
    WorkerCrashedError,
)
from tests import fake_tasks
from tests.runner.ray_support import is_ray, make_runner, settled
from tests.runner.waiting import EVENT_TIMEOUT_S, PROMPT_S, Gate, until_running, until_started

FT = "tests.fake_tasks"


def _drained(runner):
    # A failed test may leave calls behind: let them drain, or restart, so the next test
    # starts on an idle runner.
    deadline = time.monotonic() + 5
    while runner.status().state == "busy" and time.monotonic() < deadline:
        time.sleep(0.05)
    if runner.status().state == "busy":
        runner.restart()


@pytest.fixture(params=["process", "ray"])
def warm(request):
    """The module's shared runner of each backend, for tests that leave its worker alive."""
    runner = request.getfixturevalue("module_runner" if request.param == "process" else "ray_module_runner")
    yield runner
    _drained(runner)


@pytest.fixture
def warm_process(module_runner):
    """The module's shared process runner, for tests about spawned worker processes."""
    yield module_runner
    _drained(module_runner)


def no_zombies(within_s: float = 0.0) -> bool:
    """No zombie among this process's descendants (within ``within_s``: Ray's raylet, which a
    local cluster makes our descendant, reaps its actor processes itself, a moment later)."""
    deadline = time.monotonic() + within_s
    while True:
        zombies = []
        for c in psutil.Process().children(recursive=True):
            try:
                if c.status() == psutil.STATUS_ZOMBIE:
                    zombies.append(c)
            except psutil.NoSuchProcess:
                pass
        if not zombies or time.monotonic() >= deadline:
            return not zombies
        time.sleep(0.01)


# 1. The parent never imports torch (the full-app check is in tests/integration and tests/app).
def test_parent_modules_import_without_torch():
    code = textwrap.dedent(
        """
        import sys
        import da3_core.config, da3_core.contract, da3_core.runner, da3_core.runs.tasks, da3_core.presets
        import da3_core.runner.inside.loop, da3_core.runner.context, da3_core.runner.inside.tocpu
        from da3_core.runner import Runner
        r = Runner()
        assert r.call("tests.fake_tasks:heavy_modules_imported") == []
        r.close()
        bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'depth_anything_3', 'torchvision'))
        print(bad)
        assert not bad, bad
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=fake_tasks.__file__.rsplit("/tests/", 1)[0],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# 2. The worker is a spawned process (not forked): it does not see the parent's in-memory state.
def test_worker_is_spawned_not_forked(warm_process):
    warm = warm_process
    assert warm.slots[0]._ctx.get_start_method() == "spawn"
    fake_tasks._FAKE_MODEL["model"] = "set in the parent"  # a fork would inherit this
    try:
        assert warm.call(f"{FT}:cached_model_loads") == 1
    finally:
        fake_tasks._FAKE_MODEL.clear()
    pid = warm.worker_pid
    assert pid != os.getpid()
    assert psutil.Process(pid).ppid() == os.getpid()


# 3. The model is cached in a module-global of the worker: loaded once, reused.
def test_model_cached_in_worker_global(warm):
    starts = warm.worker_starts
    loads = [warm.call(f"{FT}:cached_model_loads") for _ in range(3)]
    assert loads == [1, 1, 1]
    assert warm.worker_starts == max(starts, 1)  # no new worker for the 2nd and 3rd call


# 4. Arguments cross by pickle; an unpicklable one fails in the caller, named, before any work.
def test_unpicklable_argument_fails_in_caller_with_its_name(any_runner):
    runner = any_runner
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
def test_tensors_at_any_depth_come_back_as_numpy(warm):
    out = warm.call(f"{FT}:cpu_tensors", duration=120)
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
def test_meta_tensor_is_refused_with_its_path(warm, path):
    runner = warm
    t0 = time.monotonic()
    with pytest.raises(ResultNotCPUError) as info:
        runner.call(f"{FT}:meta_tensor_at", path, duration=120)
    assert path in str(info.value.message)
    assert "meta" in info.value.message
    assert time.monotonic() - t0 < 60  # the caller never blocks on a bad result
    pid = runner.worker_pid
    assert runner.call(f"{FT}:worker_pid") == pid  # the worker stays up


def test_torch_objects_and_unpicklable_results_are_refused(warm):
    with pytest.raises(ResultNotCPUError, match="torch"):
        warm.call(f"{FT}:torch_object_in_result", duration=120)
    with pytest.raises(ResultNotCPUError):
        warm.call(f"{FT}:unpicklable_result")
    assert warm.call(f"{FT}:square", 3) == 9


# 6. duration: the worker is killed when the budget runs out; the next call gets a fresh one.
def test_duration_kills_and_next_call_works(any_runner):
    runner = any_runner
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


def test_duration_callable_of_arguments(warm):
    job = fake_tasks.sleep_for.submit(0.1, runner=warm)
    assert job.budget_s == pytest.approx(5.1)
    assert job.result(30) == 0.1


# 7. A dead worker gives a crash error with exit code or signal within 2 s; the next call works.
@pytest.mark.parametrize(
    "task,expect",
    [("die_by_sigkill", "SIGKILL"), ("die_by_segfault", "SIGSEGV"), ("die_by_exit", "exit code 7")],
)
def test_worker_death_is_reported_fast_and_recovered(any_runner, task, expect):
    runner = any_runner
    runner.call(f"{FT}:worker_pid")  # warm: measure the crash, not the start
    t0 = time.monotonic()
    with pytest.raises(WorkerCrashedError) as info:
        runner.call(f"{FT}:{task}")
    assert time.monotonic() - t0 < 2.0
    # Ray does not tell how its worker process ended (signal or exit code), only that it died.
    assert ("Ray actor's process died" if is_ray(runner) else expect) in str(info.value)
    assert runner.call(f"{FT}:square", 5) == 25
    assert no_zombies(within_s=2.0 if is_ray(runner) else 0.0)


def test_worker_killed_from_outside_mid_call(any_runner):
    runner = any_runner
    pid = runner.call(f"{FT}:worker_pid")
    job = runner.submit(f"{FT}:stubborn", (30,), duration=60)
    until_running(job)  # mid-call: the task's body runs
    os.kill(pid, signal.SIGKILL)
    t0 = time.monotonic()
    with pytest.raises(WorkerCrashedError, match="process died" if is_ray(runner) else "SIGKILL"):
        job.result(10)
    assert time.monotonic() - t0 < 2.0
    assert runner.call(f"{FT}:square", 6) == 36


# 8. Exceptions keep type name, message and worker traceback; the worker stays warm.
def test_exception_keeps_type_message_traceback(warm):
    pid = warm.call(f"{FT}:worker_pid")
    with pytest.raises(ValueError) as info:  # also a ValueError, so callers can catch it as one
        warm.call(f"{FT}:fail", "bad frame 3")
    err = info.value
    assert isinstance(err, TaskError)
    assert err.type_name == "ValueError" and err.message == "bad frame 3"
    assert "fake_tasks.py" in err.remote_traceback and "in fail" in err.remote_traceback
    assert "bad frame 3" in str(err)
    with pytest.raises(TaskError) as info2:
        warm.call(f"{FT}:fail_custom", "custom")
    assert info2.value.type_name == "CustomFailure" and info2.value.module == "tests.fake_tasks"
    assert warm.call(f"{FT}:worker_pid") == pid


# 9. One call at a time, first come first served; many callers; no result to the wrong caller.
def test_many_threads_fifo_and_positions(warm, tmp_path):
    warm.call(f"{FT}:worker_pid")
    gate = Gate(tmp_path, "blocker")
    blocker = warm.submit(f"{FT}:gate", gate.args)
    until_started(blocker)  # it runs until the gate opens: the eight below queue behind it
    jobs = []
    for i in range(8):
        jobs.append(warm.submit(f"{FT}:tagged", (f"caller-{i}", 0.02)))
    first_positions = [next(iter(j.events())) for j in jobs]
    assert all(isinstance(e, Queued) for e in first_positions)
    assert [e.position for e in first_positions] == list(range(1, 9))
    assert [e.ahead for e in first_positions] == list(range(1, 9))
    gate.open()

    results: dict[int, object] = {}

    def collect(i: int) -> None:
        results[i] = jobs[i].result(60)

    threads = [threading.Thread(target=collect, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert blocker.result(10)[0] == gate.name
    assert [results[i][0] for i in range(8)] == [f"caller-{i}" for i in range(8)]
    starts = [j.started_at for j in jobs]
    assert starts == sorted(starts)  # served in submission order
    assert all(j.started_at >= blocker.finished_at for j in jobs)  # one at a time


def test_positions_move_up_as_queue_drains(warm, tmp_path):
    warm.call(f"{FT}:worker_pid")
    gates = [Gate(tmp_path, "a"), Gate(tmp_path, "b")]
    first = warm.submit(f"{FT}:gate", gates[0].args)
    until_started(first)
    second = warm.submit(f"{FT}:gate", gates[1].args)
    last = warm.submit(f"{FT}:tagged", ("c", 0.0))
    assert last.poll_events() == [Queued(2, 2)]
    gates[0].open()  # the first ends: the second starts and the last moves up
    moved = next((e for e in last.events(timeout=EVENT_TIMEOUT_S) if isinstance(e, Queued)), None)
    assert moved == Queued(1, 1)
    gates[1].open()
    assert any(isinstance(e, Started) for e in until_started(last))
    assert last.result(30)[0] == "c"
    assert second.result(30)[0] == gates[1].name


# 10. Progress streams while the task runs; cancel and giving up do not leave the worker busy.
def test_progress_events_stream_in_order(warm):
    events = []
    assert warm.call(f"{FT}:progress_steps", 5, on_event=events.append) == 5
    progress = [e for e in events if isinstance(e, Progress)]
    assert [p.detail for p in progress] == [f"{i}/5" for i in range(1, 6)]
    fractions = [p.fraction for p in progress]
    assert fractions == sorted(fractions) and fractions[0] == 0.0
    assert isinstance(events[0], Queued) and any(isinstance(e, Started) for e in events)


def test_cancel_cooperative_keeps_worker(warm):
    pid = warm.call(f"{FT}:worker_pid")
    job = warm.submit(f"{FT}:cancellable", (30,), duration=60)
    until_running(job)
    t0 = time.monotonic()
    job.cancel()
    with pytest.raises(TaskCancelledError) as info:
        job.result(10)
    # Seen at the task's next checkpoint (every 20 ms), not at its end (30 s) or budget (60 s)...
    assert time.monotonic() - t0 < PROMPT_S
    # ...and by the task itself: no kill after the grace period, the same worker goes on.
    assert "restarted" not in str(info.value)
    assert warm.call(f"{FT}:worker_pid") == pid


def test_cancel_stubborn_task_kills_after_grace(any_runner):
    runner = any_runner
    pid = runner.call(f"{FT}:worker_pid")
    job = runner.submit(f"{FT}:stubborn", (30,), duration=60)
    until_running(job)
    job.cancel()
    with pytest.raises(TaskCancelledError, match="restarted"):
        job.result(10)
    assert runner.call(f"{FT}:worker_pid") != pid


def test_cancel_while_queued(warm, tmp_path):
    warm.call(f"{FT}:worker_pid")
    gate = Gate(tmp_path, "a")
    blocker = warm.submit(f"{FT}:gate", gate.args)
    queued = warm.submit(f"{FT}:square", (2,))
    queued.cancel()
    with pytest.raises(TaskCancelledError, match="queued"):
        queued.result(1)
    gate.open()
    assert blocker.result(30)[0] == gate.name


def test_caller_giving_up_cancels_the_call(warm):
    pid = warm.call(f"{FT}:worker_pid")

    class GaveUp(Exception):
        pass

    def on_event(event):
        if isinstance(event, Progress):
            raise GaveUp  # what Streamlit does to a script whose session went away

    with pytest.raises(GaveUp):
        warm.call(f"{FT}:progress_steps", 1000, 0.05, on_event=on_event, duration=120)
    t0 = time.monotonic()
    assert warm.call(f"{FT}:square", 7) == 49  # the worker was freed, not busy for 50 s
    assert time.monotonic() - t0 < PROMPT_S
    assert warm.worker_pid == pid


def test_abandoned_calls_are_cancelled(backend):
    """A watched call whose watcher goes silent (a closed tab) is cancelled, queued or running."""
    r = make_runner(backend, cancel_grace_s=0.5, abandon_after_s=0.5)
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
    # The parent starts with the signal state a shell gives a server (SIGINT unblocked, Python's
    # own handler), whatever this test process inherited: the full suite's fresh clones twice saw
    # the parent ignore SIGINT here (never when the test ran alone).
    code = textwrap.dedent(
        f"""
        import os, signal, sys, time
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {{signal.SIGINT, signal.SIGTERM}})
        signal.signal(signal.SIGINT, signal.default_int_handler)
        from da3_core.runner import Runner
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
    from da3_core.runner import default_runner, set_default_runner

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


def test_the_default_runner_is_made_as_the_application_says(monkeypatch):
    """The runner reads no settings: the application hands `default_runner` a factory
    (`da3_core.runs.tasks`: from the DA3_* settings); without one it is ``Runner()``."""
    from da3_core.runner import default_runner, set_default_runner, set_default_runner_factory
    from da3_core.runs import tasks

    monkeypatch.setenv("DA3_ISOLATION", "inprocess")
    monkeypatch.setenv("DA3_CANCEL_GRACE_S", "3")
    set_default_runner(None)
    try:
        d = default_runner()
        assert (d.isolation, d.policy.cancel_grace_s) == ("inprocess", 3.0)
        assert default_runner() is d
        d.close()
        set_default_runner_factory(None)
        d = default_runner()  # the closed one is replaced, by Runner()'s defaults this time
        assert (d.isolation, d.policy.cancel_grace_s) == ("isolated", 10.0)
        d.close()
    finally:
        set_default_runner_factory(tasks._runner_from_settings)
        set_default_runner(None)


def test_memory_exhaustion_in_worker_recovers(any_runner):
    runner = any_runner
    runner.call(f"{FT}:worker_pid")
    t0 = time.monotonic()
    with pytest.raises((TaskError, WorkerCrashedError)) as info:
        runner.call(f"{FT}:exhaust_memory")
    assert time.monotonic() - t0 < 2.0
    if isinstance(info.value, TaskError):
        assert info.value.type_name == "MemoryError"
    assert runner.call(f"{FT}:square", 8) == 64


def test_close_during_a_call_ends_it_cleanly(backend):
    from da3_core.runner.protocol import RunnerClosedError

    r = make_runner(backend)
    r.call(f"{FT}:worker_pid")
    pid = r.worker_pid
    running = r.submit(f"{FT}:stubborn", (30,), duration=60)
    queued = r.submit(f"{FT}:square", (2,))
    until_running(running)
    r.close()
    with pytest.raises(RunnerClosedError):
        running.result(5)
    with pytest.raises(RunnerClosedError):
        queued.result(5)
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert r.status().state == "closed"


def test_status_reports_state_and_errors(any_runner):
    runner = any_runner
    assert runner.status().state in ("stopped", "starting")
    runner.call(f"{FT}:worker_pid")
    st = settled(runner)
    assert st.state == "idle" and st.worker_pid and st.worker_rss_mb and st.worker_rss_mb > 1
    with pytest.raises(ValueError):
        runner.call(f"{FT}:fail", "recorded")
    st = settled(runner)
    assert st.calls_failed == 1 and st.recent_errors[-1].message == "recorded"
    runner.restart()
    assert runner.status().state == "stopped"
    assert runner.call(f"{FT}:square", 2) == 4
    assert runner.status().worker_starts == 2


# 10 (continued). A cancel is seen at once, in both modes, and the call reads as cancelled.
@pytest.mark.parametrize("isolation", ["isolated", "ray", "inprocess"])
def test_cancelled_call_reads_as_cancelled(request, isolation):
    """The task stops at a checkpoint (CancelledInWorker); the caller gets TaskCancelledError, not a TaskError."""
    warm = (
        request.getfixturevalue("warm_process" if isolation == "isolated" else "ray_module_runner")
        if isolation != "inprocess"
        else None
    )
    r = warm or Runner(isolation="inprocess")
    try:
        job = r.submit(f"{FT}:progress_steps", (1000, 0.05), duration=120)
        until_running(job)
        job.cancel()
        with pytest.raises(TaskCancelledError) as info:
            job.result(10)
        assert not isinstance(info.value, TaskError)
        assert "cancelled" in str(info.value)
        assert r.call(f"{FT}:square", 3) == 9  # the runner serves the next call
    finally:
        if r is not warm:
            r.close()


def test_checkpoint_exception_without_a_cancel_stays_a_task_error(warm):
    with pytest.raises(TaskError) as info:
        warm.call(f"{FT}:raise_cancelled_unasked")
    assert info.value.type_name == "CancelledInWorker"
    assert not isinstance(info.value, TaskCancelledError)


def test_cancel_reaches_the_worker_without_waiting_for_a_deadline(warm):
    """The slot's thread wakes when a caller cancels; nothing ticks, and its wait would
    otherwise last until the call's budget runs out (60 s here)."""
    pid = warm.call(f"{FT}:worker_pid")
    job = warm.submit(f"{FT}:cancellable", (30,), duration=60)
    # The task runs and the slot's thread, having passed its first report on, waits until the
    # budget's end (a cancel that lands before the wait begins is in the wake-up pipe: the
    # wait returns at once all the same).
    until_running(job)
    t0 = time.monotonic()
    job.cancel()
    with pytest.raises(TaskCancelledError) as info:
        job.result(10)
    assert time.monotonic() - t0 < PROMPT_S  # not at the budget's end (60 s)
    assert "restarted" not in str(info.value) and warm.call(f"{FT}:worker_pid") == pid  # the task saw it: no kill


def test_inprocess_cancel_reaches_a_task_that_only_checks():
    """In-process, `Job.cancel` sets the call's event at once: `check_cancelled` alone sees it."""
    r = Runner(isolation="inprocess")
    try:
        job = r.submit(f"{FT}:cancellable", (30,), duration=60)  # reports once, then only checks
        until_running(job)
        t0 = time.monotonic()
        job.cancel()
        with pytest.raises(TaskCancelledError):
            job.result(PROMPT_S)
        assert time.monotonic() - t0 < PROMPT_S  # not at the task's end (30 s): nothing kills in-process
    finally:
        r.close()


def test_inprocess_cancel_stops_at_the_next_progress_report():
    """No progress report goes through after the cancel (it used to take one report to notice)."""
    r = Runner(isolation="inprocess")
    try:
        job = r.submit(f"{FT}:progress_steps", (1000, 0.2), duration=120)
        for event in job.events():
            if isinstance(event, Progress):
                break
        job.cancel()
        cancelled_at = job.elapsed_s  # any Progress stamped later was reported after the cancel
        with pytest.raises(TaskCancelledError):
            job.result(5)
        late = [e for e in job.poll_events() if isinstance(e, Progress) and e.elapsed_s > cancelled_at]
        assert late == []
    finally:
        r.close()


def test_inprocess_abandoned_call_is_cancelled_at_a_progress_report():
    """In-process, a silent watcher is noticed where the task reports progress."""
    r = Runner(isolation="inprocess", abandon_after_s=0.3)
    try:
        job = r.submit(f"{FT}:progress_steps", (1000, 0.05), duration=120)
        job.touch()  # watched once, then never again: a closed tab
        t0 = time.monotonic()
        with pytest.raises(TaskCancelledError):
            job.result(10)
        assert time.monotonic() - t0 < PROMPT_S  # 0.3 s silent, then the next report (0.05 s); not the task's 50 s
    finally:
        r.close()


def test_budget_enforced_while_the_task_floods_progress(any_runner):
    runner = any_runner
    """Progress faster than the dispatcher reads it must not starve the deadline check."""
    runner.call(f"{FT}:worker_pid")
    t0 = time.monotonic()
    with pytest.raises(TaskTimeoutError):
        runner.call(f"{FT}:progress_flood", 8, duration=1)
    assert time.monotonic() - t0 < 4.0
    assert runner.call(f"{FT}:square", 2) == 4


def test_cancel_while_the_task_floods_progress(warm):
    pid = warm.call(f"{FT}:worker_pid")
    job = warm.submit(f"{FT}:progress_flood", (30,), duration=60)
    until_running(job)  # flooding
    t0 = time.monotonic()
    job.cancel()
    with pytest.raises(TaskCancelledError):
        job.result(40)
    assert time.monotonic() - t0 < PROMPT_S  # not starved until the flood's end (30 s)
    assert warm.call(f"{FT}:worker_pid") == pid


# Job.add_done_callback: once per job, after it finished, whatever the outcome.
class _Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[int, str, bool]] = []
        self.ran = threading.Event()

    def __call__(self, job) -> None:
        self.calls.append((job.call_id, threading.current_thread().name, job.done()))
        self.ran.set()


def test_done_callback_after_ok_and_error_runs_once_in_the_dispatcher(warm):
    for task, args in ((f"{FT}:square", (3,)), (f"{FT}:fail", ("x",))):
        rec = _Recorder()
        job = warm.submit(task, args)
        job.add_done_callback(rec)
        assert rec.ran.wait(10)
        assert rec.calls == [(job.call_id, f"{warm.name}-1-dispatch", True)]
        job.cancel()  # too late: nothing more happens
        job._finish(error=RuntimeError("a second finish"))  # ignored: the first one wins
        time.sleep(0.05)
        assert len(rec.calls) == 1
    assert warm.call(f"{FT}:square", 4) == 16


def test_done_callback_on_cancel_while_queued(warm, tmp_path):
    warm.call(f"{FT}:worker_pid")
    gate = Gate(tmp_path, "a")
    blocker = warm.submit(f"{FT}:gate", gate.args)
    queued = warm.submit(f"{FT}:square", (2,))
    rec = _Recorder()
    queued.add_done_callback(rec)
    queued.cancel()
    # Run by the thread that cancelled, before cancel() returned.
    assert rec.calls == [(queued.call_id, threading.current_thread().name, True)]
    with pytest.raises(TaskCancelledError):
        queued.result(0)
    gate.open()
    assert blocker.result(30)[0] == gate.name
    assert len(rec.calls) == 1


def test_done_callback_on_a_finished_job_runs_at_once(warm):
    job = warm.submit(f"{FT}:square", (5,))
    assert job.result(10) == 25
    rec = _Recorder()
    job.add_done_callback(rec)
    assert rec.calls == [(job.call_id, threading.current_thread().name, True)]


def test_done_callback_errors_are_logged_and_never_break_the_dispatcher(warm, caplog):
    def broken(job):
        raise RuntimeError("callback bug")

    rec = _Recorder()
    with caplog.at_level(logging.ERROR, logger="da3_core.runner"):
        job = warm.submit(f"{FT}:square", (6,))
        job.add_done_callback(broken)
        job.add_done_callback(rec)  # later callbacks still run
        assert job.result(10) == 36
        assert rec.ran.wait(10)
    assert any(
        "callback" in r.getMessage() and r.exc_info and "callback bug" in str(r.exc_info[1]) for r in caplog.records
    )
    assert warm.call(f"{FT}:square", 7) == 49


def test_task_failures_are_logged_as_one_line_with_the_worker_traceback_at_debug(warm, caplog):
    with caplog.at_level(logging.DEBUG, logger="da3_core.runner"):
        with pytest.raises(ValueError):
            warm.call(f"{FT}:fail", "logged failure")
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "logged failure" in errors[0] and "ValueError" in errors[0] and "\n" not in errors[0], (
        errors
    )
    debug = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert any("worker traceback" in m and "in fail" in m for m in debug), debug


# Task paths: one parser for the parent (pickling a @gpu function) and the worker.
def test_task_paths_resolve_alike_in_parent_and_worker():
    from da3_core.runner.inside.calls import resolve_task
    from da3_core.runner.taskpath import resolve_task_path, split_task_path

    assert split_task_path("tests.fake_tasks:square") == ("tests.fake_tasks", "square")
    for bad in ("tests.fake_tasks", ":square", "tests.fake_tasks:"):
        with pytest.raises(ValueError, match="package.module:function"):
            split_task_path(bad)
    assert resolve_task_path(fake_tasks.square.task) is fake_tasks.square
    assert pickle.loads(pickle.dumps(fake_tasks.square)) is fake_tasks.square
    assert resolve_task(fake_tasks.square.task) is fake_tasks.square.__gpu_wrapped__  # unwrapped in the worker
    assert resolve_task(f"{FT}:Pair._make") == fake_tasks.Pair._make  # nested names


# The result type is frozen, its dicts included, across the process boundary too.
def _reconstruction(timings: dict, params: dict) -> Reconstruction:
    return Reconstruction(
        depth=np.ones((1, 2, 3), np.float32),
        conf=None,
        extrinsics=None,
        intrinsics=None,
        images=np.zeros((1, 2, 3, 3), np.uint8),
        sky=None,
        is_metric=False,
        scale_factor=None,
        gaussians=None,
        names=("a.png",),
        model=ModelSpec("demo", "da3-small"),
        preset="da3-small",
        device="cpu",
        timings=timings,
        params=params,
    )


MUTATIONS = {
    "setitem": lambda d: d.__setitem__("x", 1),
    "delitem": lambda d: d.__delitem__(next(iter(d))),
    "update": lambda d: d.update(x=1),
    "ior": lambda d: d.__ior__({"x": 1}),
    "pop": lambda d: d.pop(next(iter(d))),
    "popitem": lambda d: d.popitem(),
    "setdefault": lambda d: d.setdefault("x", 1),
    "clear": lambda d: d.clear(),
}


def test_reconstruction_timings_and_params_are_read_only():
    import dataclasses
    import json

    from da3_core.runner.inside.tocpu import dumps_cpu_only, to_cpu

    timings, params = {"total": 1.5}, {"process_res": 504, "reference_view": None}
    rec = _reconstruction(timings, params)
    for d in (rec.timings, rec.params):
        assert isinstance(d, ReadOnlyDict) and isinstance(d, dict)
        for mutate in MUTATIONS.values():
            with pytest.raises(TypeError, match="read-only"):
                mutate(d)
    assert rec.timings == {"total": 1.5} and rec.params == params
    timings["late"] = 2.0  # the dict given to the constructor is copied, not shared
    assert "late" not in rec.timings
    with pytest.raises(dataclasses.FrozenInstanceError):
        rec.timings = {}  # type: ignore[misc]  # the point: a frozen field refuses it
    # Still reads like a dict everywhere the app uses it.
    assert json.loads(json.dumps(rec.params)) == params and {**rec.params} == params and rec.timings.get("total") == 1.5
    # Pickled (protocol 5, as across the pipe) and through the worker's conversion and guard.
    for out in (pickle.loads(pickle.dumps(rec, protocol=5)), pickle.loads(dumps_cpu_only(to_cpu(rec)))):
        assert type(out.timings) is ReadOnlyDict and type(out.params) is ReadOnlyDict
        assert out.timings == rec.timings and out.params == rec.params
        with pytest.raises(TypeError, match="read-only"):
            out.params["process_res"] = 1


def test_reconstruction_from_the_worker_is_read_only(warm):
    rec = warm.call(f"{FT}:small_reconstruction")
    assert isinstance(rec, Reconstruction) and type(rec.timings) is ReadOnlyDict and type(rec.params) is ReadOnlyDict
    assert rec.timings == {"total": 0.5} and rec.params["nested"] == {"k": [1, 2]}
    with pytest.raises(TypeError, match="read-only"):
        rec.timings["total"] = 0.0
    assert "torch" not in sys.modules
