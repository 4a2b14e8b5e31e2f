"""The runner: one spawned worker process, a FIFO queue, budgets, crash recovery, progress.

This is ZeroGPU's ``@spaces.GPU`` made strict (see ``docs/ISOLATION.md``):

* the worker is started with the ``spawn`` context and is the only process that imports
  torch; tasks are named by import path and their arguments are pickled in the caller;
* only CPU data comes back (the worker converts and checks it, `da3_core.worker.tocpu`);
* ``duration`` kills an overrunning worker; a dead worker is reported at once (its process
  sentinel is watched) and replaced on the next call;
* one call runs at a time, first come first served, each caller sees its place in the queue
  and the task's progress;
* the worker ends by itself when the parent dies (`da3_core.worker.loop`).

Public face: the `gpu` decorator (like ``spaces.GPU(duration=...)``) and `Runner`.
"""

from __future__ import annotations

import atexit
import builtins
import collections
import contextlib
import datetime as _dt
import functools
import inspect
import itertools
import logging
import multiprocessing as mp
import multiprocessing.spawn as mp_spawn
import os
import pickle
import queue
import threading
import time
import weakref
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any, Callable, Iterator, Union

from da3_core.contract import (
    ArgumentNotPicklableError,
    CallDone,
    CallRequest,
    CancelRequest,
    ExceptionResult,
    GPUError,
    OkResult,
    ProgressMsg,
    ResultNotCPUError,
    RunnerClosedError,
    TaskCancelledError,
    TaskError,
    TaskTimeoutError,
    WorkerCrashedError,
    WorkerReady,
    WorkerStartError,
)
from da3_core.taskpath import resolve_task_path

log = logging.getLogger(__name__)

Duration = Union[int, float, _dt.timedelta, Callable[..., Union[int, float, _dt.timedelta]]]

_TICK_S = 0.05  # how often the dispatcher looks at deadlines and cancel flags while a call runs


# --------------------------------------------------------------------------------------
# Events a caller sees while its call waits and runs
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Queued:
    """The call waits. ``position`` 1 means it runs next; ``ahead`` counts calls before it, the running one included."""

    position: int
    ahead: int


@dataclass(frozen=True)
class Started:
    """The call was handed to the worker ``worker_pid`` after waiting ``waited_s`` seconds."""

    worker_pid: int | None
    waited_s: float


@dataclass(frozen=True)
class Progress:
    """The task reported ``stage`` (and ``fraction`` in [0, 1] when known) after ``elapsed_s`` seconds."""

    stage: str
    fraction: float | None
    detail: str
    elapsed_s: float


Event = Union[Queued, Started, Progress]


# --------------------------------------------------------------------------------------
# One call
# --------------------------------------------------------------------------------------


