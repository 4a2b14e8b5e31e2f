"""The runner: one global FIFO of calls served by a pool of slots (workers), with budgets,
cancel, abandonment and queue positions.

This is ZeroGPU's ``@spaces.GPU`` made strict (see ``docs/ISOLATION.md``):

* workers are spawned processes (or Ray actors), the only processes that import torch;
  tasks are named by import path and their arguments are packed in the caller;
* only CPU data comes back (the worker converts and checks it, `da3_core.runner.inside.tocpu`),
  its large arrays through shared memory (`da3_core.runner.shm`);
* ``duration`` kills an overrunning worker; a dead worker is reported at once and replaced
  on its next call; a crash, timeout or cancel touches only its own call;
* first come first served across all workers; each caller sees its place in the queue and
  its task's progress.

The dispatcher owns the queue; each slot (`da3_core.runner.backends`) has one thread here
that takes the oldest call when its worker is free.
"""

from __future__ import annotations

import atexit
import collections
import inspect
import itertools
import logging
import pickle
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from da3_core.runner import shm
from da3_core.runner.backends.base import CallPolicy, Slot, WorkerStatus
from da3_core.runner.jobs import Event, Job, Queued, cancelled_before_start, wait_for
from da3_core.runner.logsetup import LogSetup
from da3_core.runner.protocol import (
    ArgumentNotPicklableError,
    GPUError,
    Packed,
    RunnerClosedError,
    TaskCancelledError,
    TaskError,
)

log = logging.getLogger(__name__)

ISOLATIONS = ("isolated", "inprocess", "ray")


@dataclass(frozen=True)
class ErrorRecord:
    """One failed call, kept for the Runner page."""

    when: float
    task: str
    kind: str
    message: str
    worker: str = ""


