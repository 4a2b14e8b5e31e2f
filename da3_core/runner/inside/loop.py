"""The worker process's main loop. Started by `da3_core.runner.backends.process` (spawn).

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
import logging
import os
import queue
import sys
import threading
import time
from multiprocessing.connection import Connection
from typing import Any

from da3_core.runner.inside import capture
from da3_core.runner.inside.calls import exception_reply, release, run_call, worker_state
from da3_core.runner.logsetup import LogSetup
from da3_core.runner.protocol import (
    CallDone,
    CallRequest,
    CancelRequest,
    ExceptionResult,
    NoticesMsg,
    OkResult,
    WorkerReady,
)

# Our lines go where the server's go (stderr, which the worker shares with it; a log file),
# as the server set them up (`da3_core.runner.logsetup`); third-party warnings and prints are captured as notices (`capture`) and sent to the parent.
log = logging.getLogger(__name__)

_send_lock = threading.Lock()


def worker_main(
    conn: Connection,
    parent_pid: int,
    preload: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
    log_setup: LogSetup | None = None,
) -> None:
    """Entry point of the worker process.

    Args:
        conn: The worker's end of a duplex pipe to the parent.
        parent_pid: The parent's pid; the worker ends when it changes.
        preload: Modules to import in the background right after start (e.g. the DA3 task
            module), so the first real call does not pay for the import.
        env: Environment to set before anything else is imported (``CUDA_VISIBLE_DEVICES``
            pins the worker to its GPU: CUDA reads it when torch first initialises it).
        log_setup: How the server logs; the worker's lines go the same way, marked with its
            process name (default: stderr at INFO).
    """
    os.environ.update(env or {})
    log_setup = log_setup or LogSetup()
    log_setup.apply()
    capture.install(
        tee=log_setup.tee, echo_format=log_setup.echo_format
    )  # before any heavy import: what libraries print becomes notices for the Runner page
    inbox: queue.Queue[CallRequest | None] = queue.Queue()
    busy = threading.Event()
    cancelled: dict[int, threading.Event] = {}
    cancelled_lock = threading.Lock()

    def send(msg: Any) -> None:
        with _send_lock:
            conn.send(msg)

    def send_done(reply: Any, notices: tuple[Any, ...] | None = None) -> None:
        # The notices are read under the send lock, so snapshots reach the parent in order.
        with _send_lock:
            conn.send(CallDone(reply, worker_state(), capture.changes() if notices is None else notices))

    def send_notices() -> None:
        with _send_lock:
            notices = capture.changes()
            if notices is not None:
                conn.send(NoticesMsg(notices))

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
    log.debug("worker pid %d ready (parent pid %d, preload %s)", os.getpid(), parent_pid, ", ".join(preload) or "none")

    if preload:

        def do_preload() -> None:
            for name in preload:
                try:
                    importlib.import_module(name)
                except Exception as exc:  # noqa: BLE001 - the first call will raise the real error
                    log.error(
                        "worker pid %d: preloading %s failed (the first call that needs it will fail too): %s: %s",
                        os.getpid(),
                        name,
                        type(exc).__name__,
                        exc,
                    )
                    log.debug("preload traceback", exc_info=True)
            try:
                send_notices()  # what the imports printed, for the Runner page before any call
            except Exception:  # noqa: BLE001 - the parent may be gone; the next reply carries them
                log.debug("the preload's notices could not be sent", exc_info=True)

        threading.Thread(target=do_preload, name="da3-worker-preload", daemon=True).start()

    while True:
        request = inbox.get()
        if request is None:
            return
        busy.set()
        keep: list[Any] = []  # the call's arguments: their pages are freed after the reply is out
        reply = run_call(request, cancel_event(request.call_id), send, owner_pid=parent_pid, keep=keep)
        busy.clear()
        with cancelled_lock:
            cancelled.pop(request.call_id, None)
        try:
            send_done(reply)
        except Exception as exc:  # noqa: BLE001 - e.g. a reply the pipe refuses
            log.debug(
                "worker pid %d: the reply to call %d could not be sent", os.getpid(), request.call_id, exc_info=True
            )  # the server logs the error
            if isinstance(reply, OkResult):
                release(reply.payload)
            send_done(
                exception_reply(request.call_id, exc, type_name="ResultNotCPUError"),
                capture.BOOK.snapshot() if capture.BOOK else None,
            )
        keep.clear()
        if isinstance(reply, ExceptionResult) and reply.recycle:
            try:
                log.warning(
                    "worker pid %d: exiting after %s in call %d (state may be damaged)",
                    os.getpid(),
                    reply.type_name,
                    request.call_id,
                )
            finally:
                os._exit(3)  # memory or interpreter state may be damaged: the parent starts a fresh worker
