"""The interface between the dispatcher and a backend: one `Slot` runs one call at a time."""

from __future__ import annotations

import abc
import builtins
import importlib
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from da3_core.runner.logsetup import one_line
from da3_core.runner.protocol import (
    ExceptionResult,
    GPUError,
    Notice,
    ResultNotCPUError,
    TaskCancelledError,
    TaskError,
    merge_notices,
)

if TYPE_CHECKING:
    from da3_core.runner.jobs import Job

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CallPolicy:
    """What the dispatcher asks of every slot while a call runs.

    Attributes:
        cancel_grace_s: After a cancel, how long a task may take to reach a checkpoint
            before its worker is killed.
        abandon_after_s: A call whose watcher is silent this long is cancelled (None: never).
        start_timeout_s: How long a new worker may take to report ready.
    """

    cancel_grace_s: float = 10.0
    abandon_after_s: float | None = 30.0
    start_timeout_s: float = 60.0


@dataclass(frozen=True)
class WorkerStatus:
    """One worker (process or actor), for the Runner page.

    Attributes:
        label: e.g. ``"worker 1 · GPU 0"``.
        device: What it is pinned to: ``"GPU 0"``, ``"CPU"``, a Ray node.
        state: ``"stopped"``, ``"starting"``, ``"idle"``, ``"busy"`` or ``"closed"``.
        pid: The live process's pid, or None.
        rss_mb: Its resident memory now, or None when unknown.
        current_task / current_elapsed_s / current_stage: The call it runs now.
        starts: How many times it was started.
        calls_ok / calls_failed: Calls it finished.
        state_report: Its last self-report (cached models, device, peak memory).
        notices: What third-party libraries printed in it (warnings, log records, prints),
            each distinct one once, over all its starts (see `Notice`).
    """

    label: str
    device: str
    state: str
    pid: int | None
    rss_mb: float | None
    current_task: str | None
    current_elapsed_s: float
    current_stage: str | None
    starts: int
    calls_ok: int
    calls_failed: int
    state_report: dict[str, Any] = field(default_factory=dict)
    notices: tuple[Notice, ...] = ()


class Slot(abc.ABC):
    """One place where a call runs: a worker process, the caller's process, a Ray actor.

    The dispatcher gives a slot one call at a time (`run`), from its own thread. A slot
    owns its worker's lifetime: it starts it lazily, kills it on timeout, on a cancel the
    task ignores, on `restart` and `close`, and reports a death as `WorkerCrashedError`.
    """

    def __init__(self, index: int, label: str, device: str) -> None:
        self.index = index
        self.label = label
        self.device = device
        self.current: Job | None = None  # set by the dispatcher
        self.starts = 0
        self.calls_ok = 0
        self.calls_failed = 0
        self.state_report: dict[str, Any] = {}
        self._closed = False  # set by `close`
        self._starting = False  # set while a worker is being started
        self._notices_before: tuple[Notice, ...] = ()  # of the workers this slot had before
        self._notices_now: tuple[Notice, ...] = ()  # the live worker's, as it last sent them

    @abc.abstractmethod
    def run(self, job: Job, policy: CallPolicy) -> None:
        """Run ``job`` to its end and finish it (`Job._finish`) with its value or error.

        Enforces the job's budget from the moment it starts, sends a cancel when
        ``job.cancel_requested`` (or the job is abandoned) and kills after the grace period.
        Must not raise for anything the task or the worker does.
        """

    @abc.abstractmethod
    def wake(self) -> None:
        """A cancel for the running call arrived: react now (called from any thread)."""

    @abc.abstractmethod
    def restart(self) -> None:
        """Kill the worker; a running call fails with `TaskCancelledError`; the next call starts a fresh one."""

    @abc.abstractmethod
    def close(self) -> None:
        """End the worker for good (a running call fails with `RunnerClosedError`)."""

    @abc.abstractmethod
    def pid(self) -> int | None:
        """The live worker's pid, or None."""

    def rss_mb(self) -> float | None:
        """The worker's resident memory in MB now, or None."""
        pid = self.pid()
        if pid is None:
            return None
        try:
            import psutil

            return psutil.Process(pid).memory_info().rss / 2**20
        except Exception:  # noqa: BLE001 - the process may be gone
            return None

    def note_notices(self, notices: tuple[Notice, ...] | None) -> None:
        """The live worker's notices so far (cumulative, as it sends them); None: unchanged."""
        if notices is not None:
            self._notices_now = tuple(notices)

    def new_worker(self) -> None:
        """A fresh worker took over: keep the old one's notices, count the new one's anew."""
        self._notices_before = merge_notices(self._notices_before, self._notices_now)
        self._notices_now = ()

    @property
    def notices(self) -> tuple[Notice, ...]:
        """Every distinct notice of this slot's workers, counts added over its starts."""
        return merge_notices(self._notices_before, self._notices_now)

    def refresh(self) -> None:  # noqa: B027 - an optional hook: a backend with nothing to read keeps this no-op
        """Read what a worker sent while idle (e.g. notices), without blocking; called by `status`."""

    def state(self) -> str:
        """``"closed"``, ``"starting"``, ``"busy"``, ``"idle"`` or ``"stopped"``."""
        if self._closed:
            return "closed"
        if self._starting and self.current is None:
            return "starting"
        if self.current is not None:
            return "busy"
        return "idle" if self.pid() is not None else "stopped"

    def status(self) -> WorkerStatus:
        """A snapshot for display; cheap and non-blocking."""
        self.refresh()
        current = self.current
        return WorkerStatus(
            label=self.label,
            device=self.device,
            state=self.state(),
            pid=self.pid(),
            rss_mb=self.rss_mb(),
            current_task=current.task if current else None,
            current_elapsed_s=current.elapsed_s if current else 0.0,
            current_stage=current.last_progress.stage if current and current.last_progress else None,
            starts=self.starts,
            calls_ok=self.calls_ok,
            calls_failed=self.calls_failed,
            state_report=dict(self.state_report),
            notices=self.notices,
        )