@dataclass(frozen=True)
class RunnerStatus:
    """A snapshot of the runner.

    Attributes:
        state: ``"stopped"``, ``"starting"``, ``"idle"``, ``"busy"`` (every worker busy),
            ``"closed"``; with several workers, ``"idle"`` while at least one is free.
        isolation: ``"isolated"``, ``"inprocess"`` or ``"ray"``.
        workers: Each worker's status, in pool order.
        worker_pid / worker_rss_mb / worker_state: Of the first worker (kept for one-worker
            views); see ``workers`` for all.
        current_task / current_elapsed_s / current_stage: The oldest running call.
        running: Calls running now.
        queue_length: Calls waiting.
        worker_starts / calls_ok / calls_failed: Totals over all workers.
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
    workers: tuple[WorkerStatus, ...] = ()
    running: int = 0


_RUNNERS: weakref.WeakSet[Runner] = weakref.WeakSet()


@atexit.register
def _close_all_runners() -> None:
    for runner in list(_RUNNERS):
        runner.close()


class Runner:
    """A pool of workers serving calls first come first served.

    Args:
        isolation: ``"isolated"`` (default: spawned worker processes), ``"ray"`` (Ray
            actors; see ``ray_address``) or ``"inprocess"`` (debugging: tasks run in this
            process; no kill on timeout, no crash recovery, torch gets imported here).
        workers: ``"auto"`` (one per visible GPU, one on a CPU machine; with Ray, one per
            GPU of the cluster) or a count.
        preload: Modules a worker imports right after it starts (e.g. the DA3 task module).
        start_timeout_s: How long a new worker may take to report ready.
        cancel_grace_s: After a cancel, how long a running task may take to reach a
            checkpoint before its worker is killed.
        abandon_after_s: A call whose watcher (see `Job.touch`) is silent this long is
            cancelled, queued or running; None turns this off.
        name: Process name of the workers.
        ray_address: With ``isolation="ray"``: ``"auto"``, ``"host:port"``, or None to start
            a local Ray instance.
        log_setup: How the workers log (`da3_core.runner.logsetup`); default: as this
            process's package logger is set up when the runner is made.
        slots: Ready-made slots (tests); overrides the above.
    """

    def __init__(
        self,
        *,
        isolation: str = "isolated",
        workers: int | str = 1,
        preload: tuple[str, ...] = (),
        start_timeout_s: float = 60.0,
        cancel_grace_s: float = 10.0,
        abandon_after_s: float | None = 30.0,
        name: str = "da3-worker",
        ray_address: str | None = None,
        log_setup: LogSetup | None = None,
        slots: list[Slot] | None = None,
    ) -> None:
        if isolation not in ISOLATIONS:
            raise ValueError(f"isolation must be one of {', '.join(ISOLATIONS)}, got {isolation!r}")
        self.isolation = isolation
        self.preload = tuple(preload)
        self.name = name
        self.policy = CallPolicy(
            cancel_grace_s=cancel_grace_s, abandon_after_s=abandon_after_s, start_timeout_s=start_timeout_s
        )
        self._shared_args = isolation == "isolated"
        if isolation == "isolated":
            shm.sweep_orphans()  # segments of an earlier server that died
        log_setup = log_setup or LogSetup.of_caller()
        self.slots: list[Slot] = (
            slots if slots is not None else _make_slots(isolation, workers, self.preload, name, ray_address, log_setup)
        )
        self._cv = threading.Condition()
        self._queue: collections.deque[Job] = collections.deque()
        self._ids = itertools.count(1)
        self._closed = False
        self.recent_errors: collections.deque[ErrorRecord] = collections.deque(maxlen=20)
        self._threads = [
            threading.Thread(
                target=self._slot_loop, args=(slot,), name=f"{name}-{slot.index + 1}-dispatch", daemon=True
            )
            for slot in self.slots
        ]
        for thread in self._threads:
            thread.start()
        _RUNNERS.add(self)
        log.debug(
            "runner %s: %s, %d worker(s): %s",
            name,
            isolation,
            len(self.slots),
            "; ".join(f"{s.label} on {s.device}" for s in self.slots),
        )

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
            args, kwargs: Its arguments; packed here, so an unpicklable one fails now.
            duration: Budget in seconds once the call starts running.
            signature: The task's signature, to name a bad argument by its parameter name.

        Raises:
            ArgumentNotPicklableError: An argument cannot be pickled (names it).
            RunnerClosedError: The runner was closed.
        """
        kwargs = kwargs or {}
        budget = float(duration)
        if not budget > 0:
            raise ValueError(f"{task}: duration must be positive, got {duration!r}")
        if self._closed:
            raise RunnerClosedError("the runner is closed")
        payload = _pack_arguments(task, args, kwargs, signature, shared=self._shared_args)
        with self._cv:
            if self._closed:
                shm.unlink(payload.segment)
                raise RunnerClosedError("the runner is closed")
            job = Job(self, next(self._ids), task, payload, budget)
            self._queue.append(job)
            job.position = len(self._queue)
            job._push(Queued(job.position, len(self._queue) - 1 + self._running()))
            self._cv.notify()
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
        return wait_for(self.submit(task, args, kwargs, duration=duration), on_event)

    def restart(self) -> None:
        """Kill every worker (running calls fail with `TaskCancelledError`); each next call starts a fresh one."""
        for slot in self.slots:
            slot.restart()

    def status(self) -> RunnerStatus:
        """A snapshot for display; cheap and non-blocking."""
        with self._cv:
            qlen = len(self._queue)
        workers = tuple(slot.status() for slot in self.slots)
        running = [(s.current, w) for s, w in zip(self.slots, workers) if s.current is not None]
        states = {w.state for w in workers}
        if self._closed:
            state = "closed"
        elif running and len(running) == len(workers):
            state = "busy"
        elif "idle" in states:
            state = "idle"
        elif "starting" in states:
            state = "starting"
        elif running:
            state = "busy"
        else:
            state = "stopped"
        first = workers[0]
        oldest = min(running, key=lambda cw: cw[0].started_at or 0.0)[1] if running else None
        return RunnerStatus(
            state=state,
            isolation=self.isolation,
            worker_pid=first.pid,
            worker_rss_mb=first.rss_mb,
            current_task=oldest.current_task if oldest else None,
            current_elapsed_s=oldest.current_elapsed_s if oldest else 0.0,
            current_stage=oldest.current_stage if oldest else None,
            queue_length=qlen,
            worker_starts=sum(w.starts for w in workers),
            calls_ok=sum(w.calls_ok for w in workers),
            calls_failed=sum(w.calls_failed for w in workers),
            worker_state=dict(first.state_report),
            recent_errors=tuple(self.recent_errors),
            workers=workers,
            running=len(running),
        )

    @property
    def abandon_after_s(self) -> float | None:
        """Seconds a watched call's watcher may stay silent before the call is cancelled."""
        return self.policy.abandon_after_s

    @property
    def cancel_grace_s(self) -> float:
        """Seconds a cancelled task has to reach a checkpoint before its worker is killed."""
        return self.policy.cancel_grace_s

    @property
    def worker_pid(self) -> int | None:
        """The first worker's pid while it lives, else None."""
        return self.slots[0].pid()

    @property
    def worker_starts(self) -> int:
        """Workers started so far, over the pool."""
        return sum(slot.starts for slot in self.slots)

    @property
    def calls_ok(self) -> int:
        return sum(slot.calls_ok for slot in self.slots)

    @property
    def calls_failed(self) -> int:
        return sum(slot.calls_failed for slot in self.slots)

    def close(self) -> None:
        """Stop: queued calls fail with `RunnerClosedError`, the workers are ended."""
        with self._cv:
            if self._closed:
                return
            self._closed = True
            pending = list(self._queue)
            self._queue.clear()
            busy = sum(slot.current is not None for slot in self.slots)
            self._cv.notify_all()
        for job in pending:
            job._finish(error=RunnerClosedError("the runner was closed before this call ran"))
        for slot in self.slots:
            slot.close()
        me = threading.current_thread()
        for thread in self._threads:
            if thread is not me:  # e.g. closed from a done-callback
                thread.join(timeout=5)
        for slot, thread in zip(self.slots, self._threads):
            if thread.is_alive():
                # An in-process task that ignores cancellation, or close() from a slot's own
                # thread: leave its wake-up pipe open, that thread may still wait on it.
                log.warning(
                    "runner %s: the thread of %s has not ended; its wake-up pipe stays open", self.name, slot.label
                )
            elif hasattr(slot, "release_fds"):
                slot.release_fds()
        # A line of its own only when calls were lost (the server stopped mid-run).
        log.log(
            logging.INFO if busy or pending else logging.DEBUG,
            "runner %s closed (%s, %d queued call(s) dropped; %d ok, %d failed, %d worker start(s))",
            self.name,
            f"{busy} running call(s) stopped" if busy else "idle",
            len(pending),
            self.calls_ok,
            self.calls_failed,
            self.worker_starts,
        )

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
            slot = next((s for s in self.slots if s.current is job), None)
        log.debug(
            "call %d (%s) cancelled by its caller while %s", job.call_id, job.task, "running" if slot else "queued"
        )
        if queued:
            # Outside the lock: done-callbacks run here and may call into the runner.
            job._finish(error=TaskCancelledError(f"{job.task} was cancelled while queued"))
        elif slot is not None:
            slot.wake()  # its thread sends the CancelRequest now

    def _running(self) -> int:
        return sum(slot.current is not None for slot in self.slots)

    def _publish_positions(self) -> None:
        running = self._running()
        for i, queued in enumerate(self._queue):
            if queued.position != i + 1:
                queued.position = i + 1
                queued._push(Queued(i + 1, i + running))

    # -- one thread per slot ---------------------------------------------------------
    def _slot_loop(self, slot: Slot) -> None:
        while True:
            with self._cv:
                while not self._queue and not self._closed:
                    self._cv.wait()
                if self._closed:
                    return
                job = self._queue.popleft()
                slot.current = job
                self._publish_positions()
            # Counted and the slot freed before the call reads as done, so a `status()` right
            # after a call's return already shows it (never "busy" with the call uncounted).
            job._before_done = lambda slot=slot, job=job: self._settle(slot, job)
            try:
                if job.cancel_requested or job.abandoned(self.policy.abandon_after_s):
                    job._finish(error=cancelled_before_start(job))
                else:
                    slot.run(job, self.policy)
            except BaseException as exc:  # noqa: BLE001 - the slot's thread must survive anything
                if not isinstance(exc, GPUError):
                    log.exception(
                        "runner %s: call %d (%s) failed in the runner itself", self.name, job.call_id, job.task
                    )
                job._finish(error=exc if isinstance(exc, GPUError) else GPUError(f"{job.task}: runner error: {exc!r}"))
            finally:
                job._before_done = None
                with self._cv:
                    slot.current = None
                    self._publish_positions()
                del job  # this thread must not keep the last result alive while it waits

    def _settle(self, slot: Slot, job: Job) -> None:
        """Count the call and free its slot (called by `Job._finish`, before the call is done)."""
        self._record(slot, job)
        if slot.current is job:
            slot.current = None

    def _record(self, slot: Slot, job: Job) -> None:
        if job._error is None:
            slot.calls_ok += 1
            return
        slot.calls_failed += 1
        err = job._error
        kind = err.type_name if isinstance(err, TaskError) else type(err).__name__
        message = err.message if isinstance(err, TaskError) else str(err)
        self.recent_errors.append(ErrorRecord(time.time(), job.task, kind, message, slot.label))


