"""Ray actors as slots (``DA3_RAY_ADDRESS``): the same runner, decorator and contract on Ray 2.60.

One `RaySlot` per actor (`da3_core.runner.inside.actor.CallActor`), one actor per GPU of the
cluster (``num_gpus=1``, so Ray sets its ``CUDA_VISIBLE_DEVICES``), or CPU actors on a
cluster without GPUs. The dispatcher's FIFO, positions, budgets, cancel and abandonment are
the same as for worker processes; only the transport differs:

* arguments travel in the call (the runner packs them in band for Ray); the result comes back
  as the CPU-only pickle's header plus its large buffers as uint8 arrays, which Ray moves
  without a pickle copy: the caller's arrays are read-only views of Ray's object store;
* the call is a streamed generator: progress arrives as the task reports it. A reader thread
  per call blocks on the stream and hands each item to the slot's thread through a queue that
  `wake` also writes to, so the slot waits on one queue until the next deadline: no polling;
* a cancel is a call to the actor's ``cancel`` (its own concurrency group, so it runs beside
  the busy ``run``); a task that misses its checkpoints past the grace period, an overrun, a
  `restart` and `close` end the actor with ``ray.kill``; the next call starts a fresh one;
* actors are created with ``max_restarts=0``: Ray then reports a dead actor to the caller in
  a few milliseconds (with restarts it takes one to two seconds).

Connecting (a local cluster or ``DA3_RAY_ADDRESS``, the token) is `ray_connect`. Ray is imported
lazily, only in these two modules; the server process still never imports torch.
"""

from __future__ import annotations

import logging
import math
import pickle
import queue
import threading
import time
from typing import Any

import numpy as np

from da3_core.runner import shm
from da3_core.runner.backends.base import CallPolicy, WorkerSlot, cancel_or_kill_due, error_for_reply, next_wake
from da3_core.runner.backends.ray_connect import _RAY_HINT, _actor_runtime_env, connect, project_on_pythonpath
from da3_core.runner.devices import worker_count
from da3_core.runner.jobs import Job, Progress, Started
from da3_core.runner.logsetup import LogSetup
from da3_core.runner.protocol import (
    CallRequest,
    ExceptionResult,
    GPUError,
    Packed,
    RunnerClosedError,
    TaskCancelledError,
    TaskTimeoutError,
    WorkerCrashedError,
    WorkerStartError,
)

log = logging.getLogger(__name__)


KILL_WAIT_S = 5.0  # how long `_kill` waits for a local actor process to be gone


_WAKE = ("wake",)


_actor_class: Any = None


def make_ray_slots(
    workers: int | str,
    *,
    preload: tuple[str, ...] = (),
    address: str | None = None,
    name: str = "da3-worker",
    log_setup: LogSetup | None = None,
) -> list[RaySlot]:
    """The slots of a Ray runner; connects to Ray first if this process is not connected yet.

    Args:
        workers: ``"auto"`` (one actor per GPU of the cluster; one CPU actor on a cluster
            without GPUs) or a count (GPU actors when the cluster has GPUs, else CPU actors).
        preload: Modules each actor imports in the background right after it starts.
        address: ``None`` (start a local Ray instance), ``"auto"`` (the cluster this machine
            belongs to) or ``"host:port"`` of a cluster's head (its GCS port, 6379 by default).
        name: Prefix of the runner's thread names.
        log_setup: How the actors log (default: as this process's package logger does).

    Raises:
        WorkerStartError: Ray is not installed, or the cluster cannot be reached.
        ValueError: ``workers`` is neither ``auto`` nor a positive whole number.
    """
    try:
        import ray
    except ImportError as exc:
        raise WorkerStartError(_RAY_HINT) from exc
    count_setting = worker_count(workers)
    connect(address)
    runtime_env = _actor_runtime_env()
    gpus = int(ray.cluster_resources().get("GPU", 0))
    count = count_setting if count_setting is not None else max(1, gpus)
    # More actors than GPUs share them, as worker processes do: each asks for a fraction.
    gpu_share = 1.0 / math.ceil(count / gpus) if gpus else 0.0
    log_setup = log_setup or LogSetup.of_caller()
    slots = [
        RaySlot(
            i,
            f"actor {i + 1}",
            use_gpu=bool(gpus),
            gpu_share=gpu_share or 1.0,
            preload=preload,
            name=name,
            runtime_env=runtime_env,
            log_setup=log_setup,
        )
        for i in range(count)
    ]
    log.info(
        "Ray runner: %d %s actor(s)%s on a cluster with %d GPU(s), %g CPU(s)",
        count,
        "GPU" if gpus else "CPU",
        f" ({gpu_share:g} GPU each)" if gpus and gpu_share < 1 else "",
        gpus,
        ray.cluster_resources().get("CPU", 0),
    )
    return slots


