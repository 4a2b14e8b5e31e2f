"""Model loading inside the worker: device choice, weights resolution and `_MODEL_CACHE`.

The model lives in a module-global of the worker process (never on a parent-side object):
that is the ZeroGPU fix. One model is kept at a time; asking for another frees the first
(two large presets do not fit on most GPUs together).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

# DA3 prints an INFO line per stage of every run; keep the server log to warnings unless asked.
os.environ.setdefault("DA3_LOG_LEVEL", "WARN")

import torch  # noqa: E402 - after the DA3_LOG_LEVEL default
import tqdm  # noqa: E402 - after the DA3_LOG_LEVEL default

from da3_core.contract import ModelSpec, ModelUnavailableError  # noqa: E402 - after the DA3_LOG_LEVEL default
from da3_core.presets import PRESETS_BY_NAME, preset_for, preset_name_in_folder  # noqa: E402 - after the DA3_LOG_LEVEL default
from da3_core.runner.context import check_cancelled  # noqa: E402 - after the DA3_LOG_LEVEL default
from da3_core.runner.inside import calls  # noqa: E402 - after the DA3_LOG_LEVEL default
from da3_core.worker import da3_imports  # noqa: E402 - after the DA3_LOG_LEVEL default

log = logging.getLogger(__name__)

# DA3's preprocessing draws tqdm bars; tqdm's default lock is a multiprocessing semaphore in
# /dev/shm, leaked whenever the worker is killed. A thread lock does the same job here.
tqdm.tqdm.set_lock(threading.RLock())

# (model key, device) -> loaded DepthAnything3. Module-global on purpose (see module doc).
_MODEL_CACHE: dict[tuple[str, str], Any] = {}
_PRESET_OF: dict[tuple[str, str], str] = {}
# How many times weights were actually loaded in this process (tests read it through a task).
LOAD_COUNT = 0
_lock = threading.Lock()


def resolve_device(preference: str = "auto") -> str:
    """``"cuda"`` if available, then ``"mps"``, then ``"cpu"``; or the one asked for.

    Raises:
        ValueError: The device asked for is not available here.
    """
    if preference == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if preference == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but no CUDA GPU is visible to the worker; choose 'auto' or 'cpu'")
    if preference == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError("device 'mps' was asked for but Apple MPS is not available; choose 'auto' or 'cpu'")
    return preference


_MALLOC_TUNED = False


def configure_cpu_threads(threads: int = 0) -> int:
    """Set up the CPU path: ``threads`` torch threads (0: every core this process may use),
    and glibc malloc tuned to keep large freed blocks. Returns the thread count.

    Why the malloc tuning: a forward pass allocates and frees gigabytes; by default glibc
    returns those blocks to the OS and faults them in again on the next call (about 240,000
    page faults per 4-frame call at 504 here). Keeping them cuts that about 40x and the
    forward time by 10-15 %, for about 150 MB more resident memory at peak.
    """
    global _MALLOC_TUNED
    if threads <= 0:
        threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    torch.set_num_threads(threads)
    if not _MALLOC_TUNED:
        _MALLOC_TUNED = True
        try:
            import ctypes

            libc = ctypes.CDLL("libc.so.6")
            m_trim_threshold, m_mmap_threshold = -1, -3  # mallopt parameters from <malloc.h>
            libc.mallopt(m_mmap_threshold, 1 << 30)
            libc.mallopt(m_trim_threshold, 8 << 30)
        except OSError:
            pass  # not glibc (macOS, musl): the default allocator is used
    return threads


def model_key(spec: ModelSpec) -> str:
    return f"{spec.kind}:{spec.ref}"


def get_model(spec: ModelSpec, device: str, demo_root: Path) -> tuple[Any, str]:
    """Return the cached model for ``spec`` on ``device``, loading it at most once.

    Args:
        spec: Which weights.
        device: A resolved device (``cuda``, ``mps``, ``cpu``).
        demo_root: Folder where demo weights are built (``<workspace>/demo-weights``).

    Returns:
        (model, preset name).

    Raises:
        ModelUnavailableError: The weights cannot be found; the message says what to do.
    """
    global LOAD_COUNT
    key = (model_key(spec), device)
    with _lock:
        if key in _MODEL_CACHE:
            return _MODEL_CACHE[key], _PRESET_OF[key]
        _evict_all()
        folder_or_id = _weights_location(spec, demo_root)
        DepthAnything3 = da3_imports.import_api().DepthAnything3  # noqa: N806 - DA3's class name

        load_kwargs: dict[str, Any] = {}
        if spec.kind == "hub" and not hub_reachable():
            # Without this the hub client retries for ~25 s before falling back to its cache.
            if not _in_hub_cache(spec.ref):
                raise _unavailable(
                    spec,
                    ConnectionError(
                        f"the hub ({_hub_host()}) cannot be reached and the weights are not in the local cache"
                    ),
                )
            load_kwargs["local_files_only"] = True
        try:
            model = DepthAnything3.from_pretrained(folder_or_id, **load_kwargs)
        except Exception as exc:  # noqa: BLE001 - translated into a message with the ways on
            log.debug(
                "loading %s from %s failed", spec.describe(), folder_or_id, exc_info=True
            )  # raised with the ways on
            raise _unavailable(spec, exc) from exc
        model = model.to(device).eval()
        model.device = torch.device(device)
        install_cancel_checks(model)
        LOAD_COUNT += 1
        preset = getattr(model, "model_name", None) or _preset_name(spec, folder_or_id)
        _MODEL_CACHE[key] = model
        _PRESET_OF[key] = preset
        return model, preset


def _hub_host() -> str:
    from urllib.parse import urlparse

    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    return urlparse(endpoint).hostname or "huggingface.co"


_reachable_cache: tuple[float, bool] | None = None


def hub_reachable(timeout_s: float = 3.0) -> bool:
    """True when the model hub answers a TCP connection (cached for a minute)."""
    global _reachable_cache
    if os.environ.get("HF_HUB_OFFLINE", "").strip() not in ("", "0"):
        return False
    now = time.monotonic()
    if _reachable_cache is not None and now - _reachable_cache[0] < 60:
        return _reachable_cache[1]
    import socket

    try:
        socket.create_connection((_hub_host(), 443), timeout=timeout_s).close()
        ok = True
    except OSError:
        ok = False
    _reachable_cache = (now, ok)
    return ok


def _in_hub_cache(repo_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, "model.safetensors")
    return isinstance(found, str)


def _evict_all() -> None:
    _MODEL_CACHE.clear()
    _PRESET_OF.clear()
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _preset_name(spec: ModelSpec, location: str) -> str:
    """The preset of the loaded weights: the folder's config.json, else the hub id's preset."""
    name = preset_name_in_folder(location)
    if name:
        return name
    preset = preset_for(spec.ref)
    return preset.name if preset else "unknown"


# --------------------------------------------------------------------------------------
# Cancellation inside the forward pass
# --------------------------------------------------------------------------------------


def _cancel_pre_hook(module: torch.nn.Module, args: Any) -> None:
    # Raises CancelledInWorker when the caller gave up; a no-op outside a call. Returning
    # None leaves the block's inputs untouched.
    check_cancelled()


def install_cancel_checks(model: torch.nn.Module) -> int:
    """Make a cancel stop the forward pass at the next network block; return the hook count.

    DA3's forward has no checkpoint of its own, so without this a cancel waits for the whole
    pass (then the runner's grace period kills the worker and the model is loaded again).
    A forward pre-hook calls `check_cancelled` before every transformer block (each
    ``blocks`` ModuleList: one backbone, or two in the nested preset) and before every
    convolution (the DPT heads, run up to full resolution, take a third of the pass on CPU
    and have no transformer block). A check costs about a microsecond when nothing is
    cancelled. The hooks hold no state, so an exception raised from one leaves the model as
    it was (``with`` blocks in DA3 close its autocast and inference mode on the way out);
    they are registered once per loaded model.

    Args:
        model: A loaded ``DepthAnything3``.

    Returns:
        How many hooks the model carries.
    """
    existing = getattr(model, "_da3_cancel_hooks", None)
    if existing is not None:
        return len(existing)
    handles: list[torch.utils.hooks.RemovableHandle] = []
    for name, module in model.named_modules():
        if name.rsplit(".", 1)[-1] == "blocks" and isinstance(module, torch.nn.ModuleList):
            handles.extend(block.register_forward_pre_hook(_cancel_pre_hook) for block in module)
        elif isinstance(module, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
            handles.append(module.register_forward_pre_hook(_cancel_pre_hook))
    # A plain attribute (not a buffer or parameter): nothing of it reaches state_dict.
    object.__setattr__(model, "_da3_cancel_hooks", handles)
    if not any(name.endswith("blocks") for name, _ in model.named_modules()):
        log.warning("no transformer blocks found in %s: a cancel waits for the convolutions", type(model).__name__)
    return len(handles)


# --------------------------------------------------------------------------------------
# CPU precision
# --------------------------------------------------------------------------------------

CPU_PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16")
# /proc/cpuinfo flags of hardware bfloat16 arithmetic (AVX512-BF16 on Cooper Lake, Zen 4 and
# later; AMX-BF16 on Sapphire Rapids and later). Without them bf16 is emulated and slower.
BF16_CPU_FLAGS: tuple[str, ...] = ("avx512_bf16", "amx_bf16")
_auto_cpu_precision: tuple[str, str] | None = None


def cpu_bf16_flags(cpuinfo: str | None = None) -> list[str]:
    """The hardware bfloat16 flags this CPU reports (read from ``/proc/cpuinfo``).

    Args:
        cpuinfo: The text of ``/proc/cpuinfo``; read from the file when None.

    Returns:
        The flags of `BF16_CPU_FLAGS` present, sorted; empty when there are none or when
        ``/proc/cpuinfo`` cannot be read (not Linux).
    """
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return []
    found: set[str] = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            found.update(flag for flag in value.split() if flag in BF16_CPU_FLAGS)
    return sorted(found)


def resolve_cpu_precision(requested: str = "auto") -> tuple[str, str]:
    """The precision of the CPU forward pass: ``"fp32"`` or ``"bf16"``, and why.

    ``auto`` defers to ``DA3_CPU_PRECISION`` when that is ``fp32`` or ``bf16``; otherwise it
    picks bfloat16 autocast when the CPU has hardware bfloat16 (`cpu_bf16_flags`) and
    float32 when not. The hardware answer is read once per worker.

    Args:
        requested: ``"auto"``, ``"fp32"`` or ``"bf16"`` (case-insensitive).

    Returns:
        (precision, reason), e.g. ``("fp32", "auto: no avx512_bf16/amx_bf16 in /proc/cpuinfo")``.

    Raises:
        ValueError: ``requested`` (or ``DA3_CPU_PRECISION``) is not one of `CPU_PRECISIONS`.
    """
    global _auto_cpu_precision
    choice = (requested or "auto").strip().lower()
    if choice not in CPU_PRECISIONS:
        raise ValueError(f"cpu_precision={requested!r} is not allowed; use one of {', '.join(CPU_PRECISIONS)}")
    if choice != "auto":
        return choice, "asked for"
    from da3_core.config import ConfigError, load_settings

    try:
        # Only this variable: a bad value elsewhere is not this function's business.
        setting = load_settings({"DA3_CPU_PRECISION": os.environ.get("DA3_CPU_PRECISION", "")}).cpu_precision
    except ConfigError as exc:
        raise ValueError(str(exc)) from None
    if setting != "auto":
        return setting, f"DA3_CPU_PRECISION={setting}"
    if _auto_cpu_precision is None:
        flags = cpu_bf16_flags()
        if flags:
            _auto_cpu_precision = ("bf16", f"auto: CPU has {', '.join(flags)}")
        else:
            _auto_cpu_precision = ("fp32", f"auto: no {'/'.join(BF16_CPU_FLAGS)} in /proc/cpuinfo")
    return _auto_cpu_precision


def _weights_location(spec: ModelSpec, demo_root: Path) -> str:
    if spec.kind == "hub":
        return spec.ref
    if spec.kind == "local":
        folder = Path(spec.ref).expanduser()
        if not folder.is_dir():
            raise ModelUnavailableError(
                f"Model folder {folder} does not exist. Point DA3_MODEL_DIR (or the model field) at a folder "
                "holding config.json and model.safetensors, or use untrained demo weights."
            )
        missing = [n for n in ("config.json", "model.safetensors") if not (folder / n).is_file()]
        if missing:
            raise ModelUnavailableError(
                f"Model folder {folder} lacks {', '.join(missing)}. It must hold a checkpoint saved with "
                "DepthAnything3.save_pretrained (a hub download of depth-anything/DA3-* works)."
            )
        return str(folder)
    return str(ensure_demo_weights(spec.ref, demo_root))


def ensure_demo_weights(preset: str, demo_root: Path) -> Path:
    """Build untrained weights for ``preset`` under ``demo_root/<preset>`` once; return the folder.

    The folder is written atomically (built beside it, then renamed), so a crash never leaves
    a half-written checkpoint that would load as garbage.

    Raises:
        ModelUnavailableError: ``preset`` is not a DA3 preset name.
    """
    if preset not in PRESETS_BY_NAME:
        raise ModelUnavailableError(
            f"Unknown DA3 preset {preset!r} for demo weights; use one of {', '.join(PRESETS_BY_NAME)}"
        )
    folder = Path(demo_root) / preset
    if (folder / "model.safetensors").is_file() and (folder / "config.json").is_file():
        return folder
    DepthAnything3 = da3_imports.import_api().DepthAnything3  # noqa: N806 - DA3's class name

    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{preset}-", dir=folder.parent))
    try:
        torch.manual_seed(0)  # the same meaningless weights every time
        DepthAnything3(model_name=preset).save_pretrained(str(tmp))
        (tmp / "UNTRAINED.txt").write_text(
            f"Untrained {preset} weights made by the DA3 dashboard on {time.strftime('%Y-%m-%d %H:%M:%S')}.\n"
            "They exercise the real pipeline; the geometry they produce is meaningless.\n"
        )
        try:
            tmp.rename(folder)
        except OSError:
            if not (folder / "model.safetensors").is_file():
                raise
            # Another process built it first; theirs is as good as ours.
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _unavailable(spec: ModelSpec, exc: BaseException) -> ModelUnavailableError:
    reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
    if spec.kind == "hub":
        preset = preset_for(spec.ref)
        demo = preset.name if preset else "da3-small"
        return ModelUnavailableError(
            f"Could not load model {spec.ref} from the Hugging Face hub ({reason}). This machine may have no "
            f"internet access. Ways on: (1) download the weights elsewhere and set DA3_MODEL_DIR to that folder "
            f"(or choose 'Local folder' in the app); (2) use untrained demo weights built from the {demo} preset "
            f"(button in the app, or `make demo-weights`); their geometry is meaningless but every feature works."
        )
    return ModelUnavailableError(f"Could not load {spec.describe()} ({reason}).")


def cache_state() -> dict[str, Any]:
    """What the Runner page shows about models: loaded keys, load count, device."""
    state: dict[str, Any] = {
        "models_loaded": [f"{k} on {d}" for (k, d) in _MODEL_CACHE],
        "model_loads": LOAD_COUNT,
        "torch_version": str(torch.__version__),
        "cuda_available": torch.cuda.is_available(),
        "torch_threads": torch.get_num_threads(),
        "cpu_precision_auto": resolve_cpu_precision("auto")[0],
        "cpu_precision_reason": resolve_cpu_precision("auto")[1],
    }
    if torch.cuda.is_available():
        state["cuda_device"] = torch.cuda.get_device_name(0)
        state["cuda_memory_allocated_mb"] = torch.cuda.memory_allocated() / 2**20
        state["cuda_memory_reserved_mb"] = torch.cuda.memory_reserved() / 2**20
    return state


calls.STATE_PROVIDERS.append(cache_state)