class Job:
    """One submitted call. Thread-safe; created by `Runner.submit`.

    Attributes:
        call_id: Unique within the runner.
        task: The task's import path.
        budget_s: Seconds the call may run once started before the worker is killed.
    """

    def __init__(self, runner: Runner, call_id: int, task: str, payload: bytes, budget_s: float) -> None:
        self._runner = runner
        self.call_id = call_id
        self.task = task
        self.payload = payload
        self.budget_s = budget_s
        self.submitted_at = time.monotonic()
        self.started_at: float | None = None
        self.finished_at: float | None = None
        self.cancel_requested = False
        self.last_seen: float | None = None  # set by `touch`; None: nobody promised to watch
        self.position = 0
        self.last_progress: Progress | None = None
        self._events: queue.SimpleQueue[Event] = queue.SimpleQueue()
        self._done = threading.Event()
        self._reply: OkResult | None = None
        self._error: BaseException | None = None
        # Set by `cancel` at once. In-process mode hands it to the task's context, so its
        # next `check_cancelled` / `report_progress` raises (the worker has its own copy,
        # set when a `CancelRequest` arrives).
        self._cancel_event = threading.Event()
        self._lock = threading.Lock()  # makes finishing and adding callbacks atomic
        self._callbacks: list[Callable[[Job], None]] = []

    # -- caller side -----------------------------------------------------------------
    def done(self) -> bool:
        """True once the call has finished (with a result or an error)."""
        return self._done.is_set()

    def touch(self) -> None:
        """Say that someone still waits for this call. Once touched, a call whose watcher
        stays silent longer than the runner's ``abandon_after_s`` is cancelled (a closed
        browser tab stops touching)."""
        self.last_seen = time.monotonic()

    def abandoned(self, after_s: float | None) -> bool:
        """True when the call was watched and its watcher has been silent for ``after_s``."""
        return after_s is not None and self.last_seen is not None and time.monotonic() - self.last_seen > after_s

    def cancel(self) -> None:
        """Give up on the call: removed if queued; if running, the worker is asked to stop at
        its next checkpoint and is killed after the runner's grace period.

        The caller then gets `TaskCancelledError`, unless the call finished first.
        """
        self._runner._cancel(self)

    def add_done_callback(self, fn: Callable[[Job], None]) -> None:
        """Call ``fn(job)`` exactly once, when the call has finished (value or error).

        ``fn`` runs in the thread that finished the call: the runner's dispatcher thread for
        a call that was handed to the worker, the thread that called `cancel` for a call
        cancelled while queued, the thread that called `Runner.close` for calls still
        queued then. If the call has already finished, ``fn`` runs at once in this thread.
        Callbacks run in the order they were added. An exception from ``fn`` is logged and
        otherwise ignored.

        Keep ``fn`` short, and never let it wait for another call of the same runner: while
        it runs in the dispatcher thread, the next call cannot start.
        """
        with self._lock:
            if not self._done.is_set():
                self._callbacks.append(fn)
                return
        self._run_callback(fn)

    def _run_callback(self, fn: Callable[[Job], None]) -> None:
        try:
            fn(self)
        except Exception:  # noqa: BLE001 - a callback must never break the dispatcher
            log.exception("done-callback %r of call %d (%s) raised", fn, self.call_id, self.task)

    def events(self, poll_s: float = 0.1) -> Iterator[Event]:
        """Yield events (`Queued`, `Started`, `Progress`) until the call finishes."""
        while True:
            try:
                yield self._events.get(timeout=poll_s)
            except queue.Empty:
                if self._done.is_set() and self._events.empty():
                    return

    def poll_events(self) -> list[Event]:
        """The events that arrived since the last look, without waiting."""
        out: list[Event] = []
        while True:
            try:
                out.append(self._events.get_nowait())
            except queue.Empty:
                return out

    def result(self, timeout: float | None = None) -> Any:
        """Wait for the call and return its value (CPU data), or raise its error.

        Raises:
            TimeoutError: ``timeout`` passed before the call finished (the call goes on).
            GPUError: The call failed (see `da3_core.contract` for the kinds).
        """
        if not self._done.wait(timeout):
            raise TimeoutError(f"{self.task} has not finished after {timeout} s")
        if self._error is not None:
            raise self._error
        assert self._reply is not None
        try:
            # Unpickled here, in the caller's thread, so the dispatcher is free for the next call.
            return pickle.loads(self._reply.payload)
        except Exception as exc:  # noqa: BLE001 - name the failure instead of a bare unpickling error
            raise ResultNotCPUError(type(exc).__name__, type(exc).__module__, f"the result of {self.task} could not be read in the caller: {exc}", "") from exc

    @property
    def elapsed_s(self) -> float:
        """Seconds since the call started running (0 while queued)."""
        if self.started_at is None:
            return 0.0
        return (self.finished_at or time.monotonic()) - self.started_at

    # -- dispatcher side -------------------------------------------------------------
    def _push(self, event: Event) -> None:
        if isinstance(event, Progress):
            self.last_progress = event
        self._events.put(event)

    def _finish(self, reply: OkResult | None = None, error: BaseException | None = None) -> None:
        # Several threads may try (dispatcher, cancel, close): the first one wins, once.
        with self._lock:
            if self._done.is_set():
                return
            self.finished_at = time.monotonic()
            self._reply, self._error = reply, error
            self.payload = b""  # the arguments are no longer needed; free them
            self._done.set()
            callbacks, self._callbacks = self._callbacks, []
        for fn in callbacks:  # outside the lock: a callback may add another callback
            self._run_callback(fn)


# --------------------------------------------------------------------------------------
# Status for the Runner page
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ErrorRecord:
    """One failed call, kept for the Runner page."""

    when: float
    task: str
    kind: str
    message: str


@dataclass(frozen=True)
class RunnerStatus:
    """A snapshot of the runner.

    Attributes:
        state: ``"stopped"``, ``"starting"``, ``"idle"``, ``"busy"`` or ``"closed"``.
        isolation: ``"isolated"`` or ``"inprocess"``.
        worker_pid: The live worker's pid, or None.
        worker_rss_mb: The worker's resident memory now, or None.
        current_task: The task running now, or None.
        current_elapsed_s: How long it has run.
        current_stage: Its last reported stage.
        queue_length: Calls waiting.
        worker_starts: Workers started so far.
        calls_ok / calls_failed: Counters since the runner started.
        worker_state: The worker's last self-report (cached models, device, peak memory).
        recent_errors: The last failures, newest last.
    """

    state: str
    isolation: str
    worker_pid: int | None
    worker_rss_mb: float | None
    current_task: str | None
    current_elapsed_s: float
    current_stage: str | None
    queue_length: int
    worker_starts: int
    calls_ok: int
    calls_failed: int
    worker_state: dict[str, Any] = field(default_factory=dict)
    recent_errors: tuple[ErrorRecord, ...] = ()


