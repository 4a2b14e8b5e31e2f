"""Rough resource estimates for a run, before it starts (parent side, torch-free).

The figures come from measurements on the development machine (Intel Xeon, 2 cores, CPU
float32): DA3-SMALL ran 4 frames of 640x480 at process_res 504 (3,888 patch tokens) in
2.56 s of inference, and its worker peaked at 1.9 GB. Time is scaled by parameters x
tokens (the transformer's linear layers dominate); memory is the float32 weights plus
activations scaled by tokens x the backbone's width. Both are stated as rough in the UI.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from da3_core.presets import PATCH_SIZE, Preset

CPU_SECONDS_PER_GPARAM_KTOKEN = 2.56 / (0.08 * 3.888)  # measured: DA3-SMALL, 4 frames at 504
RUNTIME_MB = 600.0  # torch + DA3 imported in an idle worker
ACTIVATION_MB_PER_TOKEN_SMALL = 0.25  # measured on DA3-SMALL (ViT-S, width 384); scaled by width
# The backbone's width per preset (DINOv2 ViT-S/B/L/G); activations grow with it.
WIDTH = {"da3-small": 384, "da3-base": 768, "da3-large": 1024, "da3-giant": 1536, "da3nested-giant-large": 1536 + 1024,
         "da3metric-large": 1024, "da3mono-large": 1024}


def preset_params(preset: Preset) -> float:
    """The preset's parameter count in billions (from its label, e.g. ``"1.15B"``)."""
    return float(preset.params.rstrip("B"))


def tokens(n_frames: int, process_res: int, aspect: float = 4 / 3) -> int:
    """Patch tokens for ``n_frames`` resized so the long side is ``process_res``."""
    long_side = process_res // PATCH_SIZE
    short_side = max(1, int(round(process_res / aspect)) // PATCH_SIZE)
    return n_frames * long_side * short_side


@dataclass(frozen=True)
class RunEstimate:
    """What a run will roughly need on CPU.

    Attributes:
        weights_mb: The model's float32 weights.
        peak_mb: Weights, runtime and activations at the peak.
        seconds: Inference time on this machine's kind of CPU (rough).
        available_mb: Memory available to the worker now.
    """

    weights_mb: float
    peak_mb: float
    seconds: float
    available_mb: float

    @property
    def fits(self) -> bool:
        return self.peak_mb <= self.available_mb


def estimate_cpu_run(preset: Preset, n_frames: int, process_res: int) -> RunEstimate:
    """A rough estimate of a CPU run's memory and time (see the module docstring)."""
    gparams = preset_params(preset)
    k_tokens = tokens(max(1, n_frames), process_res) / 1000
    weights = gparams * 1e9 * 4 / 2**20
    activations = ACTIVATION_MB_PER_TOKEN_SMALL * WIDTH.get(preset.name, 1024) / 384 * k_tokens * 1000
    return RunEstimate(
        weights_mb=weights,
        peak_mb=RUNTIME_MB + weights + activations,
        seconds=CPU_SECONDS_PER_GPARAM_KTOKEN * gparams * k_tokens,
        available_mb=available_memory_mb(),
    )


def available_memory_mb() -> float:
    """Memory a new worker may use: the cgroup's limit minus its use where one is set, else
    the machine's available memory."""
    import psutil

    free = psutil.virtual_memory().available / 2**20
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            limit = Path(limit_file).read_text().strip()
            usage = int(Path(usage_file).read_text().strip())
        except (OSError, ValueError):
            continue
        if limit.isdigit() and int(limit) < 2**60:
            return max(0.0, min(free, (int(limit) - usage) / 2**20))
    return free


__all__ = ["RunEstimate", "available_memory_mb", "estimate_cpu_run"]
