"""Worker-side tasks of `benchmarks.bench_cpu` (imported in the worker by name; torch lives here)."""

from __future__ import annotations

import os
import statistics
import threading
import time
from pathlib import Path
from typing import Any

from da3_core.contract import ReconstructRequest


def cpu_flags() -> list[str]:
    """The CPU's SIMD/matrix flags that matter here (from /proc/cpuinfo)."""
    wanted = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8")
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    for line in text.splitlines():
        if line.startswith("flags"):
            have = set(line.split(":", 1)[1].split())
            return [f for f in wanted if f in have]
    return []


def matmul_peak(dtype_name: str, sizes: tuple[int, ...] = (1024, 2048, 3072), repeats: int = 5) -> dict[str, float]:
    """Dense square matmul GFLOP/s at each size (median of ``repeats``) and the best of them."""
    import torch

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    out: dict[str, float] = {}
    for n in sizes:
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        for _ in range(2):
            torch.mm(a, b)
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            torch.mm(a, b)
            times.append(time.perf_counter() - t)
        out[str(n)] = 2 * n**3 / statistics.median(times) / 1e9
    out["peak"] = max(out.values())
    return out


def _inputs(model: Any, request: ReconstructRequest) -> Any:
    imgs_cpu, _, _ = model._preprocess_inputs(
        list(request.images), None, None, request.process_res, request.process_res_method
    )
    imgs, _, _ = model._prepare_model_inputs(imgs_cpu, None, None)
    return imgs


def _forward(model: Any, imgs: Any, precision: str, fast: Any) -> dict[str, Any]:
    from da3_core.worker.reconstruct import run_forward

    raw = run_forward(
        model, imgs, "cpu", infer_gs=False, ref_view_strategy="saddle_balanced", cpu_precision=precision, fast=fast
    )
    return {k: raw[k].float().numpy() for k in ("depth", "depth_conf", "extrinsics", "intrinsics") if k in raw}


def _err(a: Any, b: Any) -> float:
    import numpy as np

    return float(np.abs(a - b).max() / max(float(np.abs(b).max()), 1e-12))


