"""Which GPUs this machine has, found without importing torch, and the worker plan from it.

The parent must never import torch (the isolation contract), so GPUs are listed with
``nvidia-smi``, the tool every NVIDIA driver installs. ``CUDA_VISIBLE_DEVICES`` of the
server is honoured: each worker gets one of its entries, so "0,2" gives workers on GPUs 0
and 2.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GPU:
    """One visible GPU.

    Attributes:
        visible_id: What the worker's ``CUDA_VISIBLE_DEVICES`` is set to (an index or UUID,
            as the server's own ``CUDA_VISIBLE_DEVICES`` names it).
        name: e.g. ``"NVIDIA H100 80GB HBM3"``.
        memory_mb: Total memory in MiB, or None when unknown.
        uuid: The GPU's UUID (``GPU-...``).
    """

    visible_id: str
    name: str
    memory_mb: int | None = None
    uuid: str = ""


@dataclass(frozen=True)
class WorkerPlan:
    """One worker to start: its label, what it is pinned to and the environment that pins it."""

    label: str
    device: str
    env: dict[str, str]


def visible_gpus(timeout_s: float = 10.0) -> list[GPU]:
    """The GPUs a worker may use: ``nvidia-smi``'s list, narrowed by ``CUDA_VISIBLE_DEVICES``.

    Returns [] where there is no ``nvidia-smi`` or it fails (a CPU machine).
    """
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        out = subprocess.run(
            [exe, "--query-gpu=index,uuid,name,memory.total", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("nvidia-smi failed (%s); assuming no GPU", exc)
        return []
    found: list[GPU] = []
    for line in out.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 3 or not parts[0].isdigit():
            continue
        memory = int(parts[3]) if len(parts) > 3 and parts[3].isdigit() else None
        found.append(GPU(parts[0], parts[2], memory, parts[1]))
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return found
    chosen = []
    for entry in (e.strip() for e in visible.split(",")):
        # An index, or a UUID or its unique prefix (as CUDA reads the variable).
        match = [
            g
            for g in found
            if entry and (g.visible_id == entry or (entry.startswith("GPU-") and g.uuid.startswith(entry)))
        ]
        if len(match) != 1:
            break  # CUDA ignores everything from the first entry it cannot read
        chosen.append(GPU(entry, match[0].name, match[0].memory_mb, match[0].uuid))
    return chosen


def worker_count(setting: str | int) -> int | None:
    """``DA3_WORKERS`` read: None for ``auto``, else the count.

    Raises:
        ValueError: Neither ``auto`` nor a whole number of at least 1.
    """
    text = str(setting).strip().lower()
    if text == "auto":
        return None
    try:
        count = int(text)
    except ValueError:
        count = 0
    if count < 1:
        raise ValueError(f"DA3_WORKERS={setting!r}: use 'auto' or a whole number of workers, at least 1")
    return count


def plan_workers(setting: str | int, gpus: list[GPU]) -> list[WorkerPlan]:
    """The workers for ``DA3_WORKERS``.

    Args:
        setting: ``"auto"`` (one worker per GPU; one on a CPU machine) or a count. A count
            larger than the GPUs shares them round-robin; on a CPU machine it starts that
            many CPU workers (each with its own model copy in memory).
        gpus: From `visible_gpus`.

    Raises:
        ValueError: ``setting`` is neither ``auto`` nor a positive integer.
    """
    requested = worker_count(setting)
    count = requested if requested is not None else max(1, len(gpus))
    plans = []
    for i in range(count):
        if gpus:
            gpu = gpus[i % len(gpus)]
            plans.append(
                WorkerPlan(
                    f"worker {i + 1}", f"GPU {gpu.visible_id} · {gpu.name}", {"CUDA_VISIBLE_DEVICES": gpu.visible_id}
                )
            )
        else:
            plans.append(WorkerPlan(f"worker {i + 1}", "CPU", {}))
    return plans
