"""The Ray actor that runs calls: one per slot of a `da3_core.runner.backends.ray` runner.

Torch-free, like the process worker's loop (`loop`): the parent names this class without
importing anything heavy, and a task imports what it needs when it first runs. Task modules
keep their module globals (the model cache) for the actor's life, as in a worker process.

One call at a time (`run`, the actor's default concurrency group of one). `run` is a
generator, streamed by Ray: the task runs in a thread of its own, because `report_progress`
is called synchronously inside the task; the generator yields what that thread queues, as it
comes:

* ``("progress", [ProgressMsg, ...])``: the reports made since the last item, in order;
* ``("done", ExceptionResult, worker_state, notices)``, or
* ``("done", (header, [uint8 arrays], seconds), worker_state, notices)``: the value pickled
  with the CPU-only pickler, its large buffers left out of band as uint8 arrays, which Ray
  moves without a pickle copy (the caller unpickles with ``pickle.loads(header, buffers=arrays)``);
  ``notices``: what third-party libraries printed in the actor so far (`capture`), or None
  when unchanged since the last call.

Cancellation comes through `cancel`, in a second concurrency group so that it runs while
`run` is busy: it sets the call's flag, which the task's next checkpoint reads. (Ray's own
``ray.cancel`` on a streaming call only acts at the generator's next yield, and its
``is_canceled()`` is visible only in the generator's thread, not in the task's; so it is
only a fallback here.)

The result goes through exactly the path of the process worker (`calls.run_value`, then
`CPUOnlyPickler`), so both backends convert tensors and refuse torch objects alike.
"""

from __future__ import annotations

import importlib
import logging
import os
import queue
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np

from da3_core.runner import shm
from da3_core.runner.inside import capture
from da3_core.runner.inside.calls import exception_reply, run_value, worker_state
from da3_core.runner.inside.tocpu import CPUOnlyPickler, NotCPUDataError
from da3_core.runner.logsetup import LogSetup
from da3_core.runner.protocol import CallRequest, ExceptionResult, Packed, ProgressMsg

log = logging.getLogger(__name__)

# Progress reports waiting in the actor before the task blocks on the next one: a task that
# reports faster than Ray streams them is slowed down, as a full pipe slows a process worker.
PROGRESS_BACKLOG = 1024
# At most this many reports travel in one streamed item.
PROGRESS_BATCH = 256

_DONE = object()