def forward_figures(request: ReconstructRequest, demo_root: str, rounds: int = 4) -> dict[str, Any]:
    """In this worker: matmul peaks, FLOPs of the forward, and the forward timed with each
    step of `da3_core.worker.cpu_fast` on and off (leave-one-out from the chosen options),
    alternating variant by variant in every round (medians), plus each variant's largest
    error against stock float32 (DA3's own code, no autocast)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    from da3_core.worker import cpu_fast
    from da3_core.worker.model import configure_cpu_threads, get_model, resolve_cpu_precision

    precision, reason = resolve_cpu_precision("auto")
    threads = configure_cpu_threads(0)
    model, _ = get_model(request.model, "cpu", Path(demo_root))
    imgs = _inputs(model, request)
    chosen = cpu_fast.for_precision(precision)

    out: dict[str, Any] = {"precision": precision, "reason": reason, "threads": threads, "flags": cpu_flags()}
    out["peak_fp32"] = matmul_peak("fp32")
    out["peak_bf16"] = matmul_peak("bf16")

    # FLOPs: attention on the math path so that its matmuls are counted (the flash kernel
    # is not, by torch.utils.flop_counter).
    def flops(fast: Any) -> float:
        with FlopCounterMode(display=False) as counter, sdpa_kernel(SDPBackend.MATH):
            _forward(model, imgs, "fp32", fast)
        return float(counter.get_total_flops())

    out["flops_stock"] = flops(None)
    out["flops_ours"] = flops(chosen)

    variants: dict[str, tuple[str, Any]] = {
        "stock_fp32": ("fp32", None),
        "ours_fp32": ("fp32", cpu_fast.DEFAULT_FP32),
    }
    if precision == "bf16":
        variants["today_bf16"] = ("bf16", None)
    variants["ours"] = (precision, chosen)
    for step in cpu_fast.STEPS:
        off = chosen.without(step)
        if off != chosen and (precision == "bf16" or step not in cpu_fast.BF16_ONLY):
            variants[f"without_{step}"] = (precision, off)
    ref = _forward(model, imgs, "fp32", None)
    errors: dict[str, float] = {}
    for name, (prec, fast) in variants.items():  # warm-up, and each variant's error
        got = _forward(model, imgs, prec, fast)
        errors[name] = max(_err(got[k], ref[k]) for k in ("depth", "depth_conf"))
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, (prec, fast) in variants.items():
            t = time.perf_counter()
            _forward(model, imgs, prec, fast)
            times[name].append(time.perf_counter() - t)
    out["times"] = times
    out["errors"] = errors
    out["attention"] = attention_figures(imgs.shape[1], imgs.shape[-2] // 14 * (imgs.shape[-1] // 14) + 1, precision)
    return out


def attention_figures(frames: int, tokens: int, precision: str, repeats: int = 3) -> dict[str, float]:
    """SDPA at DA3-SMALL's two attention shapes (per frame, across frames), flash vs math,
    seconds (median)."""
    import torch
    import torch.nn.functional as F  # noqa: N812 - torch's own spelling
    from torch.nn.attention import SDPBackend, sdpa_kernel

    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    out: dict[str, float] = {}
    for label, (b, n) in {"local": (frames, tokens), "global": (1, frames * tokens)}.items():
        q, k, v = (torch.randn(b, 6, n, 64, dtype=dtype) for _ in range(3))
        for backend in ("flash", "math"):
            kind = SDPBackend.FLASH_ATTENTION if backend == "flash" else SDPBackend.MATH
            with torch.inference_mode(), sdpa_kernel(kind):
                F.scaled_dot_product_attention(q, k, v)
                times = []
                for _ in range(repeats):
                    t = time.perf_counter()
                    F.scaled_dot_product_attention(q, k, v)
                    times.append(time.perf_counter() - t)
            out[f"{label}_{backend}_s"] = statistics.median(times)
    return out


def capped_run(request: ReconstructRequest, demo_root: str, cap_mb: float) -> dict[str, Any]:
    """`benchmarks.worker_tasks.measure_run` under a memory cap: a watchdog thread reads this
    process's resident memory every 2 ms and kills the process (exit 137, as the kernel's
    out-of-memory killer would) when it passes ``cap_mb``."""
    from benchmarks.worker_tasks import measure_run, vm_kb

    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(0.002):
            if vm_kb("VmRSS") / 1024 > cap_mb:
                os._exit(137)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        return dict(measure_run(request, demo_root))
    finally:
        stop.set()


def inductor_figures(request: ReconstructRequest, demo_root: str, rounds: int = 4) -> dict[str, Any]:
    """In a fresh worker: our forward at the chosen precision, eager and through
    ``torch.compile`` (inductor, ``freezing`` on: weights folded in as constants and prepacked
    for oneDNN), alternating call by call (medians); the compile's seconds (first call); the
    compiled forward's largest relative depth error against the eager one. Measured, not used
    by the app (see docs/CPU.md)."""
    import torch
    import torch._inductor.config as inductor_config

    from da3_core.worker import cpu_fast
    from da3_core.worker.model import configure_cpu_threads, get_model, resolve_cpu_precision

    precision, _ = resolve_cpu_precision("auto")
    configure_cpu_threads(0)
    model, _ = get_model(request.model, "cpu", Path(demo_root))
    imgs = _inputs(model, request)
    bf16 = precision == "bf16"
    args = (imgs, None, None, [], False, False, "saddle_balanced")
    inductor_config.freezing = True
    out: dict[str, Any] = {"precision": precision}
    with (
        cpu_fast.enabled(model, cpu_fast.for_precision(precision), bf16=bf16, need_aux=False),
        torch.inference_mode(),
        torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16),
    ):
        eager = model.model
        ref = eager(*args)["depth"].float()
        compiled = torch.compile(eager, dynamic=False)
        t = time.perf_counter()
        got = compiled(*args)["depth"].float()
        out["compile_s"] = time.perf_counter() - t
        out["depth_err"] = float((got - ref).abs().max() / ref.abs().max().clamp_min(1e-12))
        times: dict[str, list[float]] = {"eager": [], "compiled": []}
        for _ in range(rounds):
            for name, fn in (("eager", eager), ("compiled", compiled)):
                t = time.perf_counter()
                fn(*args)
                times[name].append(time.perf_counter() - t)
    out["eager_s"] = statistics.median(times["eager"])
    out["compiled_s"] = statistics.median(times["compiled"])
    return out