# --------------------------------------------------------------------------------------
# The runner
# --------------------------------------------------------------------------------------

_RUNNERS: "weakref.WeakSet[Runner]" = weakref.WeakSet()


@atexit.register
def _close_all_runners() -> None:
    for runner in list(_RUNNERS):
        runner.close()


class Runner:
    """Owns one worker process and serves calls to it one at a time, first come first served.

    Args:
        isolation: ``"isolated"`` (default: a spawned worker) or ``"inprocess"`` (debugging:
            tasks run in this process's dispatcher thread; no kill on timeout, no crash
            recovery, and torch gets imported here).
        preload: Modules the worker imports right after it starts (e.g. the DA3 task module).
        start_timeout_s: How long a new worker may take to report ready.
        cancel_grace_s: After a cancel, how long a running task may take to reach a
            checkpoint before the worker is killed.
        abandon_after_s: A call whose watcher (see `Job.touch`) is silent this long is
            cancelled, queued or running; None turns this off.
        name: Process name of the worker.
    """

    def __init__(
        self,
        *,
        isolation: str = "isolated",
        preload: tuple[str, ...] = (),
        start_timeout_s: float = 60.0,
        cancel_grace_s: float = 10.0,
        abandon_after_s: float | None = 30.0,
        name: str = "da3-worker",
    ) -> None:
        if isolation not in ("isolated", "inprocess"):
            raise ValueError(f"isolation must be 'isolated' or 'inprocess', got {isolation!r}")
        self.isolation = isolation
        self.preload = tuple(preload)
        self.start_timeout_s = start_timeout_s
        self.cancel_grace_s = cancel_grace_s
        self.abandon_after_s = abandon_after_s
        self.name = name
        self._ctx = mp.get_context("spawn")
        self._cv = threading.Condition()
        self._queue: collections.deque[Job] = collections.deque()
        self._current: Job | None = None
        self._ids = itertools.count(1)
        self._closed = False
        self._worker_lock = threading.RLock()  # guards _proc/_conn (start, kill, read)
        self._proc: Any = None
        self._conn: Connection | None = None
        self._starting = False
        self._kill_reason: str | None = None
        self.worker_starts = 0
        self.calls_ok = 0
        self.calls_failed = 0
        self.worker_state: dict[str, Any] = {}
        self.recent_errors: collections.deque[ErrorRecord] = collections.deque(maxlen=20)
        # A self-pipe the dispatcher waits on beside the worker's pipe and sentinel, so a
        # cancel from a caller's thread is acted on at once, not at the next tick.
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)  # a full pipe already means "wake up"
        self._dispatcher = threading.Thread(target=self._dispatch_loop, name=f"{name}-dispatcher", daemon=True)
        self._dispatcher.start()
        _RUNNERS.add(self)

    # -- public API ------------------------------------------------------------------
    def submit(
        self,
        task: str,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        duration: float = 60.0,
        signature: inspect.Signature | None = None,
    ) -> Job:
        """Queue a call and return at once.

        Args:
            task: Import path ``"package.module:function"`` of the task.
            args, kwargs: Its arguments; pickled here, so an unpicklable one fails now.
            duration: Budget in seconds once the call starts running.
            signature: The task's signature, to name a bad argument by its parameter name.

        Raises:
            ArgumentNotPicklableError: An argument cannot be pickled (names it).
            RunnerClosedError: The runner was closed.
        """
        kwargs = kwargs or {}
        payload = _pickle_arguments(task, args, kwargs, signature)
        budget = float(duration)
        if not budget > 0:
            raise ValueError(f"{task}: duration must be positive, got {duration!r}")
        with self._cv:
            if self._closed:
                raise RunnerClosedError("the runner is closed")
            job = Job(self, next(self._ids), task, payload, budget)
            self._queue.append(job)
            ahead = len(self._queue) - 1 + (self._current is not None)
            job.position = len(self._queue)
            job._push(Queued(job.position, ahead))
            self._cv.notify_all()
        return job

    def call(
        self,
        task: str,
        *args: Any,
        duration: float = 60.0,
        on_event: Callable[[Event], None] | None = None,
        **kwargs: Any,
    ) -> Any:
        """Run a task and wait for its value, passing events to ``on_event`` as they come.

        If the waiting thread is interrupted (an exception from ``on_event``, e.g. Streamlit
        stopping the script, or KeyboardInterrupt), the call is cancelled before re-raising.
        """
        job = self.submit(task, args, kwargs, duration=duration)
        return wait_for(job, on_event)

    def restart(self) -> None:
        """Kill the worker (a running call fails with `TaskCancelledError`); the next call starts a fresh one."""
        self._kill_worker("restart")

    def status(self) -> RunnerStatus:
        """A snapshot for display; cheap and non-blocking."""
        with self._cv:
            current = self._current
            qlen = len(self._queue)
        proc = self._proc
        alive = _alive(proc)
        rss = None
        if alive:
            rss = _rss_mb(proc.pid)
        if self._closed:
            state = "closed"
        elif current is not None:
            state = "busy"
        elif self._starting:
            state = "starting"
        elif alive or self.isolation == "inprocess":
            state = "idle"
        else:
            state = "stopped"
        return RunnerStatus(
            state=state,
            isolation=self.isolation,
            worker_pid=proc.pid if alive else None,
            worker_rss_mb=rss,
            current_task=current.task if current else None,
            current_elapsed_s=current.elapsed_s if current else 0.0,
            current_stage=current.last_progress.stage if current and current.last_progress else None,
            queue_length=qlen,
            worker_starts=self.worker_starts,
            calls_ok=self.calls_ok,
            calls_failed=self.calls_failed,
            worker_state=dict(self.worker_state),
            recent_errors=tuple(self.recent_errors),
        )

    @property
    def worker_pid(self) -> int | None:
        """The live worker's pid, or None."""
        proc = self._proc
        return proc.pid if _alive(proc) else None

    def close(self) -> None:
        """Stop: queued calls fail with `RunnerClosedError`, the worker is ended."""
        with self._cv:
            if self._closed:
                return
            self._closed = True
            pending = list(self._queue)
            self._queue.clear()
            idle = self._current is None
            self._cv.notify_all()
        for job in pending:
            job._finish(error=RunnerClosedError("the runner was closed before this call ran"))
        if idle:
            self._let_worker_exit()
        self._kill_worker("close")
        if threading.current_thread() is not self._dispatcher:  # e.g. closed from a done-callback
            self._dispatcher.join(timeout=5)
        if self._dispatcher.is_alive():
            # An in-process task that ignores cancellation, or close() from the dispatcher
            # itself: leave the wake-up pipe open, that thread may still wait on it.
            log.warning("runner %s: the dispatcher thread has not ended; its wake-up pipe stays open", self.name)
        else:
            for fd in (self._wake_r, self._wake_w):
                with contextlib.suppress(OSError):
                    os.close(fd)
        log.info(
            "runner %s closed (%s, %d queued call(s) dropped; %d ok, %d failed, %d worker start(s))",
            self.name, "idle" if idle else "a running call was stopped", len(pending),
            self.calls_ok, self.calls_failed, self.worker_starts,
        )

    def _let_worker_exit(self, timeout_s: float = 3.0) -> None:
        # Closing our end of the pipe tells an idle worker to exit normally (its exit
        # handlers run); whatever is left after the timeout is killed by the caller.
        with self._worker_lock:
            proc, conn = self._proc, self._conn
            if proc is None or conn is None:
                return
            try:
                conn.close()
            except OSError:
                pass
            self._conn = None
            proc.join(timeout_s)

    # -- cancel ----------------------------------------------------------------------
    def _cancel(self, job: Job) -> None:
        with self._cv:
            if job.done():
                return
            job.cancel_requested = True
            job._cancel_event.set()  # in-process: the task's next checkpoint raises
            queued = job in self._queue
            if queued:
                self._queue.remove(job)
                self._publish_positions()
            running = job is self._current
            self._cv.notify_all()
        log.info("call %d (%s) cancelled by its caller while %s", job.call_id, job.task, "running" if running else "queued")
        if queued:
            # Outside the lock: done-callbacks run here and may call into the runner.
            job._finish(error=TaskCancelledError(f"{job.task} was cancelled while queued"))
        elif self.isolation == "isolated":
            self._wake()  # the dispatcher sends the CancelRequest now

    def _wake(self) -> None:
        """Make the dispatcher's current wait return at once."""
        with contextlib.suppress(OSError):  # full (already woken) or closed (runner closed)
            os.write(self._wake_w, b"\0")

    def _drain_wake(self) -> None:
        with contextlib.suppress(OSError):  # empty (BlockingIOError) or closed
            while os.read(self._wake_r, 512):
                pass

    def _publish_positions(self) -> None:
        running = self._current is not None
        for i, queued in enumerate(self._queue):
            if queued.position != i + 1:
                queued.position = i + 1
                queued._push(Queued(i + 1, i + running))

    # -- worker lifetime -------------------------------------------------------------
    def _ensure_worker(self) -> tuple[Any, Connection]:
        from da3_core.worker.loop import worker_main  # light: imports no torch

        with self._worker_lock:
            if self._closed:
                raise RunnerClosedError("the runner is closed")
            if self._proc is not None and self._proc.is_alive() and self._conn is not None:
                return self._proc, self._conn
            self._reap_worker()
            self._starting = True
            t0 = time.monotonic()
            try:
                parent_conn, child_conn = self._ctx.Pipe(duplex=True)
                proc = self._ctx.Process(
                    target=worker_main,
                    args=(child_conn, os.getpid(), self.preload),
                    name=self.name,
                    daemon=True,  # multiprocessing ends it at a normal exit of the parent
                )
                with _spawn_without_main_module():
                    proc.start()
                child_conn.close()
                ready = wait([parent_conn, proc.sentinel], timeout=self.start_timeout_s)
                msg = parent_conn.recv() if parent_conn in ready else None
                if not isinstance(msg, WorkerReady):
                    proc.kill()
                    proc.join(2)
                    parent_conn.close()
                    why = f"exit code {proc.exitcode}" if proc.exitcode is not None else f"no answer in {self.start_timeout_s:.0f} s"
                    log.error("worker %s did not start (%s)", self.name, why)
                    raise WorkerStartError(f"the worker process did not start ({why}); see the server log")
            except OSError as exc:
                log.exception("worker %s could not be started", self.name)
                raise WorkerStartError(f"the worker process could not be started: {exc}") from exc
            finally:
                self._starting = False
            self._proc, self._conn = proc, parent_conn
            self._kill_reason = None
            self.worker_starts += 1
            log.info("worker %s started (pid %d, start #%d) in %.2f s", self.name, proc.pid, self.worker_starts, time.monotonic() - t0)
            return proc, parent_conn

    def _kill_worker(self, reason: str) -> None:
        """SIGKILL the worker. ``reason``: timeout, cancel, restart, recycle or close."""
        with self._worker_lock:
            proc = self._proc
            if proc is not None and proc.is_alive():
                self._kill_reason = reason
                current = self._current
                log.log(
                    logging.INFO if reason in ("close", "restart", "recycle") else logging.WARNING,
                    "killing worker pid %d (%s)%s", proc.pid, reason,
                    f" during call {current.call_id} ({current.task})" if current is not None else "",
                )
                proc.kill()
                proc.join(5)
            if self._current is None:
                self._reap_worker()  # with a call in flight the dispatcher sees the death and reaps

    def _reap_worker(self) -> None:
        # Close our end and collect the process so no zombie or fd is left behind.
        with self._worker_lock:
            if self._conn is not None:
                try:
                    self._conn.close()
                except OSError:
                    pass
            if self._proc is not None:
                if self._proc.is_alive():
                    self._proc.kill()
                self._proc.join(5)
                try:
                    self._proc.close()
                except ValueError:
                    pass
            self._proc, self._conn = None, None

    # -- dispatcher ------------------------------------------------------------------
    def _dispatch_loop(self) -> None:
        while True:
            with self._cv:
                while not self._queue and not self._closed:
                    self._cv.wait()
                if self._closed:
                    return
                job = self._queue.popleft()
                self._current = job
                self._publish_positions()
            try:
                if self.isolation == "inprocess":
                    self._run_inprocess(job)
                else:
                    self._run_isolated(job)
            except BaseException as exc:  # noqa: BLE001 - the dispatcher must survive anything
                if not isinstance(exc, GPUError):
                    log.exception("runner %s: call %d (%s) failed in the runner itself", self.name, job.call_id, job.task)
                job._finish(error=exc if isinstance(exc, GPUError) else GPUError(f"{job.task}: runner error: {exc!r}"))
            finally:
                self._record(job)
                with self._cv:
                    self._current = None
                    self._publish_positions()

    def _record(self, job: Job) -> None:
        if job._error is None:
            self.calls_ok += 1
            return
        self.calls_failed += 1
        err = job._error
        kind = err.type_name if isinstance(err, TaskError) else type(err).__name__
        message = err.message if isinstance(err, TaskError) else str(err)
        self.recent_errors.append(ErrorRecord(time.time(), job.task, kind, message))

    def _run_isolated(self, job: Job) -> None:
        if job.cancel_requested or job.abandoned(self.abandon_after_s):
            job._finish(error=TaskCancelledError(f"{job.task} was cancelled before it started (its caller left)"))
            return
        proc, conn = self._ensure_worker()
        job.started_at = time.monotonic()
        log.debug("call %d (%s) started on worker pid %d after %.2f s queued", job.call_id, job.task, proc.pid, job.started_at - job.submitted_at)
        job._push(Started(proc.pid, job.started_at - job.submitted_at))
        try:
            conn.send(CallRequest(job.call_id, job.task, job.payload))
        except OSError:
            pass  # the worker died just now; its sentinel tells us below
        deadline = job.started_at + job.budget_s
        cancel_deadline: float | None = None
        while True:
            ready = wait([conn, proc.sentinel, self._wake_r], timeout=_TICK_S)
            if self._wake_r in ready:
                self._drain_wake()  # a cancel: handled with the checks below
            if conn in ready:
                try:
                    msg = conn.recv()
                except (EOFError, OSError):
                    msg = None
                if msg is not None and self._handle_message(job, msg):
                    return
                # No `continue`: a task that reports progress faster than we read it must
                # not starve the death, deadline and cancel checks below.
            if proc.sentinel in ready or not _alive(proc):
                # A reply may have arrived just before the death: read what is left first.
                while conn.poll(0):
                    try:
                        if self._handle_message(job, conn.recv()):
                            return
                    except (EOFError, OSError):
                        break
                proc.join(1)
                reason, exitcode, pid = self._kill_reason, proc.exitcode, proc.pid
                self._reap_worker()  # closes `proc`: read what we need from it first
                if reason == "restart":
                    job._finish(error=TaskCancelledError(f"{job.task} was stopped: the worker was restarted"))
                elif reason == "close":
                    job._finish(error=RunnerClosedError(f"{job.task} was stopped: the runner was closed"))
                else:
                    err = WorkerCrashedError(job.task, exitcode)
                    log.error("worker pid %d died during call %d (%s): %s", pid, job.call_id, job.task, err.how)
                    job._finish(error=err)
                return
            now = time.monotonic()
            if now > deadline:
                log.warning("call %d (%s) ran past its budget of %.1f s", job.call_id, job.task, job.budget_s)
                self._kill_worker("timeout")
                self._reap_worker()
                job._finish(error=TaskTimeoutError(job.task, job.budget_s, now - job.started_at))
                return
            if not job.cancel_requested and job.abandoned(self.abandon_after_s):
                log.info("call %d (%s) abandoned: its watcher is silent; cancelling", job.call_id, job.task)
                job.cancel_requested = True  # nobody is waiting any more: free the worker
            if job.cancel_requested:
                if cancel_deadline is None:
                    cancel_deadline = now + self.cancel_grace_s
                    try:
                        conn.send(CancelRequest(job.call_id))
                    except OSError:
                        pass
                elif now > cancel_deadline:
                    self._kill_worker("cancel")
                    self._reap_worker()
                    job._finish(error=TaskCancelledError(f"{job.task} was cancelled; the worker did not stop within {self.cancel_grace_s:.0f} s and was restarted"))
                    return

    def _handle_message(self, job: Job, msg: Any) -> bool:
        """Apply one worker message to ``job``; True when the call is over."""
        if isinstance(msg, ProgressMsg):
            if msg.call_id == job.call_id:
                job._push(Progress(msg.stage, msg.fraction, msg.detail, job.elapsed_s))
            return False
        if isinstance(msg, CallDone):
            self.worker_state = msg.worker_state
            reply = msg.reply
            if reply.call_id != job.call_id:
                # A late reply of an earlier call; cannot happen, ignore it.
                log.warning("ignored a reply for call %d while call %d runs", reply.call_id, job.call_id)
                return False
            if isinstance(reply, OkResult):
                log.debug("call %d (%s) finished in %.2f s", job.call_id, job.task, reply.seconds)
                job._finish(reply=reply)
            else:
                error = _task_error(reply, cancelled=job.cancel_requested)
                if isinstance(error, TaskCancelledError):
                    log.info("call %d (%s) stopped at a checkpoint after its cancel", job.call_id, job.task)
                else:
                    log.error("call %d (%s) failed in the worker: %s: %s\nWorker traceback:\n%s",
                              job.call_id, job.task, reply.type_name, reply.message, reply.traceback)
                if reply.recycle and self.isolation == "isolated":
                    # The worker exits after this reply (its state may be damaged); retire it
                    # now so the next call cannot be handed to a dying process.
                    self._kill_worker("recycle")
                    self._reap_worker()
                job._finish(error=error)
            return True
        return False

    def _run_inprocess(self, job: Job) -> None:
        from da3_core.worker.loop import run_call  # installs and clears the task context itself

        if job.cancel_requested:
            job._finish(error=TaskCancelledError(f"{job.task} was cancelled before it started"))
            return
        job.started_at = time.monotonic()
        job._push(Started(os.getpid(), job.started_at - job.submitted_at))

        def send(msg: Any) -> None:
            # Nothing watches the clock while the task runs in this thread: its progress
            # reports are where a silent watcher is noticed.
            if not job.cancel_requested and job.abandoned(self.abandon_after_s):
                job.cancel_requested = True
                job._cancel_event.set()
            self._handle_message(job, msg)

        # `Job.cancel` sets the job's event from the caller's thread, so the task's next
        # `check_cancelled` or `report_progress` raises without waiting for anything here.
        reply = run_call(CallRequest(job.call_id, job.task, job.payload), job._cancel_event, send)
        self._handle_message(job, CallDone(reply, {"pid": os.getpid(), "inprocess": True}))


