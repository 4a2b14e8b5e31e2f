"""Turn a task's return value into CPU-only data the parent can unpickle without torch.

Two layers, both in the worker:

1. `to_cpu` walks the value (dataclasses, dicts incl. addict, lists, tuples, namedtuples)
   and converts every torch tensor to a numpy array; a tensor that cannot be read back
   (``meta``, or anything whose ``.cpu()`` fails) is refused with its path, e.g.
   ``gaussians.means``. Objects of torch / DA3 classes become plain containers.
2. `CPUOnlyPickler` (used by `dumps_cpu_only` and `da3_core.runner.shm.pack`) refuses any
   object whose class lives in a forbidden package (`da3_core.runner.protocol.FORBIDDEN_PACKAGES`), so nothing that would import torch (or
   initialise CUDA) in the parent can slip through, whatever its depth.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import pickle
import sys
import types
from typing import Any

import numpy as np

from da3_core.runner.protocol import is_forbidden_module

log = logging.getLogger(__name__)


class NotCPUDataError(TypeError):
    """A value in a task result cannot be turned into CPU data. ``path`` names it."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        super().__init__(f"result field {path or '<result>'} cannot be sent to the caller: {reason}")
        # The caller gets this as an error (logged in the parent with the traceback).
        log.debug("refused result field %s: %s", path or "<result>", reason)


def _join(path: str, part: str) -> str:
    if part.startswith("["):
        return f"{path}{part}"
    return f"{path}.{part}" if path else part


def to_cpu(value: Any, path: str = "") -> Any:
    """Return ``value`` with every torch tensor, at any depth, replaced by a numpy array.

    Args:
        value: A task's return value.
        path: Where ``value`` sits, for error messages (``""`` for the root).

    Returns:
        The converted value (containers are rebuilt; numpy arrays and plain data are kept).

    Raises:
        NotCPUDataError: A tensor has no readable data (e.g. on the ``meta`` device) or a
            conversion failed; the message names its path.
    """
    torch = sys.modules.get("torch")
    return _convert(value, path, torch, {})


def _tensor_to_numpy(t: Any, path: str, torch: Any) -> np.ndarray:
    if t.device.type == "meta":
        raise NotCPUDataError(path, "it is a tensor on the 'meta' device, which holds no data")
    try:
        t = t.detach()
        if t.is_sparse:
            t = t.to_dense()
        if t.is_quantized:
            t = t.dequantize()
        t = t.cpu()
        if t.dtype == torch.bfloat16:  # numpy has no bfloat16
            t = t.float()
        return t.numpy().copy() if not t.is_contiguous() else t.numpy()
    except Exception as exc:  # noqa: BLE001 - any failure is reported with the path
        raise NotCPUDataError(path, f"converting the {t.device.type} tensor failed: {exc}") from exc


def _convert(value: Any, path: str, torch: Any, memo: dict[int, Any]) -> Any:
    if value is None or isinstance(value, (bool, int, float, complex, str, bytes, np.ndarray, np.generic)):
        return value
    key = id(value)
    if key in memo:
        return memo[key]
    out: Any
    if torch is not None and isinstance(value, torch.Tensor):
        out = _tensor_to_numpy(value, path, torch)
    elif torch is not None and isinstance(value, (torch.dtype, torch.device)):
        out = str(value)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = _convert_dataclass(value, path, torch, memo)
    elif isinstance(value, dict):
        items = {
            k: _convert(v, _join(path, f"[{k!r}]" if not isinstance(k, str) else k), torch, memo)
            for k, v in value.items()
        }
        out = items if type(value) is dict or is_forbidden_module(type(value).__module__) else _rebuild(value, items)
    elif isinstance(value, tuple):
        elems = [_convert(v, _join(path, f"[{i}]"), torch, memo) for i, v in enumerate(value)]
        if hasattr(value, "_fields") and not is_forbidden_module(type(value).__module__):
            out = type(value)(*elems)
        else:
            out = tuple(elems)
    elif isinstance(value, list):
        out = [_convert(v, _join(path, f"[{i}]"), torch, memo) for i, v in enumerate(value)]
    elif isinstance(value, (set, frozenset)):
        out = type(value)(_convert(v, _join(path, "{}"), torch, memo) for v in value)
    else:
        out = value  # left to the pickler's check in dumps_cpu_only
    memo[key] = out
    return out


def _convert_dataclass(value: Any, path: str, torch: Any, memo: dict[int, Any]) -> Any:
    fields = {
        f.name: _convert(getattr(value, f.name), _join(path, f.name), torch, memo) for f in dataclasses.fields(value)
    }
    if is_forbidden_module(type(value).__module__):
        # e.g. depth_anything_3.specs.Prediction: its class cannot be unpickled without torch.
        return fields
    init_fields = {f.name for f in dataclasses.fields(value) if f.init}
    try:
        out = dataclasses.replace(value, **{k: v for k, v in fields.items() if k in init_fields})
    except Exception:  # noqa: BLE001 - validation in __post_init__ may reject; copy field by field
        out = object.__new__(type(value))
        for k, v in fields.items():
            object.__setattr__(out, k, v)
        return out
    for k, v in fields.items():
        if k not in init_fields:
            object.__setattr__(out, k, v)
    return out


def _rebuild(value: dict, items: dict) -> dict:
    # The same mapping type where it can be rebuilt: from its items in one go (read-only
    # mappings refuse update()), else empty and updated (e.g. defaultdict), else a plain dict.
    try:
        return type(value)(items)
    except Exception:  # noqa: BLE001 - its constructor takes no items: try the next way
        pass
    try:
        out = type(value)()
        out.update(items)
        return out
    except Exception:  # noqa: BLE001 - an exotic mapping type: a plain dict carries the data
        return items


class CPUOnlyPickler(pickle.Pickler):
    """Refuses objects whose class (or which, being a class or function) lives in a forbidden package."""

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, (type, types.FunctionType, types.BuiltinFunctionType, types.ModuleType)):
            module = getattr(obj, "__module__", None) or getattr(obj, "__name__", None)
        else:
            module = type(obj).__module__
        if module is not None and is_forbidden_module(module):
            raise NotCPUDataError(
                "",
                f"it contains a {module}.{getattr(type(obj), '__qualname__', type(obj).__name__)} object, "
                f"which the caller could only unpickle by importing {module.split('.')[0]}",
            )
        return NotImplemented


def dumps_cpu_only(value: Any) -> bytes:
    """Pickle ``value`` (protocol 5), refusing anything that references a forbidden package.

    Raises:
        NotCPUDataError: Something in ``value`` belongs to torch, DA3 or a GPU library.
        pickle.PicklingError / TypeError: ``value`` cannot be pickled at all.
    """
    buf = io.BytesIO()
    CPUOnlyPickler(buf, protocol=5).dump(value)
    return buf.getvalue()
