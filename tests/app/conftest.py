"""In-process AppTest set-up: one app environment (settings, workspace, runner) per pytest
session, a guard that torch never enters the pytest process, and helpers that drive pages
only through widgets and files on disk.

Settings are read once per process (`da3_core.app.holder.get_settings` is ``st.cache_resource``):
`app_env` sets ``DA3_*`` in ``os.environ`` only while it reads them, so no variable leaks
into other test modules; when the last AppTest has run it closes the app's runner (its
worker), resets the default runner and clears the app's resource caches.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.app.kit import ENTRY, HEAVY, environ, heavy
from tests.conftest import ROOT

# Variables the app reads at its first page run; set only while `app_env` reads them.
APP_ENV_VARS = ("DA3_WORKSPACE", "DA3_ISOLATION", "DA3_MODEL", "DA3_WORKSPACE_MAX_GB", "DA3_MAX_FRAMES")


class HeavyImportGuard:
    """A `sys.meta_path` entry that records every attempt to import a heavy module, with the
    file that asked (the import itself goes on, as it would in production: the checks on
    ``sys.modules`` then fail)."""

    def __init__(self) -> None:
        self.attempts: list[str] = []

    def find_spec(self, name, path=None, target=None):  # noqa: ANN001 - importlib protocol
        if name.split(".")[0] in HEAVY:
            caller = next(
                (
                    f.filename
                    for f in __import__("traceback").extract_stack()[::-1]
                    if "importlib" not in f.filename and f.filename != __file__
                ),
                "?",
            )
            self.attempts.append(f"{name} (from {caller})")
        return None


@dataclass
class AppEnv:
    """The in-process app: its settings (read once) and its workspace."""

    settings: object
    workspace: Path
    guard: HeavyImportGuard
    values: dict  # the variables the settings were read from
    used: bool = False  # an AppTest ran, so the app's runner exists
    closed: bool = False

    def new_session(self) -> tuple[str, Path]:
        """A fresh session folder (the app finds it from ``?s=<id>``)."""
        from da3_core.runs import workspace

        path = workspace.new_session(self.workspace)
        return path.name, path

    @contextmanager
    def settings_from(self, overrides: dict[str, str]) -> Iterator[None]:
        """The app reads its settings again, from these variables, until the block ends; then
        the session's settings are read back (the runner keeps the settings it started with)."""
        from da3_core.app import holder

        holder.get_settings.clear()
        try:
            with environ({**self.values, **overrides}):
                yield
        finally:
            holder.get_settings.clear()
            with environ(self.values):
                assert holder.get_settings() == self.settings

    def close(self) -> None:
        """Stop the app's worker and forget the app's caches (idempotent)."""
        if self.closed:
            return
        self.closed = True
        from da3_core import runner
        from da3_core.app import holder

        try:
            if self.used:
                holder.get_runner().close()
        finally:
            runner.set_default_runner(None)
            holder.get_holder.clear()
            holder.get_settings.clear()
            if self.guard in sys.meta_path:
                sys.meta_path.remove(self.guard)


_APP_ENV: AppEnv | None = None


@pytest.fixture(scope="session")
def app_env(workspace) -> Iterator[AppEnv]:
    """Settings for every in-process AppTest of the session, read once.

    The workspace is the session's (`tests.conftest.workspace`), so untrained demo weights
    are built once for the app tests and the real-worker tests alike.
    """
    global _APP_ENV
    already = heavy()
    if already:
        pytest.fail(
            f"{already[:3]} were imported into the pytest process before the AppTests; the AppTests must run "
            "first (tests/conftest.py orders them so) to prove the Streamlit process stays torch-free",
            pytrace=False,
        )
    from da3_core.app import holder

    guard = HeavyImportGuard()
    sys.meta_path.insert(0, guard)
    values = {
        "DA3_WORKSPACE": str(workspace),
        "DA3_ISOLATION": "isolated",
        "DA3_MODEL": "auto",
        "DA3_WORKSPACE_MAX_GB": "1000",
        "DA3_MAX_FRAMES": "64",
    }
    assert set(values) == set(APP_ENV_VARS)
    holder.get_settings.clear()
    holder.get_holder.clear()
    with environ(values):
        settings = holder.get_settings()  # cached for the process: the pages get these
    assert settings.workspace == workspace
    env = AppEnv(settings, workspace, guard, values)
    _APP_ENV = env
    try:
        yield env
    finally:
        env.close()
        _APP_ENV = None


@pytest.fixture(autouse=True)
def _torch_stays_out():
    """Every AppTest: no heavy module in the pytest (Streamlit) process before or after."""
    assert heavy() == []
    yield
    assert heavy() == [], "a page imported torch/DA3 into the Streamlit process"
    if _APP_ENV is not None:
        assert _APP_ENV.guard.attempts == [], _APP_ENV.guard.attempts


def pytest_runtest_teardown(item, nextitem):
    """After the last AppTest, stop the app's worker at once (not at the session's end)."""
    app_dir = Path(__file__).parent
    if _APP_ENV is not None and (nextitem is None or app_dir not in Path(str(nextitem.path)).parents):
        _APP_ENV.close()


@pytest.fixture
def new_app(app_env):
    """Make AppTests of the app's entry page, optionally opened on session ``sid`` (``?s=``)."""
    from streamlit.testing.v1 import AppTest

    def make(sid: str | None = None, timeout: float = 60):
        at = AppTest.from_file(str(ROOT / ENTRY), default_timeout=timeout)
        if sid is not None:
            at.query_params["s"] = sid
        app_env.used = True
        return at

    return make
