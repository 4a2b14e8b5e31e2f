"""Fake tasks for the isolation benchmarks (imported by name in the worker or actor).

``gpu_sim`` stands for DA3-SMALL on an H100, as measured there (issue "Serving at scale"):
it receives DA3-shaped frames, sleeps as long as DA3 took inside the worker (95 ms for 4
frames, 450 ms for 32), and returns arrays of a real `Reconstruction`'s byte size at
process_res 504 (depth and confidence float32, processed image uint8, at 378x504: about
2.1 MB per frame), made as the worker makes them: torch tensors turned into numpy by `to_cpu`.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

H, W = 378, 504  # a 640x480 frame at process_res 504 (upper_bound_resize)
_CACHE: dict[str, Any] = {}


def empty() -> None:
    """Nothing: the runner's own round trip."""
    return None


def sleep(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def gpu_sim(frames: list[np.ndarray], seconds: float) -> dict[str, np.ndarray]:
    """Sleep ``seconds``, then return a reconstruction-sized result for ``frames``."""
    import torch

    from da3_core.runner.inside.tocpu import to_cpu

    n = len(frames)
    assert all(f.shape == (480, 640, 3) and f.dtype == np.uint8 for f in frames)
    time.sleep(seconds)
    out = {
        "depth": torch.ones((n, H, W), dtype=torch.float32),
        "conf": torch.ones((n, H, W), dtype=torch.float32),
        "processed_images": torch.ones((n, H, W, 3), dtype=torch.uint8),
        "extrinsics": torch.eye(4).repeat(n, 1, 1)[:, :3],
        "intrinsics": torch.eye(3).repeat(n, 1, 1),
    }
    return to_cpu(out)


def time_gpu_sim_direct(frames: list[np.ndarray], seconds: float, repeats: int) -> list[float]:
    """Wall seconds of `gpu_sim` called directly here, in the worker (no runner)."""
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        gpu_sim(frames, seconds)
        out.append(time.perf_counter() - t)
    return out


def arrays(megabytes: int) -> dict[str, np.ndarray]:
    """``megabytes`` MB of arrays, made once and kept (only the transfer is timed)."""
    key = f"arrays-{megabytes}"
    if key not in _CACHE:
        n = megabytes * 2**20
        _CACHE[key] = {"a": np.ones(n // 2, np.uint8), "b": np.ones(n // 8, np.float32), "c": np.ones(n // 4, np.uint8)}
    return _CACHE[key]
