"""How workers log: the way the caller that made the runner does.

The runner configures no logging of its own in the caller's process: its modules log with
``logging.getLogger(__name__)``, and the application sets up the handlers. A worker process
or Ray actor is a fresh interpreter, so the runner copies the caller's set-up there: a
`LogSetup` is read from the caller's logger (`LogSetup.of_caller`, when the slots are made)
and applied in the worker before anything else runs (`LogSetup.apply`). The worker's lines
then go where the caller's go (stderr, a log file), in its format and at its level, marked
with the worker's process name. A caller that set nothing up gets the default: stderr at
INFO.

The same set-up decides what `da3_core.runner.inside.capture` does with third-party output
in the worker: at DEBUG it is also printed as before (``tee``), and error records it echoes
use the caller's format.

Plain data, pickled to the worker; torch-free.
"""

from __future__ import annotations

import logging
import sys
import threading
from dataclasses import dataclass

DEFAULT_FORMAT = "%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s"
# The logger above every module of the package the runner lives in (its own loggers and the
# tasks' are below it).
PACKAGE = __name__.split(".")[0]

_applied = False
_lock = threading.Lock()


@dataclass(frozen=True)
class LogSetup:
    """A logger's handlers and level, as plain data.

    Attributes:
        logger: The logger the handlers sit on.
        level: Its level.
        propagate: Whether its records also reach the root logger's handlers.
        stderr_format: Format of a handler on stderr; None: no such handler.
        files: ``(path, format)`` of each file handler.
    """

    logger: str = PACKAGE
    level: int = logging.INFO
    propagate: bool = False
    stderr_format: str | None = DEFAULT_FORMAT
    files: tuple[tuple[str, str], ...] = ()

    @classmethod
    def of_caller(cls, name: str = PACKAGE) -> LogSetup:
        """The set-up of logger ``name`` in this process (its stderr and file handlers; others,
        such as a test framework's capture handlers, are not copied); the default when it has
        neither."""
        logger = logging.getLogger(name)
        stderr_format: str | None = None
        files: list[tuple[str, str]] = []
        for handler in logger.handlers:
            fmt = getattr(handler.formatter, "_fmt", None) or DEFAULT_FORMAT
            if isinstance(handler, logging.FileHandler):
                files.append((handler.baseFilename, fmt))
            elif type(handler) is logging.StreamHandler and stderr_format is None:
                stderr_format = fmt
        if stderr_format is None and not files:
            return cls(logger=name, level=logger.level or logging.INFO)
        return cls(name, logger.level or logging.INFO, logger.propagate, stderr_format, tuple(files))

    @property
    def tee(self) -> bool:
        """Print third-party output in the worker as well as capturing it (at DEBUG)."""
        return self.level <= logging.DEBUG

    @property
    def echo_format(self) -> str:
        """The format of lines the worker's capture writes to stderr itself."""
        return self.stderr_format or (self.files[0][1] if self.files else DEFAULT_FORMAT)

    def apply(self) -> None:
        """Attach the handlers in this process (a worker); once per process."""
        global _applied
        with _lock:
            if _applied:
                return
            _applied = True
            logger = logging.getLogger(self.logger)
            logger.setLevel(self.level)
            logger.propagate = self.propagate
            if self.stderr_format is not None:
                handler = logging.StreamHandler(sys.stderr)
                handler.setFormatter(logging.Formatter(self.stderr_format))
                logger.addHandler(handler)
            for path, fmt in self.files:
                try:
                    file_handler = logging.FileHandler(path, encoding="utf-8")
                except OSError as exc:  # e.g. a Ray node without the caller's folder
                    logger.debug("the log file %s cannot be opened here (%s)", path, exc)
                    continue
                file_handler.setFormatter(logging.Formatter(fmt))
                logger.addHandler(file_handler)


def one_line(text: str, limit: int = 300) -> str:
    """``text`` on one line (blank space collapsed), cut to ``limit`` characters: for the
    terminal, where each error is one line; the full text stays on the page and at DEBUG."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


__all__ = ["DEFAULT_FORMAT", "LogSetup", "one_line"]
