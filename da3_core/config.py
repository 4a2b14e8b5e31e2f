"""Every setting, read once from the environment and validated.

A bad value raises `ConfigError` naming the variable, the value and what is allowed.
The table of variables is in README.md ("Configuration").
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from da3_core.presets import DEVICES

# One address: no spaces, one @, a dot in the domain. DA3_ADMINS entries are matched
# against the provider's email claim, so this only catches typos (a missing comma).
_EMAIL = re.compile(r"[^\s@,]+@[^\s@,]+\.[^\s@,]+")


class ConfigError(ValueError):
    """An environment variable holds a value that cannot be used."""


@dataclass(frozen=True)
class Settings:
    """The app's configuration.

    Attributes:
        model: Default model: a DA3 preset name (``da3-small``), a hub id
            (``depth-anything/DA3-SMALL``), ``demo:<preset>`` for untrained weights, or
            ``auto`` (a default per device). Env ``DA3_MODEL``.
        model_dir: Local folder with weights (``config.json`` + ``model.safetensors``),
            as in the official DA3 app; when set it is the default model. Env ``DA3_MODEL_DIR``.
        models_root: A folder whose sub-folders holding ``config.json`` are offered as local
            checkpoints in the app (users pick among them; they never type a path). Env
            ``DA3_MODELS_ROOT``.
        workspace: Folder for runs, uploads and demo weights. Env ``DA3_WORKSPACE``.
        device: ``auto``, ``cuda``, ``mps`` or ``cpu``. Env ``DA3_DEVICE``.
        isolation: ``isolated`` (default: spawned worker processes), ``ray`` (Ray actors; the
            default when ``DA3_RAY_ADDRESS`` is set) or ``inprocess`` (debugging only: runs
            tasks in the server process and imports torch there). Env ``DA3_ISOLATION``.
        workers: ``auto`` (one worker per visible GPU, one on a CPU machine; with Ray, one
            actor per GPU of the cluster, one on a cluster without GPUs) or a count. Env
            ``DA3_WORKERS``.
        ray_address: A Ray cluster to run on: ``auto`` (the one this machine belongs to) or
            ``host:port``; unset, no Ray. Env ``DA3_RAY_ADDRESS``.
        duration_base_s: Fixed part of a reconstruction's time budget. Env ``DA3_DURATION_S``.
        duration_per_frame_s: Budget added per frame. Env ``DA3_DURATION_PER_FRAME_S``.
        max_frames: Most frames one DA3 call takes (video frames included). Env ``DA3_MAX_FRAMES``.
        max_chunked_frames: Most frames a chunked run takes (`da3_core.chunks`). Env
            ``DA3_MAX_CHUNKED_FRAMES``.
        max_upload_mb: Largest single upload accepted. Env ``DA3_MAX_UPLOAD_MB``.
        max_pixels: Largest image (width x height) decoded. Env ``DA3_MAX_PIXELS``.
        workspace_max_age_h: Runs and uploads older than this are removed. Env
            ``DA3_WORKSPACE_MAX_AGE_H``.
        workspace_max_gb: The workspace is trimmed (oldest first) to this size. Env
            ``DA3_WORKSPACE_MAX_GB``.
        cpu_threads: Torch threads in the worker on CPU; 0 means all cores. Env ``DA3_CPU_THREADS``.
        cancel_grace_s: After a cancel, how long the worker may finish its current stage
            before it is killed. Env ``DA3_CANCEL_GRACE_S``.
        abandon_after_s: A run whose page has stopped asking about it (tab closed) this long
            is cancelled. Env ``DA3_ABANDON_AFTER_S``.
        max_side: Frames are downscaled on upload so their long side is at most this (the
            model sees process_res anyway; this bounds memory). Env ``DA3_MAX_SIDE``.
        cpu_precision: Precision of the forward pass on CPU: ``auto`` (bfloat16 autocast
            where the CPU has hardware bfloat16, flags ``avx512_bf16`` or ``amx_bf16``;
            float32 otherwise), ``fp32`` or ``bf16``. Env ``DA3_CPU_PRECISION``.
        admins: Emails (lower case) of the users allowed on the Runner page when sign-in
            is on (`da3_core.app.auth`); with sign-in on and none listed, the page is closed to
            everyone. Without sign-in it is ignored (the page is open). Env ``DA3_ADMINS``,
            comma-separated.
        memory_limit_mb: Memory (MB) the app may use, worker and server together; runs the
            run guard expects to exceed it are refused before they start (`da3_core.runs.guard`).
            0 (default): the container's cgroup limit where one is set, else the machine's
            available memory. On Streamlit Community Cloud set about 2700. Env
            ``DA3_MEMORY_LIMIT_MB``.
    """

    model: str = "auto"
    model_dir: Path | None = None
    models_root: Path | None = None
    workspace: Path = Path("workspace")
    device: str = "auto"
    isolation: str = "isolated"
    workers: str = "auto"
    ray_address: str | None = None
    duration_base_s: float = 120.0
    duration_per_frame_s: float = 10.0
    max_frames: int = 64
    max_chunked_frames: int = 2000
    max_upload_mb: int = 200
    max_pixels: int = 40_000_000
    workspace_max_age_h: float = 72.0
    workspace_max_gb: float = 5.0
    cpu_threads: int = 0
    cancel_grace_s: float = 10.0
    abandon_after_s: float = 30.0
    max_side: int = 2048
    cpu_precision: str = "auto"
    admins: tuple[str, ...] = ()
    memory_limit_mb: float = 0.0

    def local_checkpoints(self) -> list[Path]:
        """Checkpoint folders users may pick: ``model_dir`` and the sub-folders of
        ``models_root`` that hold a ``config.json`` (symlinks leading outside are skipped)."""
        found: list[Path] = [self.model_dir] if self.model_dir else []
        if self.model not in ("", "auto") and Path(self.model).expanduser().is_dir():
            found.append(Path(self.model).expanduser().resolve())  # DA3_MODEL given as a folder
        if self.models_root is not None and self.models_root.is_dir():
            root = self.models_root.resolve()
            for sub in sorted(self.models_root.iterdir()):
                real = sub.resolve()
                if real.parent == root and (real / "config.json").is_file() and real not in found:
                    found.append(real)
        return found

    @property
    def demo_weights_dir(self) -> Path:
        """Where untrained demo weights are built, one folder per preset."""
        return self.workspace / "demo-weights"

    def runner_options(self) -> dict[str, Any]:
        """The runner's settings as plain ``Runner`` arguments (the runner reads no settings
        itself): ``Runner(**settings.runner_options(), preload=...)``."""
        return {
            "isolation": self.isolation,
            "workers": self.workers,
            "cancel_grace_s": self.cancel_grace_s,
            "ray_address": self.ray_address,
        }


_ENV = {
    "model": "DA3_MODEL",
    "model_dir": "DA3_MODEL_DIR",
    "models_root": "DA3_MODELS_ROOT",
    "workspace": "DA3_WORKSPACE",
    "device": "DA3_DEVICE",
    "isolation": "DA3_ISOLATION",
    "workers": "DA3_WORKERS",
    "ray_address": "DA3_RAY_ADDRESS",
    "duration_base_s": "DA3_DURATION_S",
    "duration_per_frame_s": "DA3_DURATION_PER_FRAME_S",
    "max_frames": "DA3_MAX_FRAMES",
    "max_chunked_frames": "DA3_MAX_CHUNKED_FRAMES",
    "max_upload_mb": "DA3_MAX_UPLOAD_MB",
    "max_pixels": "DA3_MAX_PIXELS",
    "workspace_max_age_h": "DA3_WORKSPACE_MAX_AGE_H",
    "workspace_max_gb": "DA3_WORKSPACE_MAX_GB",
    "cpu_threads": "DA3_CPU_THREADS",
    "cancel_grace_s": "DA3_CANCEL_GRACE_S",
    "abandon_after_s": "DA3_ABANDON_AFTER_S",
    "max_side": "DA3_MAX_SIDE",
    "cpu_precision": "DA3_CPU_PRECISION",
    "admins": "DA3_ADMINS",
    "memory_limit_mb": "DA3_MEMORY_LIMIT_MB",
}

# (minimum, maximum) for numeric settings.
_RANGES: dict[str, tuple[float, float]] = {
    "duration_base_s": (1, 24 * 3600),
    "duration_per_frame_s": (0, 3600),
    "max_frames": (1, 2000),
    "max_chunked_frames": (1, 100_000),
    "max_upload_mb": (1, 20_000),
    "max_pixels": (64 * 64, 500_000_000),
    "workspace_max_age_h": (0.01, 24 * 365),
    "workspace_max_gb": (0.01, 10_000),
    "cpu_threads": (0, 1024),
    "cancel_grace_s": (0, 600),
    "abandon_after_s": (2, 24 * 3600),
    "max_side": (64, 16384),
    "memory_limit_mb": (0, 100_000_000),
}
_CHOICES: dict[str, tuple[str, ...]] = {
    "device": DEVICES,
    "isolation": ("isolated", "ray", "inprocess"),
    "cpu_precision": ("auto", "fp32", "bf16"),
}


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read and validate every setting.

    Args:
        env: The environment to read; ``os.environ`` when None.

    Returns:
        The validated settings.

    Raises:
        ConfigError: A variable's value is not allowed; the message names it.
    """
    env = os.environ if env is None else env
    values: dict[str, Any] = {}  # field name -> its value, parsed to the field's type below
    defaults = Settings()
    for f in fields(Settings):
        var = _ENV[f.name]
        raw = env.get(var)
        if raw is None or raw.strip() == "":
            continue
        raw = raw.strip()
        default = getattr(defaults, f.name)
        if f.name in _CHOICES:
            if raw.lower() not in _CHOICES[f.name]:
                raise ConfigError(f"{var}={raw!r} is not allowed; use one of {', '.join(_CHOICES[f.name])}")
            values[f.name] = raw.lower()
        elif f.name == "model_dir":
            path = Path(raw).expanduser()
            if not path.is_dir():
                raise ConfigError(
                    f"{var}={raw!r} is not a folder; point it at a folder holding config.json and "
                    "model.safetensors (e.g. a download of depth-anything/DA3-SMALL), or unset it"
                )
            if not (path / "config.json").is_file():
                raise ConfigError(
                    f"{var}={raw!r} has no config.json; it must hold a DA3 checkpoint saved with save_pretrained"
                )
            values[f.name] = path.resolve()
        elif f.name == "models_root":
            path = Path(raw).expanduser()
            if not path.is_dir():
                raise ConfigError(
                    f"{var}={raw!r} is not a folder; point it at a folder of DA3 checkpoint folders, or unset it"
                )
            values[f.name] = path.resolve()
        elif f.name == "workers":
            if raw.lower() != "auto" and not (raw.isdigit() and 1 <= int(raw) <= 256):
                raise ConfigError(
                    f"{var}={raw!r} is not allowed; use auto (one worker per GPU) or a whole number from 1 to 256"
                )
            values[f.name] = raw.lower()
        elif f.name == "workspace":
            values[f.name] = Path(raw).expanduser()
        elif f.name == "admins":
            emails = tuple(dict.fromkeys(e.strip().lower() for e in raw.split(",") if e.strip()))
            bad = [e for e in emails if not _EMAIL.fullmatch(e)]
            if bad:
                raise ConfigError(
                    f"{var}={raw!r}: {', '.join(repr(e) for e in bad)} is not an email address; use emails "
                    "separated by commas (admin@example.com,ops@example.com), or unset it"
                )
            values[f.name] = emails
        elif isinstance(default, (int, float)):
            kind = int if isinstance(default, int) else float
            try:
                number = kind(raw)
            except ValueError:
                raise ConfigError(f"{var}={raw!r} is not a{'n integer' if kind is int else ' number'}") from None
            lo, hi = _RANGES[f.name]
            if not lo <= number <= hi:
                raise ConfigError(f"{var}={raw!r} is outside {lo:g}..{hi:g}")
            values[f.name] = number
        else:
            values[f.name] = raw
    if values.get("ray_address") and "isolation" not in values:
        values["isolation"] = "ray"
    if values.get("ray_address") and values["isolation"] != "ray":
        raise ConfigError(
            f"DA3_RAY_ADDRESS is set but DA3_ISOLATION={values['isolation']!r}; unset one of them (Ray runs isolated by itself)"
        )
    return Settings(**values)