class WorkerSlot(Slot):
    """A slot that owns a worker it can kill: a spawned process or a Ray actor.

    `restart` and `close` are the same for both; a backend says how to kill (`_kill`) and
    how to let an idle worker leave on its own (`_let_exit`)."""

    @abc.abstractmethod
    def _kill(self, reason: str) -> None:
        """Kill the worker now (``reason``: ``"restart"``, ``"close"``, a timeout ...)."""

    @abc.abstractmethod
    def _let_exit(self) -> None:
        """Ask an idle worker to exit by itself, briefly waiting for it."""

    def restart(self) -> None:
        self._kill("restart")

    def close(self) -> None:
        self._closed = True
        if self.current is None:
            self._let_exit()
        self._kill("close")


def cancel_or_kill_due(
    job: Job, policy: CallPolicy, now: float, cancel_deadline: float | None
) -> tuple[bool, float | None]:
    """The shared cancel rule of every slot's wait loop.

    Returns:
        ``(send_cancel, cancel_deadline)``: ``send_cancel`` is True once, when a cancel
        (asked, or the watcher gone silent) must be sent to the worker now; the deadline is
        when the worker gets killed if the task has not stopped.
    """
    if not job.cancel_requested and job.abandoned(policy.abandon_after_s):
        log.debug("call %d (%s) abandoned: its watcher is silent; cancelling", job.call_id, job.task)
        job.cancel_requested = True  # nobody is waiting any more: free the worker
    if job.cancel_requested and cancel_deadline is None:
        return True, now + policy.cancel_grace_s
    return False, cancel_deadline


def next_wake(job: Job, policy: CallPolicy, deadline: float, cancel_deadline: float | None, now: float) -> float:
    """Seconds a slot may wait before it must look at the clock again (no fixed tick)."""
    until = [deadline - now]
    if cancel_deadline is not None:
        until.append(cancel_deadline - now)
    if policy.abandon_after_s is not None and job.last_seen is not None and not job.cancel_requested:
        until.append(job.last_seen + policy.abandon_after_s - now + 0.01)
    return max(0.0, min(until))


def error_for_reply(job: Job, reply: ExceptionResult, worker: str) -> GPUError:
    """The caller-side error for a task's `ExceptionResult`, logged once: a task error as
    one line at ERROR (the worker-side traceback at DEBUG; the page shows it), a cancel at
    a checkpoint at DEBUG."""
    error = task_error(reply, cancelled=job.cancel_requested)
    if isinstance(error, TaskCancelledError):
        log.debug("call %d (%s) stopped at a checkpoint after its cancel", job.call_id, job.task)
    else:
        log.error(
            "call %d (%s) failed on %s: %s: %s", job.call_id, job.task, worker, reply.type_name, one_line(reply.message)
        )
        log.debug("call %d worker traceback:\n%s", job.call_id, reply.traceback)
    return error


# --------------------------------------------------------------------------------------
# Errors from the worker keep their type
# --------------------------------------------------------------------------------------

_ERROR_CLASSES: dict[tuple[str, str], type[TaskError]] = {}


def task_error(reply: ExceptionResult, *, cancelled: bool) -> GPUError:
    """The caller-side error for a worker's `ExceptionResult`."""
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
            original = getattr(importlib.import_module(module), type_name, None)
        except Exception:  # noqa: BLE001 - fall back to a plain TaskError
            original = None
    cls: type[TaskError] = TaskError
    if isinstance(original, type) and issubclass(original, Exception) and not issubclass(original, TaskError):
        try:
            cls = type(type_name, (TaskError, original), {"__module__": "da3_core.runner.protocol"})
        except TypeError:  # incompatible layouts (e.g. OSError): keep the plain TaskError
            cls = TaskError
    _ERROR_CLASSES[key] = cls
    return cls
