"""One submitted call (`Job`) and the events its caller sees while it waits and runs."""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from da3_core.runner import shm
from da3_core.runner.protocol import GPUError, Packed, ResultNotCPUError, TaskCancelledError

if TYPE_CHECKING:
    from da3_core.runner.dispatcher import Runner

log = logging.getLogger(__name__)


class Loadable(Protocol):
    """A received result: `shm.Received`, or the Ray backend's view of its object store."""

    def load(self) -> Any: ...

    def release(self) -> None: ...


@dataclass(frozen=True)
class Queued:
    """The call waits. ``position`` 1 means it runs next; ``ahead`` counts calls before it, the running ones included."""

    position: int
    ahead: int


@dataclass(frozen=True)
class Started:
    """The call was handed to worker ``worker`` (pid ``worker_pid``, None for a Ray actor's unknown pid) after ``waited_s`` seconds."""

    worker_pid: int | None
    waited_s: float
    worker: str = ""


@dataclass(frozen=True)
class Progress:
    """The task reported ``stage`` (and ``fraction`` in [0, 1] when known) after ``elapsed_s`` seconds."""

    stage: str
    fraction: float | None
    detail: str
    elapsed_s: float


Event = Queued | Started | Progress


class Job:
    """One submitted call. Thread-safe; created by `Runner.submit`.

    Attributes:
        call_id: Unique within the runner.
        task: The task's import path.
        payload: The packed arguments (their segment is unlinked when the call ends).
        budget_s: Seconds the call may run once started before its worker is killed.
        worker: Label of the worker that ran (runs) it, once started.
    """

    def __init__(self, runner: Runner, call_id: int, task: str, payload: Packed, budget_s: float) -> None:
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
        self.worker = ""
        self.last_progress: Progress | None = None
        self._cond = threading.Condition()  # guards the event deque and finishing
        self._events: collections.deque[Event] = collections.deque()
        self._done = threading.Event()
        self._received: Loadable | None = None
        self._value: Any = None
        self._loaded = False
        self._error: BaseException | None = None
        self.seconds_in_worker: float | None = None
        # Set by `cancel` at once. In-process mode hands it to the task's context, so its
        # next `check_cancelled` / `report_progress` raises (a worker has its own copy, set
        # when a `CancelRequest` arrives).
        self._cancel_event = threading.Event()
        self._callbacks: list[Callable[[Job], None]] = []
        # Set by the runner for a call a worker runs: its bookkeeping (counts, the slot
        # freed) happens before anyone can see the call done.
        self._before_done: Callable[[], None] | None = None

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

        ``fn`` runs in the thread that finished the call: the runner's thread for the
        worker that ran it, the thread that called `cancel` for a call cancelled while
        queued, the thread that called `Runner.close` for calls still queued then. If the
        call has already finished, ``fn`` runs at once in this thread. Callbacks run in the
        order they were added. An exception from ``fn`` is logged and otherwise ignored.

        Keep ``fn`` short, and never let it wait for another call of the same runner: while
        it runs in a worker's thread, that worker cannot start the next call.
        """
        with self._cond:
            if not self._done.is_set():
                self._callbacks.append(fn)
                return
        self._run_callback(fn)

    def _run_callback(self, fn: Callable[[Job], None]) -> None:
        try:
            fn(self)
        except Exception:  # noqa: BLE001 - a callback must never break the dispatcher
            log.exception("done-callback %r of call %d (%s) raised", fn, self.call_id, self.task)

    def events(self, timeout: float | None = None) -> Iterator[Event]:
        """Yield events (`Queued`, `Started`, `Progress`) as they come, until the call finishes.

        Blocks without polling: the finish wakes the waiting thread at once.

        Args:
            timeout: Stop waiting this many seconds after the first wait began, raising
                `TimeoutError` (the call goes on); None waits as long as the call lasts.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._cond:
                while not self._events and not self._done.is_set():
                    if deadline is None:
                        self._cond.wait()
                        continue
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise TimeoutError(f"{self.task}: waited {timeout} s for its next event")
                    self._cond.wait(left)
                if not self._events:
                    return
                event = self._events.popleft()
            yield event

    def poll_events(self) -> list[Event]:
        """The events that arrived since the last look, without waiting."""
        with self._cond:
            out = list(self._events)
            self._events.clear()
        return out

    def result(self, timeout: float | None = None) -> Any:
        """Wait for the call and return its value (CPU data), or raise its error.

        The value is unpickled once, in the first caller's thread; its large arrays are
        views of shared memory (freed when the last of them is dropped). Later calls return
        the same object.

        Raises:
            TimeoutError: ``timeout`` passed before the call finished (the call goes on).
            GPUError: The call failed (see `da3_core.runner.protocol` for the kinds).
        """
        if not self._done.wait(timeout):
            raise TimeoutError(f"{self.task} has not finished after {timeout} s")
        if self._error is not None:
            raise self._error
        with self._cond:
            if not self._loaded:
                received, self._received = self._received, None
                assert received is not None
                try:
                    self._value = received.load()
                except Exception as exc:  # noqa: BLE001 - name the failure instead of a bare unpickling error
                    self._error = ResultNotCPUError(
                        type(exc).__name__,
                        type(exc).__module__,
                        f"the result of {self.task} could not be read in the caller: {exc}",
                        "",
                    )
                    raise self._error from exc
                finally:
                    received.release()
                self._loaded = True
            return self._value

    def release_value(self) -> None:
        """Let go of the call's value (its arrays' memory), for a caller that keeps a finished
        job for its clock and state but has taken what it needed: a later `result` returns
        None. An unread result is released unread (its shared memory freed). A call not
        finished yet is left alone."""
        with self._cond:
            if not self._done.is_set():
                return
            received, self._received = self._received, None
            self._value, self._loaded = None, True
        if received is not None:
            received.release()

    @property
    def elapsed_s(self) -> float:
        """Seconds since the call started running (0 while queued)."""
        if self.started_at is None:
            return 0.0
        return (self.finished_at or time.monotonic()) - self.started_at

    # -- runner side -----------------------------------------------------------------
    def _push(self, event: Event) -> None:
        with self._cond:
            if isinstance(event, Progress):
                self.last_progress = event
            self._events.append(event)
            self._cond.notify_all()

    def _finish(
        self, received: Loadable | None = None, error: BaseException | None = None, seconds: float | None = None
    ) -> bool:
        """End the call with a received result or an error; False if it had already ended.

        Several threads may try (a worker's thread, cancel, close): the first one wins, once.
        """
        with self._cond:
            if self._done.is_set():
                if received is not None:
                    received.release()
                return False
            self.finished_at = time.monotonic()
            self._received, self._error = received, error
            self.seconds_in_worker = seconds
            args_segment, self.payload = self.payload.segment, Packed(b"")  # the arguments are no longer needed
            if self._before_done is not None:
                try:
                    self._before_done()
                except Exception:  # noqa: BLE001 - bookkeeping must never keep a call from finishing
                    log.exception("bookkeeping of call %d (%s) failed", self.call_id, self.task)
            self._done.set()
            self._cond.notify_all()
            callbacks, self._callbacks = self._callbacks, []
        shm.unlink(args_segment)
        for fn in callbacks:  # outside the lock: a callback may add another callback
            self._run_callback(fn)
        return True


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


def cancelled_before_start(job: Job) -> TaskCancelledError:
    """The error of a call cancelled (or abandoned) before a worker took it."""
    return TaskCancelledError(f"{job.task} was cancelled before it started (its caller left)")


__all__ = ["Event", "GPUError", "Job", "Progress", "Queued", "Started", "wait_for"]
