"""Benchmark tasks that run inside the worker (imported there by name)."""

from __future__ import annotations

import time

from da3_core.contract import ReconstructRequest


def time_inprocess(
    request: ReconstructRequest, demo_root: str, repeats: int = 1, cpu_precision: str = "auto"
) -> list[float]:
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
    _STOCK[folder].inference(
        list(request.images), process_res=request.process_res, process_res_method=request.process_res_method
    )
    return time.perf_counter() - t


def vm_kb(field: str) -> float:
    """A ``/proc/self/status`` memory field (``VmRSS``, ``VmHWM``) in kB; 0 where absent."""
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return float(line.split()[1])
    return 0.0


def reset_hwm() -> None:
    """Reset this process's resident high-water mark (``VmHWM``) to its current RSS."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def measure_run(request: ReconstructRequest, demo_root: str) -> dict:
    """One reconstruction in this worker with its peak memory: the process's resident
    high-water mark (reset first through ``/proc/self/clear_refs``), and on CUDA the peak
    allocated and reserved GPU memory. For `benchmarks.fit_guard`."""
    import torch

    from da3_core.worker.reconstruct import reconstruct

    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    before_mb = vm_kb("VmRSS") / 1024
    reset_hwm()
    t, cpu = time.perf_counter(), time.process_time()
    rec = reconstruct(request, demo_root)
    wall, cpu = time.perf_counter() - t, time.process_time() - cpu
    _LAST[0] = rec
    inference = float(rec.timings.get("inference", wall))
    if not cuda:  # on a busy CPU, wall time includes waiting: scale by the share of the threads' time actually used
        inference *= min(1.0, cpu / max(1e-6, torch.get_num_threads() * wall))
    out = {
        "wall_s": wall,
        "cpu_s": cpu,
        "threads": torch.get_num_threads(),
        "inference_s": inference,
        "device": rec.device,
        "rss_before_mb": before_mb,
        "rss_peak_mb": vm_kb("VmHWM") / 1024,
        "result_mb": sum(getattr(a, "nbytes", 0) for a in (rec.depth, rec.conf, rec.images)) / 2**20,
    }
    if cuda:
        out["cuda_peak_alloc_mb"] = torch.cuda.max_memory_allocated() / 2**20
        out["cuda_peak_reserved_mb"] = torch.cuda.max_memory_reserved() / 2**20
        out["cuda_weights_mb"] = torch.cuda.memory_allocated() / 2**20
    return out


_LAST: list = [None]


def measure_run_kept(request: ReconstructRequest, demo_root: str) -> tuple[dict, object]:
    """`measure_run`, returning the reconstruction too (the parent measures what holding it costs)."""
    out = measure_run(request, demo_root)
    rec, _LAST[0] = _LAST[0], None
    return out, rec