class CallFlag:
    """The cancel flag a task's checkpoints read (`da3_core.runner.context.CallContext.cancelled`)."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self) -> None:
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()


class CallActor:
    """Runs one call at a time for a Ray slot. Made into a Ray actor by the backend.

    Args:
        preload: Modules to import in the background right after start.
        label: The slot's label, for log lines.
        log_setup: How the server logs; the actor's lines go the same way (its stderr, which
            Ray forwards to the driver's terminal; a log file where the path exists on its node).
    """

    def __init__(self, preload: tuple[str, ...] = (), label: str = "actor", log_setup: LogSetup | None = None) -> None:
        log_setup = log_setup or LogSetup()
        log_setup.apply()
        capture.install(
            tee=log_setup.tee, echo_format=log_setup.echo_format
        )  # third-party warnings become notices for the Runner page
        self.label = label
        self._lock = threading.Lock()
        self._call_id: int | None = None
        self._flag: CallFlag | None = None
        self._node_ip, self._node_id = _node()
        log.debug(
            "%s ready (pid %d on %s, CUDA_VISIBLE_DEVICES=%s, preload %s)",
            label,
            os.getpid(),
            self._node_ip,
            os.environ.get("CUDA_VISIBLE_DEVICES", "unset"),
            ", ".join(preload) or "none",
        )
        if preload:
            threading.Thread(target=_preload, args=(tuple(preload),), name="da3-actor-preload", daemon=True).start()

    # -- control group: runs beside a running call ----------------------------------
    def hello(self) -> dict[str, Any]:
        """Where the actor runs: pid, node IP, the GPU Ray gave it, its state."""
        return {"pid": os.getpid(), "node_ip": self._node_ip, "state": self.state(), "notices": capture.changes()}

    def state(self) -> dict[str, Any]:
        """`worker_state` plus the node, for the Runner page."""
        state = worker_state()
        state["node_ip"], state["node_id"] = self._node_ip, self._node_id
        return state

    def cancel(self, call_id: int) -> bool:
        """Ask the running call ``call_id`` to stop at its next checkpoint; False if it is not running."""
        with self._lock:
            if self._call_id != call_id or self._flag is None:
                return False
            self._flag.set()
        log.debug("call %d: cancel received", call_id)
        return True

    # -- the call --------------------------------------------------------------------
    def run(self, request: CallRequest, data: Any = None) -> Iterator[tuple[Any, ...]]:
        """Run one call; yield its progress as it comes, then its outcome (see the module doc).

        ``data``: the arguments' pickle as a uint8 array, when it travels beside the request
        (read in place from Ray's object store; unpickling copies the arguments out of it).
        """
        if data is not None:
            request = CallRequest(request.call_id, request.task, Packed(memoryview(data)))
        flag = CallFlag()
        with self._lock:
            self._call_id, self._flag = request.call_id, flag
        items: queue.Queue[Any] = queue.Queue(maxsize=PROGRESS_BACKLOG)
        gone = threading.Event()  # the generator was closed: nobody reads `items` any more

        def send(msg: Any) -> None:
            while not gone.is_set():
                try:
                    items.put(msg, timeout=1.0)
                    return
                except queue.Full:
                    continue

        def work() -> None:
            try:
                outcome = _reply(request, flag, send)
            except BaseException as exc:  # noqa: BLE001 - _reply never raises; belt and braces
                outcome = exception_reply(request.call_id, exc)
            while True:  # the outcome must get through even with the backlog full
                try:
                    items.put((_DONE, outcome), timeout=1.0)
                    return
                except queue.Full:
                    if gone.is_set():
                        return

        worker = threading.Thread(target=work, name=f"da3-actor-call-{request.call_id}", daemon=True)
        worker.start()
        try:
            while True:
                batch: list[ProgressMsg] = []
                done: Any = None
                item = items.get()
                while True:
                    if isinstance(item, tuple) and len(item) == 2 and item[0] is _DONE:
                        done = item[1]
                        break
                    batch.append(item)
                    if len(batch) >= PROGRESS_BATCH:
                        break
                    try:
                        item = items.get_nowait()
                    except queue.Empty:
                        break
                if batch:
                    yield ("progress", batch)
                if done is not None:
                    worker.join()
                    yield ("done", done, self.state(), capture.changes())
                    return
        except GeneratorExit:
            # ray.cancel() of this call: stop the task at its next checkpoint, as a cancel does.
            flag.set()
            raise
        finally:
            gone.set()
            with self._lock:
                if self._flag is flag:
                    self._call_id, self._flag = None, None


def _reply(request: CallRequest, flag: CallFlag, send: Any) -> Any:
    """The call's outcome: an `ExceptionResult`, or ``(header, arrays, seconds)``. Never raises."""
    outcome = run_value(request, flag, send)
    if isinstance(outcome, ExceptionResult):
        return outcome
    value, seconds = outcome
    try:
        header, buffers = shm.dumps_out_of_band(value, CPUOnlyPickler)
    except NotCPUDataError as exc:
        return exception_reply(request.call_id, exc, type_name="ResultNotCPUError")
    except Exception as exc:  # noqa: BLE001 - an unpicklable result is the task's fault, reported as such
        return exception_reply(request.call_id, exc, type_name="ResultNotCPUError")
    # uint8 views of the value's own memory: Ray writes them once into its object store.
    arrays = [np.frombuffer(buf, dtype=np.uint8) for buf in buffers]
    return header, arrays, seconds


def _preload(names: tuple[str, ...]) -> None:
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - the first call that needs it raises the real error
            log.error(
                "actor pid %d: preloading %s failed (the first call that needs it will fail too): %s: %s",
                os.getpid(),
                name,
                type(exc).__name__,
                exc,
            )
            log.debug("preload traceback", exc_info=True)


def _node() -> tuple[str, str]:
    """This Ray node's IP address and id (``"?"`` outside Ray)."""
    try:
        import ray

        return ray.util.get_node_ip_address(), ray.get_runtime_context().get_node_id()
    except Exception:  # noqa: BLE001 - informative only
        return "?", "?"


__all__ = ["CallActor", "CallFlag"]
