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

Ray is imported lazily, only here; the server process still never imports torch.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import pickle
import queue
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from da3_core.runner import shm
from da3_core.runner.backends.base import CallPolicy, WorkerSlot, cancel_or_kill_due, error_for_reply, next_wake
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

# The folder that holds the da3_core package: on the actors' Python path, so they import the
# project (and the tasks named by import path) as the server does.
PROJECT_ROOT = str(Path(__file__).resolve().parents[3])
CONNECT_TIMEOUT_S = 30.0  # ray.init to a reachable address that never answers as Ray would hang for minutes
PORT_CHECK_TIMEOUT_S = 3.0
KILL_WAIT_S = 5.0  # how long `_kill` waits for a local actor process to be gone

_WAKE = ("wake",)
_RAY_HINT = "Ray is not installed: `pip install -r requirements-ray.txt` (or unset DA3_RAY_ADDRESS to run without Ray)"
_init_lock = threading.Lock()
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


# --------------------------------------------------------------------------------------
# Connecting
# --------------------------------------------------------------------------------------


def connect(address: str | None) -> bool:
    """Connect this process to Ray unless it already is; True if this call connected it.

    ``None`` starts a local instance; ``"auto"`` and ``"host:port"`` (or ``ray://host:port``)
    connect to a running cluster, failing within seconds, never hanging, when it cannot be
    reached. A cluster that requires a token (Ray's token authentication) gets this machine's
    token when it runs on this machine or was found with ``"auto"``, as ``ray.init()`` does;
    otherwise the error says how to pass it (see `_settle_token`).

    Raises:
        WorkerStartError: Ray is missing or the cluster cannot be reached; says what to check.
    """
    try:
        import ray
    except ImportError as exc:
        raise WorkerStartError(_RAY_HINT) from exc
    with _init_lock:
        if ray.is_initialized():
            return False
        t0 = time.monotonic()
        if address is None:
            # The local instance's processes inherit this environment: with the project on
            # PYTHONPATH, its actors start from Ray's pool of ready workers, without the
            # second or so that a per-actor runtime_env costs.
            with project_on_pythonpath():
                ray.init(include_dashboard=False)
            log.info(
                "started a local Ray instance in %.1f s (%g CPU, %g GPU)",
                time.monotonic() - t0,
                ray.cluster_resources().get("CPU", 0),
                ray.cluster_resources().get("GPU", 0),
            )
            return True
        target = _resolve_address(address)
        _check_reachable(address, target)
        deadline = time.monotonic() + CONNECT_TIMEOUT_S
        _settle_token(address, target, deadline)
        _init_bounded(address, target, deadline)
        log.info(
            "connected to the Ray cluster at %s in %.1f s (%g CPU, %g GPU)",
            target,
            time.monotonic() - t0,
            ray.cluster_resources().get("CPU", 0),
            ray.cluster_resources().get("GPU", 0),
        )
        return True


def _cannot_connect(address: str, why: str) -> WorkerStartError:
    return WorkerStartError(
        f"cannot connect to the Ray cluster at DA3_RAY_ADDRESS={address!r}: {why}. Check that the cluster runs "
        "(`ray status` on its head node; `RAY_AUTH_MODE=token ray status` where it uses a Ray token), that this "
        "machine reaches the head's GCS port (6379 unless `ray start --head --port` said otherwise), and that both "
        "run Ray 2.60; or unset DA3_RAY_ADDRESS to run without Ray"
    )


def _resolve_address(address: str) -> str:
    """``host:port`` that ``ray.init(address)`` would dial (``auto``: the local cluster's)."""
    text = address.strip()
    if text.startswith("ray://"):
        return text
    if text == "auto":
        try:
            from ray._private.services import canonicalize_bootstrap_address_or_die

            return canonicalize_bootstrap_address_or_die("auto")
        except ConnectionError as exc:
            raise _cannot_connect(address, f"no running Ray cluster found on this machine ({exc})") from None
        except Exception:  # noqa: BLE001 - a private helper: if it moved, let ray.init resolve "auto"
            return text
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise _cannot_connect(address, "expected 'auto' or host:port, e.g. 10.0.0.5:6379")
    try:
        from ray._private.services import canonicalize_bootstrap_address

        return canonicalize_bootstrap_address(text) or text  # localhost becomes the node's IP, as Ray dials it
    except Exception:  # noqa: BLE001 - a private helper: if it moved, dial the address as given
        return text


