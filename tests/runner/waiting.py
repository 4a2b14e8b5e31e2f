"""Waiting in the runner's tests: on the runner's own events, never on a sleep.

A test that must act while a call runs (cancel it, kill its worker, close the runner) waits
for the call's events: `until_started` (the `Started` event: a worker took the call) or
`until_running` (the first `Progress`: the task's body runs; the fake tasks that tests stop
report one as they begin). A test that needs a call to stay running while it looks at the
queue runs a `Gate` (`tests.fake_tasks.gate`), which ends when the test opens it.

Wall-clock bounds. This suite shares two cores with other test runs, where a step that
takes 20 ms alone can take a second; bounds of 0.5 to 1.1 s failed CI twice. A bound only has
to tell "done at once" from the broken alternative, which waits for something it should not
(a 60 s budget, a task's 30 s sleep): `PROMPT_S` sits far from both. The two-second bounds of
the contract itself (a crash reported within 2 s, docs/ISOLATION.md item 7) stay as stated.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from da3_core.runner import Event, Job, Progress, Started

# Something the runner does at once (a cancel seen, a freed worker serving the next call): a
# few milliseconds alone, up to a second or two on a loaded 2-core machine; the broken
# alternatives in these tests wait 20 s or more (a budget, a sleep, a flood's length).
PROMPT_S = 5.0
# The longest wait for one event: a worker or actor may have to start first (seconds when
# the machine is busy). Only a hang reaches it.
EVENT_TIMEOUT_S = 60.0


def _until(job: Job, kind: type, what: str, timeout: float) -> list[Event]:
    seen: list[Event] = []
    for event in job.events(timeout=timeout):
        seen.append(event)
        if isinstance(event, kind):
            return seen
    raise AssertionError(f"call {job.call_id} ({job.task}) ended before {what}; events: {seen}")


def until_started(job: Job, timeout: float = EVENT_TIMEOUT_S) -> list[Event]:
    """The job's events up to and including its `Started` (a worker took the call)."""
    return _until(job, Started, "it started", timeout)


def until_running(job: Job, timeout: float = EVENT_TIMEOUT_S) -> list[Event]:
    """The job's events up to and including its first `Progress` (the task's body runs)."""
    return _until(job, Progress, "it reported progress", timeout)


def wait_until(predicate: Callable[[], Any], within_s: float, every_s: float = 0.01) -> bool:
    """True as soon as ``predicate()`` is; False if it is not within ``within_s``."""
    deadline = time.monotonic() + within_s
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(every_s)


class Gate:
    """A file that a `tests.fake_tasks.gate` call waits for: the call runs until `open`.

    Submit it as ``runner.submit("tests.fake_tasks:gate", gate.args)``; its result is
    ``(name, worker pid)``.
    """

    def __init__(self, folder: Path, name: str) -> None:
        self.path = Path(folder) / f"gate-{name}"
        self.name = self.path.name

    @property
    def args(self) -> tuple[str]:
        return (str(self.path),)

    def open(self) -> None:
        self.path.touch()


__all__ = ["EVENT_TIMEOUT_S", "PROMPT_S", "Gate", "until_running", "until_started", "wait_until"]