_SPAWN_PATCH_LOCK = threading.Lock()


@contextlib.contextmanager
def _spawn_without_main_module() -> Iterator[None]:
    """Start spawn children without re-running the parent's ``__main__`` in them.

    The worker needs nothing from ``__main__`` (tasks are named by import path). Re-running
    it costs a Streamlit import in every worker and breaks scripts without a main guard.
    multiprocessing has no option for this, so its preparation data is trimmed while our
    worker starts (the lock keeps the swap to our own starts).
    """
    original = mp_spawn.get_preparation_data

    def preparation_data(name: str) -> dict[str, Any]:
        data = original(name)
        data.pop("init_main_from_path", None)
        data.pop("init_main_from_name", None)
        return data

    with _SPAWN_PATCH_LOCK:
        mp_spawn.get_preparation_data = preparation_data
        try:
            yield
        finally:
            mp_spawn.get_preparation_data = original


def wait_for(job: Job, on_event: Callable[[Event], None] | None = None) -> Any:
    """Wait for ``job``, passing its events to ``on_event``; cancel it if the wait is interrupted."""
    try:
        for event in job.events():
            if on_event is not None:
                on_event(event)
        return job.result()
    except BaseException:
        if not job.done():
            job.cancel()
        raise


# --------------------------------------------------------------------------------------
# Errors from the worker keep their type
# --------------------------------------------------------------------------------------

