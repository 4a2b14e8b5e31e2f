"""The runner's wire protocol and the errors a caller can receive.

Independent of DA3 (its types are in `da3_core.contract`). Every message that crosses
between the parent and a worker (a spawned process or a Ray actor) is one of the frozen
dataclasses below; payloads are `Packed` pickles whose large buffers travel out of band
(`da3_core.runner.shm`). See ``docs/ISOLATION.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Packages the parent must never import: importing them there is the ZeroGPU bug class.
# The one list: the result guard (`inside.tocpu`) refuses their objects, and the import-rule
# test refuses their imports in parent-side code.
FORBIDDEN_PACKAGES: tuple[str, ...] = (
    "torch",
    "torchvision",
    "depth_anything_3",
    "xformers",
    "gsplat",
    "triton",
    "e3nn",
    "addict",
)


def is_forbidden_module(module: str | None) -> bool:
    """True when ``module`` is one of `FORBIDDEN_PACKAGES` or inside one."""
    if not module:
        return False
    return any(module == p or module.startswith(p + ".") for p in FORBIDDEN_PACKAGES)


# --------------------------------------------------------------------------------------
# Payloads
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Packed:
    """A pickled value whose large buffers may sit in a shared-memory segment.

    Attributes:
        data: The protocol-5 pickle stream (small: large buffers are out of band); in a Ray
            actor, a view of the arguments' array in Ray's object store.
        segment: Name of the shared-memory segment holding the out-of-band buffers, or
            None when there are none.
        spans: ``(offset, length)`` of each out-of-band buffer in the segment, in the order
            the pickle stream asks for them.
        size: The segment's size in bytes.
    """

    data: bytes | memoryview
    segment: str | None = None
    spans: tuple[tuple[int, int], ...] = ()
    size: int = 0

    @property
    def nbytes(self) -> int:
        """Bytes of the whole value: stream plus out-of-band buffers."""
        return len(self.data) + sum(n for _, n in self.spans)


# --------------------------------------------------------------------------------------
# Wire messages (parent <-> worker). One class per message kind.
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CallRequest:
    """Parent -> worker: run one task.

    Attributes:
        call_id: Unique per runner; every reply carries it back.
        task: Import path ``"package.module:qualname"``; never a closure.
        payload: ``(args, kwargs)``, packed and checked in the caller. The parent owns its
            segment and unlinks it when the call ends.
    """

    call_id: int
    task: str
    payload: Packed


@dataclass(frozen=True)
class CancelRequest:
    """Parent -> worker: the caller gave up on ``call_id``; stop at the next checkpoint."""

    call_id: int


@dataclass(frozen=True)
class WorkerReady:
    """Worker -> parent, once after start. ``pid`` of the worker, its Python ``executable``."""

    pid: int
    executable: str


@dataclass(frozen=True)
class ProgressMsg:
    """Worker -> parent: progress of ``call_id``.

    Attributes:
        stage: Short stage name, e.g. ``"loading model"``, ``"inference"``.
        fraction: Overall progress in [0, 1], or None when unknown.
        detail: Optional free text.
    """

    call_id: int
    stage: str
    fraction: float | None = None
    detail: str = ""


@dataclass(frozen=True)
class OkResult:
    """Worker -> parent: the task returned.

    Attributes:
        payload: The CPU-only value, packed in the worker. Its segment (if any) was made
            by the worker; the parent maps it and unlinks its name on receipt.
        seconds: Time the task took in the worker, result conversion included.
    """

    call_id: int
    payload: Packed
    seconds: float


@dataclass(frozen=True)
class ExceptionResult:
    """Worker -> parent: the task raised (or its result was refused).

    Attributes:
        type_name: The exception's class name, e.g. ``"ValueError"``.
        module: The class's module, e.g. ``"builtins"``.
        message: ``str(exc)``.
        traceback: The worker-side formatted traceback.
        recycle: The worker should be replaced after this (e.g. ``MemoryError``).
    """

    call_id: int
    type_name: str
    module: str
    message: str
    traceback: str
    recycle: bool = False


@dataclass(frozen=True)
class Notice:
    """Something a third-party library printed in a worker (a Python warning, a log record
    at WARNING or above, or a line written to stdout/stderr), captured there instead of
    printed (`da3_core.runner.inside.capture`) and shown once on the Runner page.

    Attributes:
        message: The text, as the library wrote it (colour codes removed).
        kind: ``"warning"`` (Python ``warnings``), ``"log"`` (a ``logging`` record) or
            ``"print"`` (written to ``sys.stdout``/``sys.stderr``).
        category: The warning's class (``"UserWarning"``), the record's level
            (``"WARNING"``) or the stream (``"stdout"``).
        source: The module it came from (``"depth_anything_3.cfg"``, ``"xformers"``).
        count: How many times it was seen in that worker process.
        first_seen: When it was first seen (``time.time()`` in the worker).
    """

    message: str
    kind: str
    category: str
    source: str
    count: int = 1
    first_seen: float = 0.0

    @property
    def key(self) -> tuple[str, str, str, str]:
        """What makes two notices the same one (everything but the count and the time)."""
        return (self.kind, self.category, self.source, self.message)


def merge_notices(*groups: tuple[Notice, ...]) -> tuple[Notice, ...]:
    """One notice per `Notice.key` over ``groups``: counts added, the earliest first seen
    kept, in the order first seen."""
    merged: dict[tuple[str, str, str, str], Notice] = {}
    for group in groups:
        for notice in group:
            old = merged.get(notice.key)
            if old is None:
                merged[notice.key] = notice
            else:
                merged[notice.key] = Notice(
                    notice.message,
                    notice.kind,
                    notice.category,
                    notice.source,
                    old.count + notice.count,
                    min(old.first_seen, notice.first_seen),
                )
    return tuple(sorted(merged.values(), key=lambda n: n.first_seen))


@dataclass(frozen=True)
class NoticesMsg:
    """Worker -> parent, outside any call: the worker's notices so far (all of them, each
    with its count), sent when they changed while no call ran (e.g. during the preload)."""

    notices: tuple[Notice, ...]


@dataclass(frozen=True)
class CallDone:
    """Worker -> parent: the last message of a call.

    Attributes:
        reply: The outcome.
        worker_state: A snapshot of the worker after the call (pid, memory, cached models,
            device), shown on the Runner page without queuing a call.
        notices: The worker's notices so far (all of them, each with its count), or None
            when they did not change since the worker last sent them.
    """

    reply: OkResult | ExceptionResult
    worker_state: dict[str, Any]
    notices: tuple[Notice, ...] | None = None


# --------------------------------------------------------------------------------------
# Errors a caller can receive
# --------------------------------------------------------------------------------------


class GPUError(RuntimeError):
    """Base of every error the runner raises to a caller."""


class ArgumentNotPicklableError(GPUError, TypeError):
    """An argument cannot be pickled; raised in the caller before any work is queued."""

    def __init__(self, task: str, argument: str, reason: str) -> None:
        self.task, self.argument, self.reason = task, argument, reason
        super().__init__(f"{task}: argument {argument!r} cannot be pickled ({reason}); pass plain data instead")


class TaskError(GPUError):
    """The task raised in the worker. Keeps the original type name, message and traceback."""

    def __init__(self, type_name: str, module: str, message: str, remote_traceback: str) -> None:
        self.type_name, self.module, self.message, self.remote_traceback = type_name, module, message, remote_traceback
        super().__init__(f"{type_name}: {message}")

    def __str__(self) -> str:
        return f"{self.type_name}: {self.message}\n\nWorker traceback:\n{self.remote_traceback}"


class ResultNotCPUError(TaskError):
    """The task's result held something that could not be turned into CPU data."""


