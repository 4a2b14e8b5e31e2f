"""The one place that ties Streamlit to the runner: `st.cache_resource` holders.

One runner per server (a pool of worker processes, one per GPU, or Ray actors), shared by
every session, and the run service that owns every job on it. Nothing here
holds a model or a tensor: the model lives in the worker's `_MODEL_CACHE`.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import streamlit as st

from da3_core import logs
from da3_core.config import ConfigError, Settings, load_settings
from da3_core.runner import Job, Runner, set_default_runner
from da3_core.runs.service import RunService

log = logging.getLogger(__name__)


@st.cache_resource(show_spinner=False)
def get_settings() -> Settings:
    """The validated settings, read once per server."""
    logs.setup()
    try:
        return load_settings()
    except ConfigError:
        log.exception("bad configuration")
        raise


def settings_or_stop() -> Settings:
    """The settings, or a clear error on the page and a stop when a variable is bad."""
    try:
        return get_settings()
    except ConfigError as exc:
        st.error(f"Configuration error: {exc}")
        st.stop()
        raise  # unreachable: st.stop raises


@dataclass
class Janitor:
    """Applies the workspace clean-up policy (age and total size) at start and then at most
    every ``every_s`` seconds, in a background thread, never touching the sessions in use.

    What it removed is logged; what it could not remove, or a clean-up that failed, is
    logged as a warning and kept in ``problems`` for the Runner page.
    """

    settings: Settings
    every_s: float = 600.0
    last: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)
    problems: collections.deque = field(default_factory=lambda: collections.deque(maxlen=20))

    def maybe_clean(self, keep: tuple[Path, ...] = ()) -> None:
        with self.lock:
            if time.monotonic() - self.last < self.every_s and self.last:
                return
            self.last = time.monotonic()
        threading.Thread(target=self._clean, args=(keep,), name="da3-janitor", daemon=True).start()

    def _clean(self, keep: tuple[Path, ...]) -> None:
        from da3_core.runs import workspace

        try:
            report = workspace.cleanup(
                self.settings.workspace, self.settings.workspace_max_age_h, self.settings.workspace_max_gb, keep=keep
            )
        except Exception as exc:  # noqa: BLE001 - clean-up must never take the app down
            log.exception("workspace clean-up failed")
            self.problems.append(f"{time.strftime('%H:%M:%S')} clean-up failed: {type(exc).__name__}: {exc}")
            return
        if report.removed:
            log.debug(
                "workspace clean-up removed %d item(s), freed %.1f MB", len(report.removed), report.freed_bytes / 2**20
            )
        for error in report.errors:
            log.warning("workspace clean-up: %s", error)
            self.problems.append(f"{time.strftime('%H:%M:%S')} {error}")
        if report.over_limit:
            message = (
                f"the workspace is still over DA3_WORKSPACE_MAX_GB ({report.size_after / 2**30:.2f} GiB of "
                f"{report.limit_bytes / 2**30:.2f} GiB): what is left is in use or too recent to delete"
            )
            log.warning("workspace clean-up: %s", message)
            self.problems.append(f"{time.strftime('%H:%M:%S')} {message}")


@dataclass
class RunnerHolder:
    """The server's runner, the warm-up call that reports the worker's device, the janitor."""

    runner: Runner
    probe: Job | None
    janitor: Janitor | None = None
    runs: RunService | None = None

    def device_info(self) -> dict[str, Any] | None:
        """The worker's device report (device, torch version, ...) once the probe returned."""
        if self.probe is None or not self.probe.done():
            return None
        try:
            return self.probe.result(0)
        except Exception as exc:  # noqa: BLE001 - shown on the page, a later probe may work
            return {"error": str(exc)}

    def refresh_probe(self) -> None:
        """Ask the worker again (after a restart, or a failed probe)."""
        from da3_core.runs import tasks

        try:
            self.probe = tasks.worker_info.submit(runner=self.runner)  # type: ignore[call-arg]  # runner=: ParamSpec cannot declare it
            for _ in self.runner.slots[1:]:  # one probe per free worker: every worker starts now
                tasks.worker_info.submit(runner=self.runner)  # type: ignore[call-arg]  # runner=: ParamSpec cannot declare it
        except Exception:  # noqa: BLE001 - the runner may be closed during shutdown
            log.exception("the worker probe could not be queued")
            self.probe = None


@st.cache_resource(show_spinner=False)
def get_holder() -> RunnerHolder:
    """Start the server's runner once; its worker starts and imports DA3 in the background."""
    settings = get_settings()
    # After `get_settings`, which set up logging: the workers log as this process does.
    runner = Runner(
        **settings.runner_options(), preload=("da3_core.worker.reconstruct",), abandon_after_s=settings.abandon_after_s
    )
    set_default_runner(runner)
    janitor = Janitor(settings)
    holder = RunnerHolder(runner, None, janitor, RunService(runner, settings))
    holder.refresh_probe()  # starts the worker now, not at the first user's click
    janitor.maybe_clean()
    return holder


def get_runner() -> Runner:
    """The server's runner."""
    return get_holder().runner
