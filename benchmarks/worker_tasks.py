"""Benchmark tasks that run inside the worker (imported there by name)."""

from __future__ import annotations

import time

from da3_core.contract import ReconstructRequest


def time_inprocess(request: ReconstructRequest, demo_root: str, repeats: int = 1, cpu_precision: str = "auto") -> list[float]:
    """Wall seconds of our reconstruction called directly in this process (no runner)."""
    from da3_core.worker.reconstruct import reconstruct

    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        reconstruct(request, demo_root, cpu_precision=cpu_precision)
        out.append(time.perf_counter() - t)
    return out


def time_ours_once(request: ReconstructRequest, demo_root: str, cpu_precision: str = "auto") -> tuple[float, str, str]:
    """One reconstruction in this process: (wall seconds, precision used, why it was chosen)."""
    from da3_core.worker.reconstruct import reconstruct

    t = time.perf_counter()
    rec = reconstruct(request, demo_root, cpu_precision=cpu_precision)
    took = time.perf_counter() - t
    return took, str(rec.params.get("cpu_precision")), str(rec.params.get("cpu_precision_reason", ""))


_STOCK: dict = {}


def time_stock_once(folder: str, request: ReconstructRequest) -> float:
    """One stock ``DepthAnything3.inference()`` call as shipped (its own CPU autocast, default
    threads and allocator), timed in this worker; the model is cached here after the first."""
    from depth_anything_3.api import DepthAnything3

    if folder not in _STOCK:
        _STOCK[folder] = DepthAnything3.from_pretrained(folder).eval()
        _STOCK[folder].inference(list(request.images), process_res=request.process_res)  # warm-up
    t = time.perf_counter()
    _STOCK[folder].inference(list(request.images), process_res=request.process_res, process_res_method=request.process_res_method)
    return time.perf_counter() - t
