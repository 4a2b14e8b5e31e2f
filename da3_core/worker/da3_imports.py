"""DA3's `api` module without its exporters until one is used.

`depth_anything_3.api` imports `depth_anything_3.utils.export` for one name, `export`, which
it calls only when `inference()` is given an `export_dir` (we never pass one). That package
imports every exporter at its top: moviepy, pycolmap, trimesh, the Gaussian renderer. In a
worker that was 168 MB resident and about 1.4 s of CPU at every start (`python -X importtime`,
RSS before and after) for code a reconstruction never runs.

`import_api()` puts a stand-in for that package in `sys.modules` first: it has the real
package's path, so `depth_anything_3.utils.export.colmap` and the other submodules import as
usual (our COLMAP and Gaussian exports do), and it runs the real package's code the first time
a name it does not have is read or its `export` is called. Nothing of DA3 is changed or copied;
no import hook of Python's does this (`importlib.util.LazyLoader` loads on the first attribute
read, and `from ... import export` is one).
"""

from __future__ import annotations

import importlib
import importlib.machinery
import sys
import threading
import types
from typing import Any

EXPORT_PACKAGE = "depth_anything_3.utils.export"

_lock = threading.RLock()


class _DeferredPackage(types.ModuleType):
    """The exporters' package, its own code run at the first name it is asked for and lacks."""

    _da3_loaded = False

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name == "_da3_loaded":
            raise AttributeError(name)
        load(self)
        return self.__dict__[name] if name in self.__dict__ else super().__getattribute__(name)


def load(module: types.ModuleType) -> types.ModuleType:
    """Run the real package's `__init__` in `module` (once; later calls return at once)."""
    with _lock:
        if getattr(module, "_da3_loaded", True):
            return module
        module._da3_loaded = True  # type: ignore[attr-defined]  # set first: its own imports read it
        spec = module.__spec__
        assert spec is not None and spec.loader is not None
        try:
            spec.loader.exec_module(module)
        except BaseException:
            module._da3_loaded = False  # type: ignore[attr-defined]
            raise
    return module


def defer_exporters() -> None:
    """Put the stand-in in place, unless the package is imported already (then nothing to do)."""
    with _lock:
        if EXPORT_PACKAGE in sys.modules:
            return
        parent = importlib.import_module(EXPORT_PACKAGE.rpartition(".")[0])
        spec = importlib.machinery.PathFinder.find_spec(EXPORT_PACKAGE, list(parent.__path__))
        if spec is None or spec.loader is None or spec.submodule_search_locations is None:
            return  # another layout of DA3: import it as it is
        module = _DeferredPackage(EXPORT_PACKAGE)
        module.__spec__ = spec
        module.__loader__ = spec.loader
        module.__file__ = spec.origin
        module.__path__ = list(spec.submodule_search_locations)
        module.__package__ = EXPORT_PACKAGE

        def export(*args: Any, **kwargs: Any) -> Any:
            """DA3's `export`, its package loaded on the first call."""
            return load(module).export(*args, **kwargs)

        module.export = export  # type: ignore[attr-defined]
        sys.modules[EXPORT_PACKAGE] = module
        setattr(parent, EXPORT_PACKAGE.rpartition(".")[2], module)


def import_api() -> types.ModuleType:
    """`depth_anything_3.api`, its exporters deferred."""
    defer_exporters()
    return importlib.import_module("depth_anything_3.api")
