"""The calling process as a backend (``DA3_ISOLATION=inprocess``): for debugging only.

Tasks run in the slot's thread of this process: torch gets imported here, a timeout cannot
kill anything, a crash takes the server down. Cancel still works at the task's checkpoints.
"""

from __future__ import annotations

import os
import time
from typing import Any

from da3_core.runner import shm
from da3_core.runner.backends.base import CallPolicy, Slot, task_error
from da3_core.runner.jobs import Job, Progress, Started
from da3_core.runner.protocol import CallRequest, OkResult, ProgressMsg


class InProcessSlot(Slot):
    """Runs calls in this process, one at a time."""

    def pid(self) -> int | None:
        return os.getpid()

    def state(self) -> str:
        return "busy" if self.current is not None else "idle"

    def rss_mb(self) -> float | None:
        return None  # the server's own memory: not the worker's to show

    def wake(self) -> None:
        pass  # `Job.cancel` sets the job's event, which the task's next checkpoint reads

    def restart(self) -> None:
        pass  # nothing to kill

    def close(self) -> None:
        pass

    def run(self, job: Job, policy: CallPolicy) -> None:
        from da3_core.runner.inside.calls import run_call  # installs and clears the task context itself

        job.started_at = time.monotonic()
        job.worker = self.label
        job._push(Started(os.getpid(), job.started_at - job.submitted_at, self.label))

        def send(msg: Any) -> None:
            # Nothing watches the clock while the task runs in this thread: its progress
            # reports are where a silent watcher is noticed.
            if not job.cancel_requested and job.abandoned(policy.abandon_after_s):
                job.cancel_requested = True
                job._cancel_event.set()
            if isinstance(msg, ProgressMsg) and msg.call_id == job.call_id:
                job._push(Progress(msg.stage, msg.fraction, msg.detail, job.elapsed_s))

        reply = run_call(CallRequest(job.call_id, job.task, job.payload), job._cancel_event, send, shared=False)
        self.state_report = {"pid": os.getpid(), "inprocess": True}
        if isinstance(reply, OkResult):
            job._finish(received=shm.Received(reply.payload, unlink_now=True), seconds=reply.seconds)
        else:
            job._finish(error=task_error(reply, cancelled=job.cancel_requested))
