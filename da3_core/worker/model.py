"""Model loading inside the worker: device choice, weights resolution and `_MODEL_CACHE`.

The model lives in a module-global of the worker process (never on a parent-side object):
that is the ZeroGPU fix. One model is kept at a time; asking for another frees the first
(two large presets do not fit on most GPUs together).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

# DA3 prints an INFO line per stage of every run; keep the server log to warnings unless asked.
os.environ.setdefault("DA3_LOG_LEVEL", "WARN")

import torch  # noqa: E402
import tqdm  # noqa: E402

from da3_core.contract import ModelSpec, ModelUnavailableError  # noqa: E402
from da3_core.presets import PRESETS_BY_NAME, preset_for  # noqa: E402
from da3_core.worker import loop  # noqa: E402

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
        from depth_anything_3.api import DepthAnything3

        load_kwargs: dict[str, Any] = {}
        if spec.kind == "hub" and not hub_reachable():
            # Without this the hub client retries for ~25 s before falling back to its cache.
            if not _in_hub_cache(spec.ref):
                raise _unavailable(spec, ConnectionError(f"the hub ({_hub_host()}) cannot be reached and the weights are not in the local cache"))
            load_kwargs["local_files_only"] = True
        try:
            model = DepthAnything3.from_pretrained(folder_or_id, **load_kwargs)
        except Exception as exc:  # noqa: BLE001 - translated into a message with the ways on
            raise _unavailable(spec, exc) from exc
        model = model.to(device).eval()
        model.device = torch.device(device)
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
    cfg = Path(location) / "config.json"
    if cfg.is_file():
        try:
            return str(json.loads(cfg.read_text())["model_name"])
        except Exception:  # noqa: BLE001
            pass
    preset = preset_for(spec.ref)
    return preset.name if preset else "unknown"


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
        raise ModelUnavailableError(f"Unknown DA3 preset {preset!r} for demo weights; use one of {', '.join(PRESETS_BY_NAME)}")
    folder = Path(demo_root) / preset
    if (folder / "model.safetensors").is_file() and (folder / "config.json").is_file():
        return folder
    from depth_anything_3.api import DepthAnything3

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
    }
    if torch.cuda.is_available():
        state["cuda_device"] = torch.cuda.get_device_name(0)
        state["cuda_memory_allocated_mb"] = torch.cuda.memory_allocated() / 2**20
        state["cuda_memory_reserved_mb"] = torch.cuda.memory_reserved() / 2**20
    return state


loop.STATE_PROVIDERS.append(cache_state)