class TaskTimeoutError(GPUError, TimeoutError):
    """The call ran past its ``duration`` budget; the worker was killed."""

    def __init__(self, task: str, budget_s: float, elapsed_s: float) -> None:
        self.task, self.budget_s, self.elapsed_s = task, budget_s, elapsed_s
        super().__init__(
            f"{task} ran past its budget of {budget_s:.1f} s (killed after {elapsed_s:.1f} s); "
            "the worker was restarted. Use fewer frames, a lower process_res, or a larger duration."
        )


class WorkerCrashedError(GPUError):
    """The worker process died during the call (signal, segfault, os._exit, out of memory)."""

    def __init__(self, task: str, exitcode: int | None, how: str | None = None) -> None:
        self.task, self.exitcode = task, exitcode
        if how is None:
            if exitcode is not None and exitcode < 0:
                import signal

                try:
                    how = f"signal {signal.Signals(-exitcode).name}"
                except ValueError:
                    how = f"signal {-exitcode}"
            else:
                how = f"exit code {exitcode}"
        self.how = how
        super().__init__(
            f"The GPU worker died during {task} ({how}); a fresh worker starts on the next call. "
            "If this repeats, the input may be too large for the memory available."
        )

    def __reduce__(self) -> Any:
        return (type(self), (self.task, self.exitcode, self.how))


class TaskCancelledError(GPUError):
    """The caller cancelled the call (or gave up waiting)."""


class RunnerClosedError(GPUError):
    """The runner was shut down."""


class WorkerStartError(GPUError):
    """A worker process could not be started (or did not report ready in time)."""