def _remote_actor_class() -> Any:
    global _actor_class
    if _actor_class is None:
        import ray

        from da3_core.runner.inside.actor import CallActor  # light: imports no torch

        # "control" runs `cancel`, `hello` and `state` beside a busy `run`.
        _actor_class = ray.remote(concurrency_groups={"control": 2})(CallActor)  # type: ignore[call-overload]  # a documented option that Ray's overloads lack
    return _actor_class


class _RayReceived:
    """A result from an actor, shaped like `shm.Received`: its arrays view Ray's object store."""

    def __init__(self, header: bytes, arrays: list[Any]) -> None:
        self._header = header
        self._arrays = arrays

    def load(self) -> Any:
        return pickle.loads(self._header, buffers=self._arrays)

    def release(self) -> None:
        self._header, self._arrays = b"", []


class RaySlot(WorkerSlot):
    """One Ray actor.

    Args:
        index: The slot's number in the pool.
        label: Name shown on the Runner page and in logs (``"actor 1"``).
        use_gpu: Ask Ray for a GPU (``num_gpus=gpu_share``, so Ray sets the actor's
            ``CUDA_VISIBLE_DEVICES``); else for one CPU.
        gpu_share: The fraction of a GPU asked for (1: a GPU of its own).
        preload: Modules the actor imports right after it starts.
        name: Prefix of thread names.
        runtime_env: The actors' Ray runtime_env (None: the job's).
        log_setup: How the actor logs (default: as this process's package logger does).
    """

    def __init__(
        self,
        index: int,
        label: str,
        *,
        use_gpu: bool,
        gpu_share: float = 1.0,
        preload: tuple[str, ...] = (),
        name: str = "da3-worker",
        runtime_env: dict[str, Any] | None = None,
        log_setup: LogSetup | None = None,
    ) -> None:
        self.kind = "GPU" if use_gpu else "CPU"
        super().__init__(index, label, f"Ray {self.kind}")
        self.use_gpu = use_gpu
        self.gpu_share = gpu_share
        self.preload = tuple(preload)
        self.name = name
        self.runtime_env = runtime_env
        self.log_setup = log_setup or LogSetup.of_caller()
        self.node_ip: str | None = None
        self._lock = threading.RLock()  # guards _actor/_pid/_kill_reason
        self._actor: Any = None
        self._pid: int | None = None
        self._kill_reason: str | None = None
        self._inbox: queue.SimpleQueue[Any] | None = None  # the running call's, for `wake`

    # -- Slot ------------------------------------------------------------------------
    def pid(self) -> int | None:
        return self._pid if self._actor is not None and not self._starting else None

    def rss_mb(self) -> float | None:
        # A pid on another node names some other process here: only local actors are measured.
        if self.node_ip is None or self.node_ip != _local_ip():
            return None
        return super().rss_mb()

    def wake(self) -> None:
        inbox = self._inbox
        if inbox is not None:
            inbox.put(_WAKE)

    def run(self, job: Job, policy: CallPolicy) -> None:
        actor = self._ensure_actor(policy.start_timeout_s)
        job.started_at = time.monotonic()
        job.worker = self.label
        log.debug(
            "call %d (%s) started on %s (pid %s) after %.3f s queued",
            job.call_id,
            job.task,
            self.label,
            self._pid,
            job.started_at - job.submitted_at,
        )
        job._push(Started(self._pid, job.started_at - job.submitted_at, self.label))
        inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._inbox = inbox
        try:
            self._run(job, policy, actor, inbox)
        finally:
            self._inbox = None

    def _run(self, job: Job, policy: CallPolicy, actor: Any, inbox: queue.SimpleQueue[Any]) -> None:
        try:
            request, data = _split_payload(CallRequest(job.call_id, job.task, job.payload))
            stream = actor.run.remote(request, data)
        except Exception as exc:  # noqa: BLE001 - e.g. Ray shut down under us: the actor is gone
            inbox.put(("error", exc))
        else:
            threading.Thread(
                target=_read_stream, args=(stream, inbox), name=f"{self.name}-{self.index + 1}-ray-reader", daemon=True
            ).start()
        started_at = job.started_at
        assert started_at is not None  # `run` set it before calling here
        deadline = started_at + job.budget_s
        cancel_deadline: float | None = None
        while True:
            now = time.monotonic()
            try:
                msg = inbox.get(timeout=next_wake(job, policy, deadline, cancel_deadline, now))
            except queue.Empty:
                msg = None
            if msg is not None and msg is not _WAKE:
                if msg[0] == "item":
                    if self._handle(job, msg[1]):
                        return
                    # No `continue`: progress faster than we read it must not starve the
                    # deadline and cancel checks below.
                else:
                    self._lost(job, actor, msg[1] if msg[0] == "error" else None)
                    return
            now = time.monotonic()
            if now > deadline:
                log.error(
                    "call %d (%s) ran past its budget of %.1f s on %s: the actor is killed",
                    job.call_id,
                    job.task,
                    job.budget_s,
                    self.label,
                )
                self._kill("timeout", actor)
                job._finish(error=TaskTimeoutError(job.task, job.budget_s, now - started_at))
                return
            send_cancel, grace_end = cancel_or_kill_due(job, policy, now, cancel_deadline)
            if send_cancel:
                cancel_deadline = grace_end
                try:
                    actor.cancel.options(concurrency_group="control").remote(job.call_id)
                except Exception:  # noqa: BLE001 - a dead actor: its stream reports it
                    log.debug("the cancel of call %d could not be sent", job.call_id, exc_info=True)
            elif cancel_deadline is not None and now > cancel_deadline:
                self._kill("cancel", actor)
                job._finish(
                    error=TaskCancelledError(
                        f"{job.task} was cancelled; the worker did not stop within {policy.cancel_grace_s:.0f} s and was restarted"
                    )
                )
                return

    # -- items from the actor --------------------------------------------------------
    def _handle(self, job: Job, item: Any) -> bool:
        """Apply one streamed item to ``job``; True when the call is over."""
        kind = item[0]
        if kind == "progress":
            for msg in item[1]:
                if msg.call_id == job.call_id:
                    job._push(Progress(msg.stage, msg.fraction, msg.detail, job.elapsed_s))
            return False
        if kind != "done":
            log.warning("ignored an unknown item %r from %s", kind, self.label)
            return False
        _, outcome, state, *rest = item
        self.state_report = state
        self.note_notices(rest[0] if rest else None)
        if isinstance(outcome, ExceptionResult):
            error = error_for_reply(job, outcome, self.label)
            if outcome.recycle:
                # Memory or interpreter state may be damaged: the next call gets a fresh actor.
                self._kill("recycle")
            job._finish(error=error)
            return True
        header, arrays, seconds = outcome
        job._finish(received=_RayReceived(header, arrays), seconds=seconds)
        return True

    def _lost(self, job: Job, actor: Any, exc: BaseException | None) -> None:
        """The call's stream ended without an outcome: the actor died or was killed."""
        with self._lock:
            reason = self._kill_reason if self._actor is None or self._actor is actor else None
            if self._actor is actor:
                self._actor, self._pid = None, None
        if reason == "restart":
            job._finish(error=TaskCancelledError(f"{job.task} was stopped: the worker was restarted"))
            return
        if reason == "close":
            job._finish(error=RunnerClosedError(f"{job.task} was stopped: the runner was closed"))
            return
        import ray

        if isinstance(exc, ray.exceptions.TaskCancelledError):  # someone ray.cancel()ed the call
            self._kill("cancel", actor)
            job._finish(error=TaskCancelledError(f"{job.task} was cancelled through Ray"))
            return
        how = _death_how(exc)
        err = WorkerCrashedError(job.task, None, how)
        log.error("%s died during call %d (%s): %s", self.label, job.call_id, job.task, how)
        self._kill("crash", actor)  # whatever is left of it: the next call starts a fresh actor
        job._finish(error=err)

    # -- actor lifetime --------------------------------------------------------------
    def _ensure_actor(self, start_timeout_s: float) -> Any:
        import ray

        with self._lock:
            if self._closed:
                raise RunnerClosedError("the runner is closed")
            if self._actor is not None:
                return self._actor
            self._starting = True
            self._kill_reason = None
            options: dict[str, Any] = {"max_restarts": 0, "max_task_retries": 0, "max_concurrency": 1}
            if self.use_gpu:
                options.update(num_gpus=self.gpu_share, num_cpus=0)
            else:
                options.update(num_cpus=1)
            if self.runtime_env is not None:
                options["runtime_env"] = self.runtime_env
            t0 = time.monotonic()
            try:
                actor = _remote_actor_class().options(**options).remote(self.preload, self.label, self.log_setup)
            except Exception as exc:  # noqa: BLE001 - e.g. Ray shut down
                self._starting = False
                raise WorkerStartError(f"the Ray actor could not be created: {exc}") from exc
            self._actor = actor  # so that restart() and close() reach a starting actor too
        try:
            hello = actor.hello.options(concurrency_group="control").remote()
            ready, _ = ray.wait([hello], timeout=start_timeout_s)
            if not ready:
                resources = {k: v for k, v in ray.available_resources().items() if k in ("CPU", "GPU")}
                raise WorkerStartError(
                    f"the Ray actor did not start within {start_timeout_s:.0f} s: the cluster may have no free "
                    f"{self.kind} (free now: {resources}); see `ray status`"
                )
            info = ray.get(hello)
        except BaseException as exc:
            with self._lock:
                reason = self._kill_reason
                self._starting = False
            self._kill("start", actor)
            if reason == "close" or self._closed:
                raise RunnerClosedError("the runner is closed") from None
            if isinstance(exc, WorkerStartError):
                log.error("%s did not start: %s", self.label, exc)
                raise
            if not isinstance(exc, Exception):
                raise
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            log.error("%s could not be started: %s", self.label, exc)
            raise WorkerStartError(
                f"the Ray actor did not start ({type(exc).__name__}: {first}); every Ray node must be able to import "
                f"this project (its folder on the same path, or installed); see the server log"
            ) from exc
        with self._lock:
            self._starting = False
            if self._actor is not actor:  # killed (restart) while starting
                raise WorkerStartError("the Ray actor was stopped while it started")
            self._pid, self.node_ip = int(info["pid"]), str(info["node_ip"])
            self.state_report = dict(info.get("state") or {})
            self.device = f"Ray {self.kind} · {self.node_ip}"
            self.starts += 1
            self.new_worker()
            self.note_notices(info.get("notices"))
        log.info(
            "%s started on %s (pid %d, %.1f s%s)",
            self.label,
            self.device,
            self._pid,
            time.monotonic() - t0,
            f", start #{self.starts}" if self.starts > 1 else "",
        )
        return actor

    def _let_exit(self, timeout_s: float = 3.0) -> None:
        # An idle local actor is asked to exit (Ray's graceful termination: its exit handlers
        # run, as an idle worker process's do when its pipe closes); `_kill` ends what is left.
        with self._lock:
            actor, pid, node = self._actor, self._pid, self.node_ip
        if actor is None or pid is None or node != _local_ip():
            return
        try:
            import ray

            if not ray.is_initialized():
                return
            actor.__ray_terminate__.remote()
        except Exception:  # noqa: BLE001 - gone already, or Ray shut down
            return
        _wait_gone(pid, timeout_s)

    def _kill(self, reason: str, actor: Any = None) -> None:
        """End the actor (``actor``, or the current one). ``reason``: timeout, cancel, restart,
        recycle, close, crash or start."""
        with self._lock:
            current = self._actor
            target = actor if actor is not None else current
            if target is None:
                return
            if target is current:
                self._kill_reason = reason
                pid, node = self._pid, self.node_ip
                self._actor, self._pid = None, None
            else:
                pid, node = None, None
        call = self.current
        if reason not in ("crash", "start"):
            # As for a process worker: only a cancel the task ignored gets a line of its own.
            log.log(
                logging.WARNING if reason == "cancel" else logging.DEBUG,
                "killing %s (pid %s, %s)%s",
                self.label,
                pid,
                reason,
                f" during call {call.call_id} ({call.task})" if call is not None else "",
            )
        try:
            import ray

            if ray.is_initialized():
                ray.kill(target, no_restart=True)
        except Exception:  # noqa: BLE001 - already dead, or Ray shut down (at exit)
            log.debug("ray.kill of %s failed", self.label, exc_info=True)
            return
        if pid is not None and node == _local_ip():
            _wait_gone(pid, KILL_WAIT_S)