def _check_reachable(address: str, target: str) -> None:
    if target == "auto":
        return
    hostport = target[len("ray://") :] if target.startswith("ray://") else target
    host, _, port = hostport.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=PORT_CHECK_TIMEOUT_S):
            pass
    except (OSError, ValueError) as exc:
        raise _cannot_connect(address, f"nothing answers at {hostport} ({exc})") from None


def _init_bounded(address: str, target: str, deadline: float | None = None) -> None:
    """``ray.init(target)`` in a helper thread, given up at ``deadline`` (default: in
    `CONNECT_TIMEOUT_S`; Ray's own client retries for many minutes when the port answers but
    is not a Ray head)."""
    import ray

    if deadline is None:
        deadline = time.monotonic() + CONNECT_TIMEOUT_S

    outcome: dict[str, BaseException | None] = {}

    def init() -> None:
        try:
            ray.init(address=target, runtime_env={"env_vars": {"PYTHONPATH": _pythonpath()}})
            outcome["error"] = None
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            outcome["error"] = exc

    thread = threading.Thread(target=init, name="da3-ray-connect", daemon=True)
    thread.start()
    thread.join(max(0.0, deadline - time.monotonic()))
    if "error" not in outcome:
        raise _no_answer(address, target)
    if outcome["error"] is not None:
        exc = outcome["error"]
        if _is_auth_error(exc):
            raise _token_error(address, target, str(exc)) from exc
        raise _cannot_connect(
            address, f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
        ) from exc


def _no_answer(address: str, target: str) -> WorkerStartError:
    return _cannot_connect(
        address,
        f"{target} did not answer as a Ray cluster within {CONNECT_TIMEOUT_S:.0f} s (restart the server after fixing it)",
    )


# --------------------------------------------------------------------------------------
# Token authentication
# --------------------------------------------------------------------------------------
# Ray 2.60 turns token authentication on for a cluster that `ray start --head` starts where a
# token exists (``~/.ray/auth_token``, ``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH``). A client
# then needs ``RAY_AUTH_MODE=token`` and the same token: `ray.init("auto")` turns the mode on
# by itself when a token exists, `ray.init("host:port")` never does (so that a token is not
# sent to any address unasked), and without it the connection fails after about 20 s with
# "Failed to connect to Ray cluster", which does not mention the token.

AUTH_MODE_VAR = "RAY_AUTH_MODE"


def _settle_token(address: str, target: str, deadline: float) -> None:
    """Before `ray.init`: ask the cluster's GCS whether it accepts this process without a
    token (an answer in milliseconds, where `ray.init` takes 20 s to fail). If it wants one,
    send this machine's token when the cluster runs on this machine or was found with
    ``auto`` and ``RAY_AUTH_MODE`` is unset (what `ray.init("auto")` does); otherwise raise an
    error that says how to pass the token.

    Raises:
        WorkerStartError: The cluster refuses this process (says why and what to set), or
            does not answer as a Ray cluster before ``deadline``.
    """
    if target.startswith("ray://"):
        return  # Ray Client: its server checks the token; ray.init reports a refusal
    refusal = _refusal(address, target, deadline)
    if refusal is None:
        return
    token = _token_source()
    if (
        os.environ.get(AUTH_MODE_VAR) is None
        and token is not None
        and (address.strip() == "auto" or _on_this_machine(target))
    ):
        _enable_token_mode()
        log.info(
            "the Ray cluster at %s requires a token: sending this machine's (%s), as `ray.init()` does for a cluster "
            "on this machine; %s=token is set in this process",
            target,
            token,
            AUTH_MODE_VAR,
        )
        refusal = _refusal(address, target, deadline)
        if refusal is None:
            return
    raise _token_error(address, target, refusal)


def _refusal(address: str, target: str, deadline: float) -> str | None:
    """Ray's message when the GCS at ``target`` refuses this process's credentials; None when
    it accepts them, or when the question cannot be asked (`ray.init` then reports)."""
    try:
        from ray._raylet import GcsClient  # type: ignore[attr-defined]  # private, not in Ray's stubs (hence the try)
    except Exception:  # noqa: BLE001 - a private class: if it moved, let ray.init find out
        return None
    outcome: dict[str, BaseException | None] = {}

    def probe() -> None:
        try:
            GcsClient(address=target)
            outcome["error"] = None
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            outcome["error"] = exc

    thread = threading.Thread(target=probe, name="da3-ray-probe", daemon=True)
    thread.start()
    thread.join(max(0.0, deadline - time.monotonic()))
    if "error" not in outcome:
        raise _no_answer(address, target)  # a Ray GCS answers in milliseconds
    exc = outcome["error"]
    if exc is None or not _is_auth_error(exc):
        if exc is not None:
            log.debug("Ray GCS probe of %s: %r (ray.init decides)", target, exc)
        return None
    return str(exc).strip() or type(exc).__name__


def _is_auth_error(exc: BaseException) -> bool:
    text = f"{type(exc).__name__} {exc}"
    return "AuthenticationError" in text or "InvalidAuthToken" in text or "Unauthenticated" in text


def _token_source() -> str | None:
    """Where Ray would read a token in this process (as its loader looks), or None."""
    if os.environ.get("RAY_AUTH_TOKEN", "").strip():
        return "RAY_AUTH_TOKEN"
    path = os.environ.get("RAY_AUTH_TOKEN_PATH", "").strip()
    if path:
        return f"RAY_AUTH_TOKEN_PATH={path}" if Path(path).expanduser().is_file() else None
    default = Path.home() / ".ray" / "auth_token"
    return str(default) if default.is_file() else None


def _on_this_machine(target: str) -> bool:
    """``host:port`` names an address of this machine (loopback or one of its interfaces)."""
    import ipaddress

    import psutil

    host = target.rpartition(":")[0].strip("[]")
    try:
        addresses = {str(info[4][0]) for info in socket.getaddrinfo(host, None)}
    except OSError:
        return False
    mine = {a.address.split("%")[0] for nics in psutil.net_if_addrs().values() for a in nics}
    for text in addresses:
        try:
            if ipaddress.ip_address(text.split("%")[0]).is_loopback or text in mine:
                return True
        except ValueError:
            continue
    return False


def _enable_token_mode() -> None:
    """``RAY_AUTH_MODE=token`` for this process (and what it starts), as Ray sets it itself."""
    try:
        from ray._private.authentication.authentication_token_setup import _enable_token_auth

        _enable_token_auth()  # sets the variable and refreshes Ray's cached config
    except Exception:  # noqa: BLE001 - a private helper: set the variable and refresh by hand
        os.environ[AUTH_MODE_VAR] = "token"
        with contextlib.suppress(Exception):
            from ray._raylet import Config  # type: ignore[attr-defined]  # private, not in Ray's stubs (hence the suppress)

            Config.initialize("")


def _token_error(address: str, target: str, refusal: str) -> WorkerStartError:
    """The error for a cluster that refused this process's token (or its lack of one)."""
    mode = os.environ.get(AUTH_MODE_VAR)
    token = _token_source()
    where = "~/.ray/auth_token, RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH"
    copy = (
        "put the cluster's token (`ray get-auth-token` on its head prints it) in ~/.ray/auth_token here, or pass "
        "it as RAY_AUTH_TOKEN=<token> or RAY_AUTH_TOKEN_PATH=<file>"
    )
    run = f"e.g. `RAY_AUTH_MODE=token DA3_RAY_ADDRESS={address.strip()} make run`"
    if mode is not None and mode.lower() != "token":
        why = f"this process has {AUTH_MODE_VAR}={mode}, which sends no token"
        how = f"set {AUTH_MODE_VAR}=token with the cluster's token in {where} (or unset it: a cluster on this machine then gets this machine's token)"
    elif mode is None and token is None:
        why = "no Ray token is found here"
        how = f"{copy}, and set {AUTH_MODE_VAR}=token"
    elif mode is None:
        why = (
            f"{AUTH_MODE_VAR} is not set, and the token found here ({token}) is sent unasked only to a cluster on this "
            "machine or found with DA3_RAY_ADDRESS=auto"
        )
        how = f"if it is this cluster's token, set {AUTH_MODE_VAR}=token; else {copy} and set {AUTH_MODE_VAR}=token"
    elif token is None:
        why = f"{AUTH_MODE_VAR}=token is set but no token is found here ({where})"
        how = copy
    else:
        why = f"it refused the token found here ({token}): it is not this cluster's"
        how = copy.replace("put", "use", 1) + " instead"
    first = refusal.strip().splitlines()[0] if refusal.strip() else ""
    return WorkerStartError(
        f"cannot connect to the Ray cluster at DA3_RAY_ADDRESS={address!r} ({target}): the cluster requires a Ray token "
        f"(token authentication, which `ray start --head` turns on where a token exists) and {why}. To connect: {how}; "
        f"{run}. Ray said: {first[:200]}"
    )


def _pythonpath() -> str:
    existing = os.environ.get("PYTHONPATH", "")
    parts = [PROJECT_ROOT] + [p for p in existing.split(os.pathsep) if p and p != PROJECT_ROOT]
    return os.pathsep.join(parts)


@contextlib.contextmanager
def project_on_pythonpath() -> Iterator[None]:
    """Put the project on ``PYTHONPATH`` while Ray processes are started from here (a local
    instance, `ray.cluster_utils.Cluster` nodes): their workers then import it as we do."""
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = _pythonpath()
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old


_runtime_env_cache: dict[str, dict[str, Any] | None] = {}


def _actor_runtime_env() -> dict[str, Any] | None:
    """None when Ray's workers already import this project from here, else a runtime_env
    that puts it on their path (costs about a second per actor start). Probed once per job."""
    import importlib.util

    import ray

    context = ray.get_runtime_context()
    key = f"{context.gcs_address}/{context.get_job_id()}"
    if key in _runtime_env_cache:
        return _runtime_env_cache[key]
    job_env = context.runtime_env or {}
    needed: dict[str, Any] | None = {"env_vars": {"PYTHONPATH": _pythonpath()}}
    if PROJECT_ROOT in str((job_env.get("env_vars") or {}).get("PYTHONPATH", "")).split(os.pathsep):
        needed = None
    else:
        ours = str(Path(PROJECT_ROOT) / "da3_core" / "__init__.py")
        try:
            probe = ray.remote(num_cpus=0, max_retries=0)(importlib.util.find_spec)
            spec = ray.get(probe.remote("da3_core"), timeout=10)
            if spec is not None and spec.origin == ours:
                needed = None
        except Exception as exc:  # noqa: BLE001 - any doubt: give the actors the path explicitly
            log.debug("Ray probe for da3_core failed (%r); actors get PYTHONPATH in their runtime_env", exc)
    _runtime_env_cache[key] = needed
    return needed


def _remote_actor_class() -> Any:
    global _actor_class
    if _actor_class is None:
        import ray

        from da3_core.runner.inside.actor import CallActor  # light: imports no torch

        # "control" runs `cancel`, `hello` and `state` beside a busy `run`.
        _actor_class = ray.remote(concurrency_groups={"control": 2})(CallActor)  # type: ignore[call-overload]  # a documented option that Ray's overloads lack
    return _actor_class


# --------------------------------------------------------------------------------------
# The slot
# --------------------------------------------------------------------------------------


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
