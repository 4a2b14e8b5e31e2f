"""The isolation runner: ZeroGPU's ``@spaces.GPU`` made strict, independent of DA3.

Parts (see ``docs/ISOLATION.md``):

* `jobs`: a submitted call (`Job`) and its events (`Queued`, `Started`, `Progress`);
* `dispatcher`: the `Runner`: one FIFO, queue positions, budgets, cancel, abandonment;
* `backends`: where calls run (spawned processes, one per GPU; Ray actors; in process);
* `protocol`: wire messages and the errors a caller receives; `shm`: large buffers in
  shared memory; `inside`: the torch-free code that runs in a worker or actor;
* `context`: what a task may call (`report_progress`, `check_cancelled`);
* `decorator`: ``@gpu(duration=...)``; `logsetup`: workers log as their caller does.

It imports nothing of the application: settings arrive as arguments (the application turns
its own into ``Runner(...)`` arguments), and logging is the caller's (`logsetup`).
"""

from da3_core.runner.backends.base import WorkerStatus
from da3_core.runner.decorator import GPUFunction, default_runner, gpu, set_default_runner, set_default_runner_factory
from da3_core.runner.dispatcher import ErrorRecord, Runner, RunnerStatus
from da3_core.runner.jobs import Event, Job, Progress, Queued, Started, wait_for
from da3_core.runner.protocol import (
    ArgumentNotPicklableError,
    GPUError,
    ResultNotCPUError,
    RunnerClosedError,
    TaskCancelledError,
    TaskError,
    TaskTimeoutError,
    WorkerCrashedError,
    WorkerStartError,
)

__all__ = [
    "ArgumentNotPicklableError",
    "ErrorRecord",
    "Event",
    "GPUError",
    "GPUFunction",
    "Job",
    "Progress",
    "Queued",
    "ResultNotCPUError",
    "Runner",
    "RunnerClosedError",
    "RunnerStatus",
    "Started",
    "TaskCancelledError",
    "TaskError",
    "TaskTimeoutError",
    "WorkerCrashedError",
    "WorkerStartError",
    "WorkerStatus",
    "default_runner",
    "gpu",
    "set_default_runner",
    "set_default_runner_factory",
    "wait_for",
]
