"""Logging set-up: one logger per module (``logging.getLogger(__name__)``), handlers here.

The server logs to stderr (what ``streamlit run`` shows in its terminal) and, when
``DA3_LOG_FILE`` is set, also to that file. `setup` runs once per process and writes one
line saying where the logs go. Worker processes inherit stderr, so their lines land in
the same terminal, marked with their process name.
"""

from __future__ import annotations

import logging
import os
import sys
import threading

FORMAT = "%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s"
_done = False
_lock = threading.Lock()


def setup(level: str | None = None) -> str:
    """Attach handlers to the ``da3_core`` logger once; return where the logs go.

    Args:
        level: Level name for ``da3_core`` loggers; default ``DA3_APP_LOG_LEVEL`` or INFO.

    Returns:
        A one-line description of the destinations (also logged once).
    """
    global _done
    root = logging.getLogger("da3_core")
    with _lock:
        where = _destinations()
        if _done:
            return where
        _done = True
        root.setLevel((level or os.environ.get("DA3_APP_LOG_LEVEL") or "INFO").upper())
        root.propagate = False  # Streamlit configures the root logger; keep our lines once
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(FORMAT))
        root.addHandler(handler)
        log_file = os.environ.get("DA3_LOG_FILE", "").strip()
        if log_file:
            try:
                file_handler = logging.FileHandler(log_file, encoding="utf-8")
                file_handler.setFormatter(logging.Formatter(FORMAT))
                root.addHandler(file_handler)
            except OSError as exc:
                root.warning("DA3_LOG_FILE=%s cannot be opened (%s); logging to stderr only", log_file, exc)
                where = "stderr"
    root.info("DA3 dashboard logs go to %s (level %s)", where, logging.getLevelName(root.level))
    return where


def _destinations() -> str:
    log_file = os.environ.get("DA3_LOG_FILE", "").strip()
    return f"stderr and {log_file}" if log_file else "stderr (set DA3_LOG_FILE to also write a file)"