_ERROR_CLASSES: dict[tuple[str, str], type[TaskError]] = {}


def _task_error(reply: ExceptionResult, *, cancelled: bool) -> GPUError:
    if cancelled and reply.type_name == "CancelledInWorker":
        return TaskCancelledError(reply.message)
    if reply.type_name == "ResultNotCPUError":
        return ResultNotCPUError(reply.type_name, reply.module, reply.message, reply.traceback)
    cls = _error_class(reply.type_name, reply.module)
    return cls(reply.type_name, reply.module, reply.message, reply.traceback)


def _error_class(type_name: str, module: str) -> type[TaskError]:
    """A `TaskError` subclass that is also the original class where the parent can name it
    safely (builtins and da3_core), so ``except ValueError`` works across the boundary."""
    key = (module, type_name)
    if key in _ERROR_CLASSES:
        return _ERROR_CLASSES[key]
    original: Any = None
    if module == "builtins":
        original = getattr(builtins, type_name, None)
    elif module.startswith("da3_core.") and not module.startswith("da3_core.worker"):
        try:
            import importlib

            original = getattr(importlib.import_module(module), type_name, None)
        except Exception:  # noqa: BLE001 - fall back to a plain TaskError
            original = None
    cls: type[TaskError] = TaskError
    if isinstance(original, type) and issubclass(original, Exception) and not issubclass(original, TaskError):
        try:
            cls = type(type_name, (TaskError, original), {"__module__": __name__})
        except TypeError:  # incompatible layouts (e.g. OSError): keep the plain TaskError
            cls = TaskError
    _ERROR_CLASSES[key] = cls
    return cls