def _split_payload(request: CallRequest) -> tuple[CallRequest, Any]:
    """The request without its arguments' pickle, and that pickle as a uint8 array: Ray writes
    an array once into its object store and the actor reads it in place, where bytes inside the
    request would be copied into Ray's pickle stream first and out of it again in the actor."""
    data = request.payload.data
    if len(data) < shm.OUT_OF_BAND_MIN_BYTES or request.payload.segment is not None:
        return request, None
    return CallRequest(request.call_id, request.task, Packed(b"")), np.frombuffer(data, dtype=np.uint8)


def _read_stream(stream: Any, inbox: queue.SimpleQueue[Any]) -> None:
    """Hand every item of a call's stream to the slot's thread; then how it ended."""
    import ray

    try:
        for ref in stream:
            inbox.put(("item", ray.get(ref)))
    except BaseException as exc:  # noqa: BLE001 - the slot's thread decides what it means
        inbox.put(("error", exc))
    else:
        inbox.put(("end", None))


def _death_how(exc: BaseException | None) -> str:
    """A short cause for `WorkerCrashedError`, from Ray's error."""
    if exc is None:
        return "the Ray actor ended the call without a reply"
    text = str(exc)
    marker = "Worker exit detail:"
    if marker in text:
        detail = text.split(marker, 1)[1].strip()
        detail = detail.split(". ", 1)[0].rstrip(".")
        return f"the Ray actor's process died: {detail}"
    if isinstance(exc, GPUError):
        return str(exc)
    first = (text.strip().splitlines() or [""])[0]
    return f"the Ray actor failed: {type(exc).__name__}: {first}"[:300]


_LOCAL_IP: str | None = None


def _local_ip() -> str | None:
    global _LOCAL_IP
    if _LOCAL_IP is None:
        try:
            import ray

            _LOCAL_IP = ray.util.get_node_ip_address()
        except Exception:  # noqa: BLE001 - unknown: no actor is measured as local
            return None
    return _LOCAL_IP


def _wait_gone(pid: int, timeout_s: float) -> None:
    """Wait until the process ``pid`` (a child of Ray's raylet, not ours) has ended, so its
    memory and GPU are free: gone, or a zombie that the raylet has yet to reap."""
    import psutil

    deadline = time.monotonic() + timeout_s
    delay = 0.002
    while True:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return
        except psutil.NoSuchProcess:
            return
        except psutil.Error:  # e.g. access denied: nothing to wait on
            return
        if time.monotonic() > deadline:
            log.warning("the Ray actor process %d is still alive %.0f s after it was killed", pid, timeout_s)
            return
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


__all__ = ["RaySlot", "connect", "make_ray_slots", "project_on_pythonpath"]
