"""A task for scripts/gpu_check.py: raw CUDA tensors nested in containers (worker side)."""

from __future__ import annotations

from typing import Any


def cuda_tensors_nested() -> dict[str, Any]:
    import torch

    x = torch.randn(64, 64, device="cuda")
    bf = torch.ones(8, device="cuda", dtype=torch.bfloat16)
    out = {
        "plain": x,
        "deep": {"list": [x * 2, {"bf16": bf}]},
        "grad": torch.ones(4, device="cuda", requires_grad=True) * 3,
    }
    return out
