"""Task import paths (``"package.module:qualname"``): the one place that parses and resolves them.

The parent names tasks by path (`da3_core.runner.GPUFunction.task`, unpickling a `GPUFunction`)
and the worker imports them by path (`da3_core.runner.inside.loop.resolve_task`); both use this
module so the two sides can never disagree on what a path means. Torch-free: importing a
task module must not import torch either (task bodies import heavy things lazily).
"""

from __future__ import annotations

import importlib
from typing import Any


def split_task_path(path: str) -> tuple[str, str]:
    """Split ``"package.module:qualname"`` into its module and qualified name.

    Raises:
        ValueError: ``path`` lacks either part.
    """
    module_name, _, qualname = str(path).partition(":")
    if not module_name or not qualname:
        raise ValueError(f"task {path!r} must look like 'package.module:function'")
    return module_name, qualname


def resolve_task_path(path: str) -> Any:
    """Import the module named by ``path`` and return the object at its qualified name.

    Nested names (``"mod:Class.method"``) are followed attribute by attribute. The object is
    returned as found: a `da3_core.runner.GPUFunction` stays one (the worker unwraps it itself).

    Raises:
        ValueError: ``path`` is malformed.
        ImportError / AttributeError: The module or a name in it does not exist.
    """
    module_name, qualname = split_task_path(path)
    obj: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj
