"""Running one call inside a worker or an actor: decode, run, convert, encode, in one place.

Shared by the process worker (`loop`) and the Ray actor (`actor`), so both refuse the same
results and report errors the same way. Torch-free.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

from da3_core.runner import context, shm
from da3_core.runner.context import CancelFlag
from da3_core.runner.inside.tocpu import CPUOnlyPickler, NotCPUDataError, to_cpu
from da3_core.runner.protocol import CallRequest, ExceptionResult, OkResult, Packed, ProgressMsg
from da3_core.runner.taskpath import resolve_task_path

log = logging.getLogger(__name__)

# Functions that describe worker state (e.g. which models are cached); their dicts are merged
# into `worker_state()` and sent to the parent after every call. Registered by task modules.
STATE_PROVIDERS: list[Callable[[], dict[str, Any]]] = []


def worker_state() -> dict[str, Any]:
    """A snapshot of the worker for the Runner page (pid, memory, cached models, device)."""
    state: dict[str, Any] = {"pid": os.getpid(), "torch_imported": "torch" in sys.modules}
    try:
        import resource

        # ru_maxrss is in KiB on Linux.
        state["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    except Exception:  # noqa: BLE001 - not on every platform
        pass
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        state["cuda_visible_devices"] = visible
    for provider in STATE_PROVIDERS:
        try:
            state.update(provider())
        except Exception as exc:  # noqa: BLE001 - state is informative; never fail a call over it
            state.setdefault("state_errors", []).append(repr(exc))
    # Through JSON and back: only plain data may ride along (a torch.__version__ would not).
    return json.loads(json.dumps(state, default=str))


def resolve_task(path: str) -> Callable[..., Any]:
    """Import ``"package.module:qualname"`` and return the plain function behind it.

    A `da3_core.runner.decorator.GPUFunction` is unwrapped (``__gpu_wrapped__``) so the
    worker runs the function itself instead of dispatching again.
    """
    obj = resolve_task_path(path)
    return getattr(obj, "__gpu_wrapped__", obj)


def run_value(
    request: CallRequest, cancelled: CancelFlag, send: Callable[[Any], None], keep: list[Any] | None = None
) -> tuple[Any, float] | ExceptionResult:
    """Run one task and return ``(cpu_value, seconds)``, or the `ExceptionResult`. Never raises.

    The value has been through `to_cpu` (tensors become numpy; unreadable ones are refused
    with their path); the caller still has to pickle it with `CPUOnlyPickler`.

    The arguments' segment name is unlinked as soon as it is mapped (its pages live while
    mapped). With ``keep``, the arguments are appended there instead of dropped, so the
    caller can free their pages after the reply is sent, not before.
    """
    started = time.perf_counter()
    log.debug("call %d (%s) starting", request.call_id, request.task)

    def send_progress(stage: str, fraction: float | None, detail: str) -> None:
        send(ProgressMsg(request.call_id, stage, fraction, detail))

    context.set_context(context.CallContext(request.call_id, send_progress, cancelled))
    try:
        func = resolve_task(request.task)
        args, kwargs = shm.unpack(request.payload, unlink_now=True)
        if keep is not None:
            keep.append((args, kwargs))
        value = func(*args, **kwargs)
        del args, kwargs
        try:
            return to_cpu(value), time.perf_counter() - started
        except NotCPUDataError as exc:
            return exception_reply(request.call_id, exc, type_name="ResultNotCPUError")
    except BaseException as exc:  # noqa: BLE001 - everything, incl. SystemExit, reaches the caller
        return exception_reply(
            request.call_id, exc, recycle=isinstance(exc, (MemoryError, SystemExit, KeyboardInterrupt))
        )
    finally:
        context.set_context(None)


def run_call(
    request: CallRequest,
    cancelled: CancelFlag,
    send: Callable[[Any], None],
    *,
    owner_pid: int | None = None,
    shared: bool = True,
    keep: list[Any] | None = None,
) -> OkResult | ExceptionResult:
    """Run one task and build the reply (its value packed for the parent). Never raises.

    Args:
        request: The call to run.
        cancelled: Set when the caller cancels (the reader thread, or `Job.cancel` in process).
        send: Sends a message to the parent (used for progress).
        owner_pid: The parent that will unlink the result's shared-memory segment.
        shared: Put large buffers in shared memory (False: all in the pickle stream).
        keep: Receives the arguments, to be dropped after the reply is sent (see `run_value`).
    """
    outcome = run_value(request, cancelled, send, keep)
    if isinstance(outcome, ExceptionResult):
        return outcome
    value, seconds = outcome
    try:
        payload = shm.pack(value, owner_pid=owner_pid, pickler=CPUOnlyPickler, shared=shared)
    except NotCPUDataError as exc:
        return exception_reply(request.call_id, exc, type_name="ResultNotCPUError")
    except OSError as exc:  # e.g. /dev/shm full: the task's result cannot travel
        return exception_reply(request.call_id, exc)
    except Exception as exc:  # noqa: BLE001 - an unpicklable result is the task's fault, reported as such
        return exception_reply(request.call_id, exc, type_name="ResultNotCPUError")
    return OkResult(request.call_id, payload, seconds)


def exception_reply(
    call_id: int, exc: BaseException, *, type_name: str | None = None, recycle: bool = False
) -> ExceptionResult:
    """The `ExceptionResult` for ``exc``: class name, module, message and traceback kept."""
    return ExceptionResult(
        call_id=call_id,
        type_name=type_name or type(exc).__name__,
        module=type(exc).__module__,
        message=str(exc),
        traceback="".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
        recycle=recycle,
    )


def release(payload: Packed) -> None:
    """Remove a packed result's segment that will never reach the parent."""
    shm.unlink(payload.segment)


__all__ = ["STATE_PROVIDERS", "exception_reply", "release", "resolve_task", "run_call", "run_value", "worker_state"]
