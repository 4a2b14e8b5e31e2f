"""What every job the run service owns has in common: its clock (queued, started, ended), the
events it reads from the runner, cancel, and the queue and time wording the pages show.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from da3_core.runner import Job, Progress, Queued, Started

# Keys of ``run.json``'s timings that the run service adds: seconds from submission to the end,
# and of those, seconds waiting in the queue (the worker's own "total" leaves the wait out).
WALL_S = "wall"


QUEUE_WAIT_S = "queue_wait"


@dataclass
class RunOutcome:
    """How a run ended.

    Attributes:
        status: ``"done"``, ``"failed"`` or ``"cancelled"``.
        message: The reason when not done ("" when done).
        model_unavailable: The weights could not be found (the page offers demo weights).
        traceback: The worker-side traceback, when there is one.
    """

    status: str
    message: str = ""
    model_unavailable: bool = False
    traceback: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "done"


def queued_text(position: int | None, ahead: int | None) -> str:
    """``Queued: position 1 (1 ahead)``; ``ahead`` counts the calls before it, the running
    ones included. Just ``Queued`` before the runner said where."""
    if position is None:
        return "Queued"
    return f"Queued: position {position}" + (f" ({ahead} ahead)" if ahead is not None else "")


def took_text(total_s: float | None, waiting_s: float | None) -> str:
    """``6.1 s (4.0 s running, 2.1 s waiting)``: the time from submission to the end, and
    how it split between the queue and the worker (``6.1 s`` when the split is unknown)."""
    if total_s is None:
        return ""
    if waiting_s is None:
        return f"{total_s:.1f} s"
    return f"{total_s:.1f} s ({max(0.0, total_s - waiting_s):.1f} s running, {waiting_s:.1f} s waiting)"


def _read_events(target: Any, job: Job) -> None:
    """Read ``job``'s new events into ``target``'s ``position``, ``ahead``, ``stage`` and
    ``fraction`` (an `ActiveRun` or an `ExportJob`)."""
    for event in job.poll_events():
        if isinstance(event, Queued):
            target.position, target.ahead = event.position, event.ahead
            target.stage = f"position {event.position} ({event.ahead} ahead)"
        elif isinstance(event, Started):
            target.position, target.ahead, target.stage = None, None, "starting"
        elif isinstance(event, Progress):
            target.position = None
            target.stage = event.stage + (f" ({event.detail})" if event.detail else "")
            if event.fraction is not None:
                target.fraction = event.fraction


def clock_timings(clock: tuple[float, float] | None) -> dict[str, float]:
    """``{WALL_S: total, QUEUE_WAIT_S: waiting}`` for ``run.json`` ({} when unknown)."""
    return {} if clock is None else {WALL_S: float(clock[0]), QUEUE_WAIT_S: float(clock[1])}


def job_clock(job: Job) -> tuple[float, float] | None:
    """(total, waiting) seconds of an ended job: submission to end, and submission to start
    (0 waiting when it never started); None while it runs."""
    if job.finished_at is None:
        return None
    started = job.started_at if job.started_at is not None else job.finished_at
    return job.finished_at - job.submitted_at, started - job.submitted_at


class OneJob:
    """What a handle with one runner job behind it (`ActiveRun`, `ExportJob`) reads from it.

    `da3_core.chunks.service.ChunkedRun` offers the same surface over many jobs."""

    job: Job
    outcome: Any

    chunked = False

    @property
    def submitted_at(self) -> float:
        return self.job.submitted_at

    @property
    def started_at(self) -> float | None:
        """When a worker took the job (monotonic), None while it waits."""
        return self.job.started_at

    @property
    def cancel_requested(self) -> bool:
        return self.job.cancel_requested

    def cancel(self) -> None:
        """Removed from the queue if waiting; stopped if running."""
        self.job.cancel()

    @property
    def finished(self) -> bool:
        """True once the outcome is saved (the page may show it)."""
        return self.outcome is not None

    @property
    def elapsed_s(self) -> float:
        """Seconds running (or waiting, while queued)."""
        if self.job.started_at is not None:
            return self.job.elapsed_s
        return time.monotonic() - self.job.submitted_at
