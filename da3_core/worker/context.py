"""What a running task can ask of its runner: report progress, check for cancellation.

Tasks call `report_progress` between stages. In the worker it sends a `ProgressMsg` to the
parent; in in-process mode it calls the caller's callback. Each call is also a cancellation
checkpoint: if the caller gave up, it raises `CancelledInWorker`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable


class CancelledInWorker(Exception):
    """Raised inside a task at a checkpoint after its caller cancelled it."""


@dataclass
class CallContext:
    """The context of the call running now.

    Attributes:
        call_id: The runner's id of the call.
        send_progress: Delivers (stage, fraction, detail) to the caller.
        cancelled: Set when the caller cancelled.
    """

    call_id: int
    send_progress: Callable[[str, "float | None", str], None]
    cancelled: threading.Event


_local = threading.local()
_current: CallContext | None = None


def set_context(ctx: CallContext | None) -> None:
    """Install the context of the call that starts now (None when it ends)."""
    global _current
    _current = ctx
    _local.ctx = ctx


def _context() -> CallContext | None:
    # A thread-local context (in-process mode runs calls in several caller threads) wins
    # over the process-wide one (the worker runs one call at a time).
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
        raise CancelledInWorker(f"call {ctx.call_id} was cancelled by its caller")
