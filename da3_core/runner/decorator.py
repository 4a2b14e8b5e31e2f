"""``@gpu(duration=...)``: a module-level function that runs in a worker when called.

Typed with ``ParamSpec``: a decorated function keeps its signature for callers and type
checkers (its return type too: the worker's CPU copy of the value).
"""

from __future__ import annotations

import datetime as _dt
import functools
import inspect
import threading
from collections.abc import Callable
from typing import Any, Generic, ParamSpec, TypeVar, overload

from da3_core.runner.dispatcher import Runner
from da3_core.runner.jobs import Event, Job, wait_for
from da3_core.runner.taskpath import resolve_task_path

P = ParamSpec("P")
R = TypeVar("R")

Duration = int | float | _dt.timedelta | Callable[..., int | float | _dt.timedelta]

_default_runner: Runner | None = None
_default_factory: Callable[[], Runner] = Runner
_default_lock = threading.Lock()


def set_default_runner(runner: Runner | None) -> None:
    """Make ``runner`` the one that decorated tasks use when called without ``runner=``."""
    global _default_runner
    with _default_lock:
        _default_runner = runner


def set_default_runner_factory(factory: Callable[[], Runner] | None) -> None:
    """How `default_runner` makes the default runner when there is none (the application
    passes one that reads its settings); None: ``Runner()`` with its defaults."""
    global _default_factory
    with _default_lock:
        _default_factory = factory or Runner


def default_runner() -> Runner:
    """The process's default runner: the one given to `set_default_runner`, else one made on
    first use by the factory of `set_default_runner_factory` (``Runner()`` unless set)."""
    global _default_runner
    with _default_lock:
        if _default_runner is None or _default_runner._closed:
            _default_runner = _default_factory()
        return _default_runner


class GPUFunction(Generic[P, R]):
    """A task function that runs in a worker. Made by `gpu`; see there."""

    def __init__(self, func: Callable[P, R], duration: Duration) -> None:
        if "<locals>" in func.__qualname__ or func.__name__ == "<lambda>":
            raise TypeError(
                f"@gpu needs a module-level function (the worker imports it by name); {func.__qualname__} is not"
            )
        functools.update_wrapper(self, func)
        self.__gpu_wrapped__ = func
        self.task = f"{func.__module__}:{func.__qualname__}"
        self.duration = duration
        self._signature = inspect.signature(func)

    def budget_s(self, *args: Any, **kwargs: Any) -> float:
        """The call's budget in seconds: ``duration`` itself, or its value for these arguments."""
        d = self.duration(*args, **kwargs) if callable(self.duration) else self.duration
        if isinstance(d, _dt.timedelta):
            d = d.total_seconds()
        return float(d)

    def submit(self, *args: P.args, **kwargs: P.kwargs) -> Job:
        """Queue the call and return its `Job`. ``runner=`` (keyword) picks the runner
        (default: `default_runner`)."""
        runner: Runner | None = kwargs.pop("runner", None)  # type: ignore[assignment]  # rides in P.kwargs: ParamSpec cannot declare it
        runner = runner or default_runner()
        return runner.submit(
            self.task, args, kwargs, duration=self.budget_s(*args, **kwargs), signature=self._signature
        )

    def call(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run and wait. ``runner=`` picks the runner, ``on_event=`` receives the call's
        events; the call is cancelled if the wait is interrupted."""
        on_event: Callable[[Event], None] | None = kwargs.pop("on_event", None)  # type: ignore[assignment]  # as runner= in submit
        return wait_for(self.submit(*args, **kwargs), on_event)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.call(*args, **kwargs)

    def __reduce__(self) -> Any:
        # Pickled by reference, like a plain function (unpickles as this GPUFunction).
        return (resolve_task_path, (self.task,))


@overload
def gpu(func: Callable[P, R], *, duration: Duration = 60) -> GPUFunction[P, R]: ...


@overload
def gpu(func: None = None, *, duration: Duration = 60) -> Callable[[Callable[P, R]], GPUFunction[P, R]]: ...


def gpu(func: Callable[P, R] | None = None, *, duration: Duration = 60) -> Any:
    """Run the decorated function in a worker, like ``spaces.GPU(duration=...)``.

    ``duration`` is the call's budget once it starts: seconds (int, float or timedelta) or a
    callable taking the call's arguments and returning one. Unlike ``spaces.GPU`` the budget
    is enforced: the worker is killed and the caller gets `TaskTimeoutError`.

    The function must live at module level in a module the parent can import without
    torch (import heavy things inside the function). Call it plainly (``f(x)``), or with
    ``f.call(x, runner=..., on_event=...)`` / ``f.submit(x, runner=...)``.
    """
    if func is not None:
        return GPUFunction(func, duration)
    return lambda f: GPUFunction(f, duration)