# --------------------------------------------------------------------------------------
# Arguments
# --------------------------------------------------------------------------------------


def _pickle_arguments(task: str, args: tuple[Any, ...], kwargs: dict[str, Any], signature: inspect.Signature | None) -> bytes:
    try:
        return pickle.dumps((args, kwargs), protocol=5)
    except Exception as exc:  # noqa: BLE001 - find and name the argument at fault
        names: list[str] = []
        if signature is not None:
            try:
                bound = signature.bind_partial(*args, **kwargs)
                names = list(bound.arguments)
                values = list(bound.arguments.values())
            except TypeError:
                names = []
        if not names:
            names = [f"args[{i}]" for i in range(len(args))] + list(kwargs)
            values = list(args) + list(kwargs.values())
        for name, value in zip(names, values):
            try:
                pickle.dumps(value, protocol=5)
            except Exception as inner:  # noqa: BLE001
                raise ArgumentNotPicklableError(task, name, f"{type(value).__name__}: {inner}") from None
        raise ArgumentNotPicklableError(task, "<arguments>", str(exc)) from None


def _alive(proc: Any) -> bool:
    """``proc.is_alive()``, False for None or a process another thread just closed."""
    try:
        return proc is not None and proc.is_alive()
    except ValueError:  # "process object is closed": reaped concurrently
        return False


