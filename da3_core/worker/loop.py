"""The worker process's main loop. Started by `da3_core.gpu.Runner` with the spawn context.

This module imports no torch: a task imports what it needs when it first runs, so a
worker that only runs small tasks stays small, and the parent can name this module as the
process target without importing anything heavy.

Threads in the worker:
* main: runs one task at a time, sends progress and the result;
* reader: receives requests and cancels; on EOF (the parent died or closed the pipe) it
  ends the process at once;
* watchdog: ends the process if the parent pid changes (the parent died while something
  else still holds the pipe open).
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import pickle
import queue
import sys
import threading
import time
import traceback
from multiprocessing.connection import Connection
from typing import Any, Callable

from da3_core.contract import CallDone, CallRequest, CancelRequest, ExceptionResult, OkResult, ProgressMsg, WorkerReady
from da3_core.taskpath import resolve_task_path
from da3_core.worker import context
from da3_core.worker.tocpu import NotCPUDataError, dumps_cpu_only, to_cpu

# No handlers are configured here (`da3_core.logs` does that where it is set up); without
# them, warnings and errors still reach stderr, which the worker shares with the server.
log = logging.getLogger(__name__)

# Functions that describe worker state (e.g. which models are cached); their dicts are merged
# into `worker_state()` and sent to the parent after every call. Registered by task modules.
STATE_PROVIDERS: list[Callable[[], dict[str, Any]]] = []

_send_lock = threading.Lock()


def worker_state() -> dict[str, Any]:
    """A snapshot of the worker for the Runner page (pid, memory, cached models, device)."""
    state: dict[str, Any] = {"pid": os.getpid(), "torch_imported": "torch" in sys.modules}
    try:
        import resource

        # ru_maxrss is in KiB on Linux.
        state["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    except Exception:  # noqa: BLE001 - not on every platform
        pass
    for provider in STATE_PROVIDERS:
        try:
            state.update(provider())
        except Exception as exc:  # noqa: BLE001 - state is informative; never fail a call over it
            state.setdefault("state_errors", []).append(repr(exc))
    # Through JSON and back: only plain data may ride along (a torch.__version__ would not).
    return json.loads(json.dumps(state, default=str))


def resolve_task(path: str) -> Callable[..., Any]:
    """Import ``"package.module:qualname"`` and return the plain function behind it.

    A `da3_core.gpu.GPUFunction` is unwrapped (``__gpu_wrapped__``) so the worker runs the
    function itself instead of dispatching again. Parsing and importing are shared with the
    parent (`da3_core.taskpath`).
    """
    obj = resolve_task_path(path)
    return getattr(obj, "__gpu_wrapped__", obj)


def run_call(request: CallRequest, cancelled: threading.Event, send: Callable[[Any], None]) -> OkResult | ExceptionResult:
    """Run one task and build the reply. Never raises.

    Args:
        request: The call to run.
        cancelled: Set by the reader thread when the caller cancels.
        send: Sends a message to the parent (used for progress).
    """
    started = time.perf_counter()
    log.debug("call %d (%s) starting", request.call_id, request.task)

    def send_progress(stage: str, fraction: float | None, detail: str) -> None:
        send(ProgressMsg(request.call_id, stage, fraction, detail))

    context.set_context(context.CallContext(request.call_id, send_progress, cancelled))
    try:
        func = resolve_task(request.task)
        args, kwargs = pickle.loads(request.payload)
        value = func(*args, **kwargs)
        try:
            payload = dumps_cpu_only(to_cpu(value))
        except NotCPUDataError as exc:
            return _exception_reply(request.call_id, exc, type_name="ResultNotCPUError")
        except Exception as exc:  # noqa: BLE001 - an unpicklable result is the task's fault, reported as such
            return _exception_reply(request.call_id, exc, type_name="ResultNotCPUError")
        return OkResult(request.call_id, payload, time.perf_counter() - started)
    except BaseException as exc:  # noqa: BLE001 - everything, incl. SystemExit, reaches the caller
        return _exception_reply(request.call_id, exc, recycle=isinstance(exc, (MemoryError, SystemExit, KeyboardInterrupt)))
    finally:
        context.set_context(None)


def _exception_reply(call_id: int, exc: BaseException, *, type_name: str | None = None, recycle: bool = False) -> ExceptionResult:
    return ExceptionResult(
        call_id=call_id,
        type_name=type_name or type(exc).__name__,
        module=type(exc).__module__,
        message=str(exc),
        traceback="".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
        recycle=recycle,
    )


def worker_main(conn: Connection, parent_pid: int, preload: tuple[str, ...] = ()) -> None:
    """Entry point of the worker process.

    Args:
        conn: The worker's end of a duplex pipe to the parent.
        parent_pid: The parent's pid; the worker ends when it changes.
        preload: Modules to import in the background right after start (e.g. the DA3 task
            module), so the first real call does not pay for the import.
    """
    from da3_core import logs

    logs.setup()  # the worker's lines go where the server's go (stderr, DA3_LOG_FILE), marked with its process name
    inbox: queue.Queue[CallRequest | None] = queue.Queue()
    busy = threading.Event()
    cancelled: dict[int, threading.Event] = {}
    cancelled_lock = threading.Lock()

    def send(msg: Any) -> None:
        with _send_lock:
            conn.send(msg)

    def cancel_event(call_id: int) -> threading.Event:
        with cancelled_lock:
            return cancelled.setdefault(call_id, threading.Event())

    def reader() -> None:
        while True:
            try:
                msg = conn.recv()
            except (EOFError, OSError):
                # The parent closed the pipe or died: never outlive it. When idle, leave
                # through the main thread so exit handlers run; when busy, at once.
                if busy.is_set():
                    log.warning("worker pid %d: the parent closed the pipe or died during a call; exiting", os.getpid())
                    os._exit(0)
                inbox.put(None)
                time.sleep(2)
                os._exit(0)
            if isinstance(msg, CallRequest):
                inbox.put(msg)
            elif isinstance(msg, CancelRequest):
                log.debug("call %d: cancel received", msg.call_id)
                cancel_event(msg.call_id).set()

    def watchdog() -> None:
        while True:
            if os.getppid() != parent_pid:
                log.warning("worker pid %d: parent pid %d is gone; exiting", os.getpid(), parent_pid)
                os._exit(0)
            time.sleep(0.5)

    threading.Thread(target=reader, name="da3-worker-reader", daemon=True).start()
    threading.Thread(target=watchdog, name="da3-worker-watchdog", daemon=True).start()
    send(WorkerReady(os.getpid(), sys.executable))
    log.info("worker pid %d ready (parent pid %d, preload %s)", os.getpid(), parent_pid, ", ".join(preload) or "none")

    if preload:

        def do_preload() -> None:
            for name in preload:
                try:
                    importlib.import_module(name)
                except Exception:  # noqa: BLE001 - the first call will raise the real error
                    log.exception("worker pid %d: preloading %s failed (the first call that needs it will fail too)", os.getpid(), name)

        threading.Thread(target=do_preload, name="da3-worker-preload", daemon=True).start()

    while True:
        request = inbox.get()
        if request is None:
            return
        busy.set()
        reply = run_call(request, cancel_event(request.call_id), send)
        busy.clear()
        with cancelled_lock:
            cancelled.pop(request.call_id, None)
        try:
            send(CallDone(reply, worker_state()))
        except Exception as exc:  # noqa: BLE001 - e.g. a reply too large for the pipe
            log.exception("worker pid %d: the reply to call %d could not be sent", os.getpid(), request.call_id)
            send(CallDone(_exception_reply(request.call_id, exc, type_name="ResultNotCPUError"), worker_state()))
        if isinstance(reply, ExceptionResult) and reply.recycle:
            try:
                log.warning("worker pid %d: exiting after %s in call %d (state may be damaged)", os.getpid(), reply.type_name, request.call_id)
            finally:
                os._exit(3)  # memory or interpreter state may be damaged: the parent starts a fresh worker
