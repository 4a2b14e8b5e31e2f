"""Spawned worker processes: one `ProcessSlot` per worker, each pinned to its device.

A slot owns one process started with the ``spawn`` context (the only kind of process that
imports torch), talks to it over a duplex pipe, and waits on three things at once: the pipe,
the process's sentinel (its death) and a self-pipe that a cancel writes to. Nothing polls:
the wait's timeout is the next deadline (budget, cancel grace, abandonment).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import multiprocessing.spawn as mp_spawn
import os
import threading
import time
from collections.abc import Iterator
from multiprocessing.connection import Connection, wait
from typing import Any

from da3_core.runner import shm
from da3_core.runner.backends.base import CallPolicy, WorkerSlot, cancel_or_kill_due, error_for_reply, next_wake
from da3_core.runner.jobs import Job, Progress, Started
from da3_core.runner.logsetup import LogSetup
from da3_core.runner.protocol import (
    CallDone,
    CallRequest,
    CancelRequest,
    NoticesMsg,
    OkResult,
    ProgressMsg,
    RunnerClosedError,
    TaskCancelledError,
    TaskTimeoutError,
    WorkerCrashedError,
    WorkerReady,
    WorkerStartError,
)

log = logging.getLogger(__name__)


class ProcessSlot(WorkerSlot):
    """One spawned worker process.

    Args:
        index: The slot's number in the pool.
        label: Name shown on the Runner page and in logs.
        device: What it is pinned to (``"GPU 1"``, ``"CPU"``).
        env: Environment set in the worker before anything is imported there (e.g.
            ``{"CUDA_VISIBLE_DEVICES": "1"}``).
        preload: Modules the worker imports right after it starts.
        name: The worker's process name.
        log_setup: How the worker logs (default: as this process's package logger does).
    """

    def __init__(
        self,
        index: int,
        label: str,
        device: str,
        *,
        env: dict[str, str] | None = None,
        preload: tuple[str, ...] = (),
        name: str = "da3-worker",
        log_setup: LogSetup | None = None,
    ) -> None:
        super().__init__(index, label, device)
        self.env = dict(env or {})
        self.preload = tuple(preload)
        self.name = name
        self.log_setup = log_setup or LogSetup.of_caller()
        self._ctx = mp.get_context("spawn")
        self._lock = threading.RLock()  # guards _proc/_conn (start, kill, read)
        self._proc: Any = None
        self._conn: Connection | None = None
        self._kill_reason: str | None = None
        # A self-pipe waited on beside the worker's pipe and sentinel, so a cancel from a
        # caller's thread is acted on at once.
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)  # a full pipe already means "wake up"

    # -- Slot ------------------------------------------------------------------------
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if _alive(proc) else None

    def wake(self) -> None:
        with contextlib.suppress(OSError):  # full (already woken) or closed
            os.write(self._wake_w, b"\0")

    def release_fds(self) -> None:
        """Close the wake-up pipe (once the slot's thread has ended)."""
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    def run(self, job: Job, policy: CallPolicy) -> None:
        proc, conn = self._ensure_worker(policy.start_timeout_s)
        job.started_at = time.monotonic()
        job.worker = self.label
        log.debug(
            "call %d (%s) started on %s (pid %d) after %.3f s queued",
            job.call_id,
            job.task,
            self.label,
            proc.pid,
            job.started_at - job.submitted_at,
        )
        job._push(Started(proc.pid, job.started_at - job.submitted_at, self.label))
        try:
            conn.send(CallRequest(job.call_id, job.task, job.payload))
        except OSError:
            pass  # the worker died just now; its sentinel tells us below
        deadline = job.started_at + job.budget_s
        cancel_deadline: float | None = None
        while True:
            now = time.monotonic()
            ready = wait(
                [conn, proc.sentinel, self._wake_r], timeout=next_wake(job, policy, deadline, cancel_deadline, now)
            )
            if self._wake_r in ready:
                self._drain_wake()  # a cancel: handled with the checks below
            if conn in ready:
                try:
                    msg = conn.recv()
                except (EOFError, OSError):
                    msg = None
                if msg is not None and self._handle(job, msg):
                    return
                # No `continue`: a task that reports progress faster than we read it must
                # not starve the death, deadline and cancel checks below.
            if proc.sentinel in ready or not _alive(proc):
                # A reply may have arrived just before the death: read what is left first.
                while conn.poll(0):
                    try:
                        if self._handle(job, conn.recv()):
                            return
                    except (EOFError, OSError):
                        break
                proc.join(1)
                reason, exitcode, pid = self._kill_reason, proc.exitcode, proc.pid
                self._reap()  # closes `proc`: read what we need from it first
                if reason == "restart":
                    job._finish(error=TaskCancelledError(f"{job.task} was stopped: the worker was restarted"))
                elif reason == "close":
                    job._finish(error=RunnerClosedError(f"{job.task} was stopped: the runner was closed"))
                else:
                    err = WorkerCrashedError(job.task, exitcode)
                    log.error(
                        "%s (pid %d) died during call %d (%s): %s", self.label, pid, job.call_id, job.task, err.how
                    )
                    job._finish(error=err)
                return
            now = time.monotonic()
            if now > deadline:
                log.error(
                    "call %d (%s) ran past its budget of %.1f s on %s: the worker is killed",
                    job.call_id,
                    job.task,
                    job.budget_s,
                    self.label,
                )
                self._kill("timeout")
                self._reap()
                job._finish(error=TaskTimeoutError(job.task, job.budget_s, now - job.started_at))
                return
            send_cancel, grace_end = cancel_or_kill_due(job, policy, now, cancel_deadline)
            if send_cancel:
                cancel_deadline = grace_end
                with contextlib.suppress(OSError):
                    conn.send(CancelRequest(job.call_id))
            elif cancel_deadline is not None and now > cancel_deadline:
                self._kill("cancel")
                self._reap()
                job._finish(
                    error=TaskCancelledError(
                        f"{job.task} was cancelled; the worker did not stop within {policy.cancel_grace_s:.0f} s and was restarted"
                    )
                )
                return

    # -- messages --------------------------------------------------------------------
    def refresh(self) -> None:
        """Read what an idle worker sent since its last call (the notices of its preload),
        without blocking: skipped while a call runs (the slot's thread reads the pipe then)
        or while the slot is busy starting or stopping a worker."""
        if self.current is not None or not self._lock.acquire(blocking=False):
            return
        try:
            conn = self._conn
            while self.current is None and conn is not None and conn.poll(0):
                msg = conn.recv()
                if isinstance(msg, NoticesMsg):
                    self.note_notices(msg.notices)
                elif isinstance(msg, CallDone) and isinstance(msg.reply, OkResult):
                    shm.unlink(msg.reply.payload.segment)  # a stale reply: nobody waits for it
        except (EOFError, OSError):
            pass  # the worker died while idle: the next call notices and replaces it
        finally:
            self._lock.release()

    def _handle(self, job: Job, msg: Any) -> bool:
        """Apply one worker message to ``job``; True when the call is over."""
        if isinstance(msg, ProgressMsg):
            if msg.call_id == job.call_id:
                job._push(Progress(msg.stage, msg.fraction, msg.detail, job.elapsed_s))
            return False
        if isinstance(msg, NoticesMsg):
            self.note_notices(msg.notices)
            return False
        if not isinstance(msg, CallDone):
            return False
        self.state_report = msg.worker_state
        self.note_notices(msg.notices)
        reply = msg.reply
        if reply.call_id != job.call_id:
            log.warning("ignored a reply for call %d while call %d runs", reply.call_id, job.call_id)
            if isinstance(reply, OkResult):
                shm.unlink(reply.payload.segment)
            return False
        if isinstance(reply, OkResult):
            try:
                received = shm.Received(reply.payload, unlink_now=True)
            except OSError as exc:
                log.exception("call %d (%s): the result's shared memory could not be mapped", job.call_id, job.task)
                job._finish(error=WorkerCrashedError(job.task, None, f"its result could not be read: {exc}"))
                return True
            job._finish(received=received, seconds=reply.seconds)
            return True
        error = error_for_reply(job, reply, self.label)
        if reply.recycle:
            # The worker exits after this reply (its state may be damaged); retire it now
            # so the next call cannot be handed to a dying process.
            self._kill("recycle")
            self._reap()
        job._finish(error=error)
        return True

    def _drain_wake(self) -> None:
        with contextlib.suppress(OSError):  # empty (BlockingIOError) or closed
            while os.read(self._wake_r, 512):
                pass

    # -- worker lifetime -------------------------------------------------------------
    def _ensure_worker(self, start_timeout_s: float) -> tuple[Any, Connection]:
        from da3_core.runner.inside.loop import worker_main  # light: imports no torch

        with self._lock:
            if self._closed:
                raise RunnerClosedError("the runner is closed")
            if self._proc is not None and self._proc.is_alive() and self._conn is not None:
                return self._proc, self._conn
            self._reap()
            self._starting = True
            t0 = time.monotonic()
            try:
                parent_conn, child_conn = self._ctx.Pipe(duplex=True)
                proc = self._ctx.Process(
                    target=worker_main,
                    args=(child_conn, os.getpid(), self.preload, self.env, self.log_setup),
                    name=self.name,
                    daemon=True,  # multiprocessing ends it at a normal exit of the parent
                )
                with _spawn_without_main_module():
                    proc.start()
                child_conn.close()
                ready = wait([parent_conn, proc.sentinel], timeout=start_timeout_s)
                msg = parent_conn.recv() if parent_conn in ready else None
                if not isinstance(msg, WorkerReady):
                    proc.kill()
                    proc.join(2)
                    parent_conn.close()
                    shm.sweep(owner_pid=os.getpid(), maker_pid=proc.pid)
                    why = (
                        f"exit code {proc.exitcode}"
                        if proc.exitcode is not None
                        else f"no answer in {start_timeout_s:.0f} s"
                    )
                    log.error("%s did not start (%s)", self.label, why)
                    raise WorkerStartError(f"the worker process did not start ({why}); see the server log")
            except OSError as exc:
                log.error("%s could not be started: %s: %s", self.label, type(exc).__name__, exc)
                log.debug("start traceback", exc_info=True)
                raise WorkerStartError(f"the worker process could not be started: {exc}") from exc
            finally:
                self._starting = False
            self._proc, self._conn = proc, parent_conn
            self._kill_reason = None
            self.starts += 1
            self.new_worker()
            log.info(
                "%s started on %s (pid %d, %.1f s%s)",
                self.label,
                self.device,
                proc.pid,
                time.monotonic() - t0,
                f", start #{self.starts}" if self.starts > 1 else "",
            )
            return proc, parent_conn

    def _kill(self, reason: str) -> None:
        """SIGKILL the worker. ``reason``: timeout, cancel, restart, recycle or close."""
        with self._lock:
            proc = self._proc
            if proc is not None and proc.is_alive():
                self._kill_reason = reason
                current = self.current
                # A kill the caller asked for, or one whose reason another line already gave
                # (the budget, the recycle's error), is DEBUG; a cancel the task ignored, WARNING.
                log.log(
                    logging.WARNING if reason == "cancel" else logging.DEBUG,
                    "killing %s (pid %d, %s)%s",
                    self.label,
                    proc.pid,
                    reason,
                    f" during call {current.call_id} ({current.task})" if current is not None else "",
                )
                proc.kill()
                proc.join(5)
            if self.current is None:
                self._reap()  # with a call in flight the slot's thread sees the death and reaps

    def _let_exit(self, timeout_s: float = 3.0) -> None:
        # Closing our end of the pipe tells an idle worker to exit normally (its exit
        # handlers run); whatever is left after the timeout is killed by the caller.
        with self._lock:
            proc, conn = self._proc, self._conn
            if proc is None or conn is None:
                return
            with contextlib.suppress(OSError):
                conn.close()
            self._conn = None
            proc.join(timeout_s)

    def _reap(self) -> None:
        # Close our end, collect the process so no zombie or fd is left behind, and remove
        # any shared memory it made and never handed over.
        with self._lock:
            if self._conn is not None:
                with contextlib.suppress(OSError):
                    self._conn.close()
            proc = self._proc
            if proc is not None:
                if proc.is_alive():
                    proc.kill()
                proc.join(5)
                shm.sweep(owner_pid=os.getpid(), maker_pid=proc.pid)
                with contextlib.suppress(ValueError):
                    proc.close()
            self._proc, self._conn = None, None


def _alive(proc: Any) -> bool:
    """``proc.is_alive()``, False for None or a process another thread just closed."""
    try:
        return proc is not None and proc.is_alive()
    except ValueError:  # "process object is closed": reaped concurrently
        return False


_SPAWN_PATCH_LOCK = threading.Lock()


@contextlib.contextmanager
def _spawn_without_main_module() -> Iterator[None]:
    """Start spawn children without re-running the parent's ``__main__`` in them.

    The worker needs nothing from ``__main__`` (tasks are named by import path). Re-running
    it costs a Streamlit import in every worker and breaks scripts without a main guard.
    multiprocessing has no option for this, so its preparation data is trimmed while our
    worker starts (the lock keeps the swap to our own starts).
    """
    original = mp_spawn.get_preparation_data

    def preparation_data(name: str) -> dict[str, Any]:
        data = original(name)
        data.pop("init_main_from_path", None)
        data.pop("init_main_from_name", None)
        return data

    with _SPAWN_PATCH_LOCK:
        mp_spawn.get_preparation_data = preparation_data
        try:
            yield
        finally:
            mp_spawn.get_preparation_data = original
