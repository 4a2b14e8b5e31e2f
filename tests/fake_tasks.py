"""Tiny tasks that drive the runner in tests. The worker imports them by name.

Each stands in for one behaviour of a real GPU task: a result, an exception, a crash of
each kind, an overrun, progress, a cached "model", tensors that must come back as numpy.

Tasks that tests stop from outside (cancel, kill, close) report one `Progress` as their
body starts (stage ``"running"``), so a test waits for that event
(`tests.runner.waiting.until_running`) instead of sleeping; `gate` runs until the test
opens it, so "this call is still running" never depends on the clock.
"""

from __future__ import annotations

import ctypes
import dataclasses
import os
import signal
import sys
import time
from typing import Any, NamedTuple

from da3_core.runner import gpu
from da3_core.runner.context import _context, check_cancelled, report_progress

_FAKE_MODEL: dict[str, Any] = {}
_LOADS = 0


def _announce(stage: str = "running") -> None:
    """Report ``stage`` without a cancellation checkpoint (for tasks that must not stop at one)."""
    ctx = _context()
    if ctx is not None:
        ctx.send_progress(stage, None, "")


def gate(path: str, timeout: float = 60.0) -> tuple[str, int]:
    """Report ``"waiting"``, then run until the file ``path`` exists (the test opens the gate:
    `tests.runner.waiting.Gate`); return its name and this worker's pid. Never a checkpoint.

    Raises:
        TimeoutError: Not opened within ``timeout`` (a broken test fails instead of hanging).
    """
    _announce("waiting")
    end = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > end:
            raise TimeoutError(f"the gate {path} was not opened within {timeout} s")
        time.sleep(0.005)
    return os.path.basename(path), os.getpid()


def progress_acked(folder: str, n: int, timeout: float = 30.0) -> int:
    """Report ``n`` steps; after each, wait until the caller acknowledged it (the file
    ``folder/ack-<i>``): it only finishes if every report reached the caller while the task ran.

    Raises:
        TimeoutError: A report was not acknowledged within ``timeout`` (it did not arrive).
    """
    for i in range(1, n + 1):
        report_progress("step", (i - 1) / n, f"{i}/{n}")
        ack, end = os.path.join(folder, f"ack-{i}"), time.monotonic() + timeout
        while not os.path.exists(ack):
            if time.monotonic() > end:
                raise TimeoutError(f"report {i}/{n} was not acknowledged within {timeout} s")
            time.sleep(0.005)
    return n


@gpu(duration=30)
def square(x: float) -> float:
    return x * x