def _make_slots(
    isolation: str,
    workers: int | str,
    preload: tuple[str, ...],
    name: str,
    ray_address: str | None,
    log_setup: LogSetup,
) -> list[Slot]:
    if isolation == "inprocess":
        from da3_core.runner.backends.inprocess import InProcessSlot

        return [InProcessSlot(0, "in-process", "this process")]
    if isolation == "ray":
        from da3_core.runner.backends.ray import make_ray_slots

        return list(
            make_ray_slots(workers, preload=preload, address=ray_address, name=name, log_setup=log_setup)
        )  # as list[Slot]
    from da3_core.runner.backends.process import ProcessSlot
    from da3_core.runner.devices import plan_workers, visible_gpus

    plans = plan_workers(workers, visible_gpus())
    return [
        ProcessSlot(i, plan.label, plan.device, env=plan.env, preload=preload, name=name, log_setup=log_setup)
        for i, plan in enumerate(plans)
    ]


def _pack_arguments(
    task: str, args: tuple[Any, ...], kwargs: dict[str, Any], signature: inspect.Signature | None, *, shared: bool
) -> Packed:
    try:
        return shm.pack((args, kwargs), shared=shared)
    except OSError:
        raise
    except Exception as exc:  # noqa: BLE001 - find and name the argument at fault
        names: list[str] = []
        values: list[Any] = []
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
            except Exception as inner:  # noqa: BLE001 - whatever pickling raises names this argument
                raise ArgumentNotPicklableError(task, name, f"{type(value).__name__}: {inner}") from None
        raise ArgumentNotPicklableError(task, "<arguments>", str(exc)) from None


__all__ = ["ErrorRecord", "Runner", "RunnerStatus"]
