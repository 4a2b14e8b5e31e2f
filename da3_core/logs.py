"""Logging set-up: one logger per module (``logging.getLogger(__name__)``), handlers here.

The server logs to stderr (what ``streamlit run`` shows in its terminal) and, when
``DA3_LOG_FILE`` is set, also to that file. `setup` runs once per process; the server's
writes one line saying where the logs go. Worker processes inherit stderr, so their lines
land in the same terminal, marked with their process name.

What the terminal shows at the default level (INFO): one line per worker start, one per
run (at its end, with its outcome and seconds) and one per error; everything else of ours
is at DEBUG. Third-party warnings in the workers are captured, not printed
(`da3_core.runner.inside.capture`), and listed on the Runner page. ``DA3_APP_LOG_LEVEL=DEBUG``
prints everything again: our DEBUG lines, and the third-party warnings as their
libraries wrote them.
"""

from __future__ import annotations

import logging
import os
import sys
import threading

FORMAT = "%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s"
_done = False
_lock = threading.Lock()


def setup(level: str | None = None, announce: bool = True) -> str:
    """Attach handlers to the ``da3_core`` logger once; return where the logs go.

    Args:
        level: Level name for ``da3_core`` loggers; default ``DA3_APP_LOG_LEVEL`` or INFO.
        announce: Say where the logs go at INFO (the server); False: at DEBUG (a worker,
            whose start the server reports).

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
    root.log(
        logging.INFO if announce else logging.DEBUG,
        "DA3 dashboard logs go to %s (level %s; third-party warnings of the workers are on the Runner page, "
        "DA3_APP_LOG_LEVEL=DEBUG prints everything)",
        where,
        logging.getLevelName(root.level),
    )
    return where


def one_line(text: str, limit: int = 300) -> str:
    """``text`` on one line (blank space collapsed), cut to ``limit`` characters: for the
    terminal, where each error is one line; the full text stays on the page and at DEBUG."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _destinations() -> str:
    log_file = os.environ.get("DA3_LOG_FILE", "").strip()
    return f"stderr and {log_file}" if log_file else "stderr (set DA3_LOG_FILE to also write a file)"