@gpu(duration=lambda seconds, **_: seconds + 5)
def sleep_for(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@gpu(duration=1)
def overrun(seconds: float) -> None:
    time.sleep(seconds)


def echo(value: Any) -> Any:
    return value


def worker_pid() -> int:
    return os.getpid()


def tagged(tag: str, seconds: float = 0.0) -> tuple[str, int]:
    time.sleep(seconds)
    return tag, os.getpid()


def fail(message: str) -> None:
    raise ValueError(message)


class CustomFailure(Exception):
    pass


def fail_custom(message: str) -> None:
    raise CustomFailure(message)


def die_by_sigkill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(30)


def die_by_segfault() -> None:
    ctypes.string_at(0)  # reads address 0: SIGSEGV


def die_by_exit(code: int = 7) -> None:
    os._exit(code)


def exhaust_memory() -> None:
    """Cap the address space just above what is in use, then allocate past it."""
    import resource

    with open("/proc/self/statm") as f:
        vm_pages = int(f.read().split()[0])
    in_use = vm_pages * os.sysconf("SC_PAGE_SIZE")
    resource.setrlimit(resource.RLIMIT_AS, (in_use + 256 * 2**20, resource.RLIM_INFINITY))
    blocks = []
    for _ in range(64):
        blocks.append(bytearray(64 * 2**20))


def progress_steps(n: int, delay: float = 0.05) -> int:
    for i in range(n):
        report_progress("step", i / n, f"{i + 1}/{n}")
        time.sleep(delay)
    return n


def cancellable(seconds: float) -> str:
    report_progress("running")
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        check_cancelled()
        time.sleep(0.02)
    return "finished"


def progress_flood(seconds: float) -> int:
    """Reports progress in a tight loop (no sleep) for ``seconds``: faster than the parent reads it."""
    n = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        report_progress("flood", None, str(n))
        n += 1
    return n


def raise_cancelled_unasked() -> None:
    """Raises the checkpoint's exception although nobody cancelled the call."""
    from da3_core.runner.context import CancelledInWorker

    raise CancelledInWorker("raised by the task itself")


def small_reconstruction() -> Any:
    """A tiny `Reconstruction` (plain numpy), as the DA3 task returns one."""
    import numpy as np

    from da3_core.contract import ModelSpec, Reconstruction

    return Reconstruction(
        depth=np.ones((1, 2, 3), np.float32),
        conf=None,
        extrinsics=None,
        intrinsics=None,
        images=np.zeros((1, 2, 3, 3), np.uint8),
        sky=None,
        is_metric=False,
        scale_factor=None,
        gaussians=None,
        names=("a.png",),
        model=ModelSpec("demo", "da3-small"),
        preset="da3-small",
        device="cpu",
        timings={"total": 0.5},
        params={"process_res": 504, "nested": {"k": [1, 2]}},
    )


def stubborn(seconds: float) -> str:
    _announce()
    time.sleep(seconds)  # never reaches a checkpoint
    return "finished"


def cached_model_loads() -> int:
    """Loads a fake model into a module-global once per worker life; returns the load count."""
    global _LOADS
    if "model" not in _FAKE_MODEL:
        _LOADS += 1
        _FAKE_MODEL["model"] = object()
    return _LOADS


def heavy_modules_imported() -> list[str]:
    return sorted({m.split(".")[0] for m in sys.modules} & {"torch", "depth_anything_3"})


def big_result(n_mb: int) -> Any:
    import numpy as np

    return np.ones(n_mb * 2**20 // 8, dtype=np.float64)


@dataclasses.dataclass
class Holder:
    name: str
    tensors: Any


class Pair(NamedTuple):
    left: Any
    right: Any


def cpu_tensors() -> Any:
    """Tensors at every depth of every container kind, including a torch-module dataclass."""
    import torch
    from addict import Dict as AddictDict
    from depth_anything_3.specs import Gaussians

    aux = AddictDict()
    aux.feat = torch.ones(2, 2)
    return {
        "plain": torch.arange(3),
        "list": [torch.zeros(1), {"deep": (torch.ones(2, dtype=torch.bfloat16),)}],
        "pair": Pair(torch.ones(1), 5),
        "holder": Holder("h", [torch.full((2,), 3.0)]),
        "aux": aux,
        "gaussians": Gaussians(*(torch.ones(1, 4, 3) for _ in range(5))),
        "dtype": torch.float32,
        "grad": torch.ones(2, requires_grad=True) * 2,
    }


def meta_tensor_at(path: str) -> Any:
    """A CPU-looking structure with one meta tensor (the stand-in for CUDA) at ``path``."""
    import torch

    if path == "gaussians.means":
        return {
            "depth": torch.ones(2),
            "gaussians": {"means": torch.empty(4, 3, device="meta"), "scales": torch.ones(4)},
        }
    if path == "frames[1]":
        return {"frames": [torch.ones(1), torch.empty(1, device="meta")]}
    return torch.empty(1, device="meta")


def torch_object_in_result() -> Any:
    import torch

    return {"ok": 1, "generator": torch.Generator()}


def unpicklable_result() -> Any:
    return {"f": lambda: 1}


def sum_arrays(arrays: list[Any]) -> float:
    """The sum of every array given (the arguments travel through shared memory)."""
    return float(sum(float(a.sum()) for a in arrays))


def sleep_then_big(seconds: float, n_mb: int) -> Any:
    """Sleep, then return ``n_mb`` MB (killed while sleeping by the timeout tests)."""
    time.sleep(seconds)
    return big_result(n_mb)


def leave_segment_then_die(owner_pid: int) -> None:
    """Make a result segment for ``owner_pid`` as the worker does, then die before handing it over."""
    import numpy as np

    from da3_core.runner import shm

    shm.pack({"a": np.ones(2**20, np.uint8)}, owner_pid=owner_pid)
    os.kill(os.getpid(), signal.SIGKILL)


def visible_devices() -> str | None:
    """The worker's CUDA_VISIBLE_DEVICES."""
    return os.environ.get("CUDA_VISIBLE_DEVICES")
