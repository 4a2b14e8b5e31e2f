"""What a running task can ask of its runner: report progress, check for cancellation.

Tasks call `report_progress` between stages. In the worker it sends a `ProgressMsg` to the
parent; in in-process mode it hands the message to the runner's dispatcher directly. Each
call is also a cancellation checkpoint: if the caller gave up, it raises
`CancelledInWorker`; a task with no progress to report calls `check_cancelled` instead.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger(__name__)


class CancelledInWorker(Exception):
    """Raised inside a task at a checkpoint after its caller cancelled it."""


class CancelFlag(Protocol):
    """What a call's checkpoints read: a `threading.Event`, or the actor's `CallFlag`."""

    def is_set(self) -> bool: ...


@dataclass
class CallContext:
    """The context of the call running now.

    Attributes:
        call_id: The runner's id of the call.
        send_progress: Delivers (stage, fraction, detail) to the caller.
        cancelled: Set when the caller cancelled: by the worker's reader thread when a
            `CancelRequest` arrives, or (in-process mode) by `Job.cancel` itself.
    """

    call_id: int
    send_progress: Callable[[str, float | None, str], None]
    cancelled: CancelFlag


_local = threading.local()
_current: CallContext | None = None


def set_context(ctx: CallContext | None) -> None:
    """Install the context of the call that starts now (None when it ends)."""
    global _current
    _current = ctx
    _local.ctx = ctx


def _context() -> CallContext | None:
    # The thread that runs the call (the worker's main thread; in in-process mode, the
    # runner's dispatcher thread, one per runner, so several calls may run at once in one
    # process) finds its own call in the thread-local. The process-wide one is the fallback
    # for threads the task starts itself; it is reliable only in the worker, which runs one
    # call at a time (in in-process mode it is whichever call set it last, and the end of
    # any call clears it).
    return getattr(_local, "ctx", None) or _current


def report_progress(stage: str, fraction: float | None = None, detail: str = "") -> None:
    """Tell the caller where the task is; also a cancellation checkpoint.

    Args:
        stage: Short stage name, e.g. ``"inference"``.
        fraction: Overall progress in [0, 1], or None when unknown.
        detail: Optional free text.

    Raises:
        CancelledInWorker: The caller cancelled this call.
    """
    ctx = _context()
    if ctx is None:
        return
    check_cancelled()
    if fraction is not None:
        fraction = min(1.0, max(0.0, float(fraction)))
    ctx.send_progress(stage, fraction, detail)


def check_cancelled() -> None:
    """Raise `CancelledInWorker` if the caller of the current call gave up."""
    ctx = _context()
    if ctx is not None and ctx.cancelled.is_set():
        log.debug("call %d: cancelled, stopping at a checkpoint", ctx.call_id)
        raise CancelledInWorker(f"call {ctx.call_id} was cancelled by its caller")