def _rss_mb(pid: int) -> float | None:
    try:
        import psutil

        return psutil.Process(pid).memory_info().rss / 2**20
    except Exception:  # noqa: BLE001 - the process may be gone
        return None


# --------------------------------------------------------------------------------------
# The decorator
# --------------------------------------------------------------------------------------

_default_runner: Runner | None = None
_default_lock = threading.Lock()


def set_default_runner(runner: Runner | None) -> None:
    """Make ``runner`` the one that decorated tasks use when called without ``runner=``."""
    global _default_runner
    with _default_lock:
        _default_runner = runner


def default_runner() -> Runner:
    """The process's default runner, created on first use (isolation from ``DA3_ISOLATION``)."""
    global _default_runner
    with _default_lock:
        if _default_runner is None or _default_runner._closed:
            from da3_core.config import load_settings

            settings = load_settings()
            _default_runner = Runner(isolation=settings.isolation, cancel_grace_s=settings.cancel_grace_s)
        return _default_runner


class GPUFunction:
    """A task function that runs in the worker. Made by `gpu`; see there."""

    def __init__(self, func: Callable[..., Any], duration: Duration) -> None:
        if "<locals>" in func.__qualname__ or func.__name__ == "<lambda>":
            raise TypeError(f"@gpu needs a module-level function (the worker imports it by name); {func.__qualname__} is not")
        functools.update_wrapper(self, func)
        self.__gpu_wrapped__ = func
        self.task = f"{func.__module__}:{func.__qualname__}"
        self.duration = duration
        self._signature = inspect.signature(func)

    def budget_s(self, *args: Any, **kwargs: Any) -> float:
        """The call's budget in seconds: ``duration`` itself, or its value for these arguments."""
        d = self.duration(*args, **kwargs) if callable(self.duration) else self.duration
        if isinstance(d, _dt.timedelta):
            d = d.total_seconds()
        return float(d)

    def submit(self, *args: Any, runner: Runner | None = None, **kwargs: Any) -> Job:
        """Queue the call on ``runner`` (default: `default_runner`) and return its `Job`."""
        runner = runner or default_runner()
        return runner.submit(self.task, args, kwargs, duration=self.budget_s(*args, **kwargs), signature=self._signature)

    def call(self, *args: Any, runner: Runner | None = None, on_event: Callable[[Event], None] | None = None, **kwargs: Any) -> Any:
        """Run and wait, passing events to ``on_event``; cancels the call if the wait is interrupted."""
        return wait_for(self.submit(*args, runner=runner, **kwargs), on_event)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.call(*args, **kwargs)

    def __reduce__(self) -> Any:
        # Pickled by reference, like a plain function (unpickles as this GPUFunction).
        return (resolve_task_path, (self.task,))


def gpu(func: Callable[..., Any] | None = None, *, duration: Duration = 60) -> Any:
    """Run the decorated function in the isolated worker, like ``spaces.GPU(duration=...)``.

    ``duration`` is the call's budget once it starts: seconds (int, float or timedelta) or a
    callable taking the call's arguments and returning one. Unlike ``spaces.GPU`` the budget
    is enforced: the worker is killed and the caller gets `TaskTimeoutError`.

    The function must live at module level in a module the parent can import without
    torch (import heavy things inside the function). Call it plainly (``f(x)``), or with
    ``f.call(x, runner=..., on_event=...)`` / ``f.submit(x, runner=...)``.
    """
    if func is not None:
        return GPUFunction(func, duration)
    return lambda f: GPUFunction(f, duration)
