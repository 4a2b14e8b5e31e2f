"""Third-party warnings, log records and prints in a worker, kept as `Notice`s instead of printed.

A worker imports torch, DA3 and their dependencies, which print warnings on the way
(xFormers without kernels for this torch, OmegaConf deprecations, DA3 missing gsplat, a
hub client announcing where it read weights). `install` routes them into one `NoticeBook`:

* Python warnings (``warnings.showwarning``): category, module and message;
* log records of other libraries at WARNING and above (a handler on the root logger; our
  own ``da3_core`` loggers do not propagate there and keep printing their lines);
* text written to ``sys.stdout`` and ``sys.stderr`` (DA3's logger and some libraries
  ``print``): one notice per line or block, attributed to the module that wrote it;
  progress bars (text redrawn with carriage returns) are dropped.

Each distinct notice is kept once, with a count. The worker sends them to the parent (see
`da3_core.runner.inside.loop`), which shows them on the Runner page.

Not captured: output written straight to file descriptors 1 and 2 by C/C++ code (a
``fprintf(stderr, ...)`` in an extension, CUDA's own messages, a crash report). It still
reaches the terminal: a pipe reader inside the worker would lose a dying worker's last words.

With ``tee`` (the server logs at DEBUG: ``DA3_APP_LOG_LEVEL=DEBUG`` in the app) everything is also
printed as before.
Torch-free, like the rest of `da3_core.runner.inside`.
"""

from __future__ import annotations

import io
import logging
import re
import sys
import threading
import time
import warnings
from typing import Any, TextIO

from da3_core.runner.logsetup import DEFAULT_FORMAT
from da3_core.runner.protocol import Notice

log = logging.getLogger(__name__)

MAX_NOTICES = 50  # distinct notices kept per worker; more are counted in one last notice
MAX_MESSAGE = 4000  # characters kept of one message
OVERFLOW = "more distinct notices than the dashboard keeps; set DA3_APP_LOG_LEVEL=DEBUG to print them all"

# Writers whose text is about the worker itself, not a library: multiprocessing reports an
# exception that ends the process this way (its traceback must reach the terminal).
PASS_THROUGH = ("multiprocessing",)

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
# Frames skipped when looking for who printed: the machinery between a library and the stream.
_PLUMBING = ("logging", "warnings", "traceback", "tqdm", "io", "codecs", "depth_anything_3.utils.logger", __name__)


def clean(text: str) -> str:
    """``text`` as a notice message: colour codes removed, only what a terminal would keep
    of carriage-return redraws, surrounding blank space stripped, length bounded."""
    text = _ANSI.sub("", text)
    if "\r" in text:  # a redraw (progress bar): the terminal shows what came after the last \r
        text = "\n".join(line.rstrip("\r").rsplit("\r", 1)[-1] for line in text.split("\n"))
    text = text.strip()
    return text if len(text) <= MAX_MESSAGE else text[:MAX_MESSAGE] + " …"


def is_redraw(text: str) -> bool:
    """Text redrawn in place with carriage returns: a progress bar, not a notice (its
    timings differ every time, so each would be a notice of its own)."""
    return "\r" in text.replace("\r\n", "\n").rstrip("\r\n")


def module_of_file(filename: str) -> str:
    """The dotted module name of a source file, as far as its path tells
    (``…/site-packages/depth_anything_3/cfg.py`` -> ``depth_anything_3.cfg``)."""
    path = filename.replace("\\", "/")
    for marker in ("/site-packages/", "/dist-packages/"):
        if marker in path:
            path = path.rsplit(marker, 1)[1]
            break
    else:
        for entry in sorted((p.replace("\\", "/").rstrip("/") + "/" for p in sys.path if p), key=len, reverse=True):
            if entry != "/" and path.startswith(entry):
                path = path[len(entry) :]
                break
        else:
            path = path.rsplit("/", 1)[-1]
    if path.endswith(".py"):
        path = path[:-3]
    if path.endswith("/__init__"):
        path = path[: -len("/__init__")]
    return path.strip("/").replace("/", ".") or filename


class NoticeBook:
    """The distinct notices of one worker process, with counts. Thread-safe."""

    def __init__(self, limit: int = MAX_NOTICES) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._notices: dict[tuple[str, str, str, str], Notice] = {}
        self._version = 0
        self._sent = 0

    def add(self, kind: str, category: str, source: str, message: str) -> None:
        """Count one occurrence (an empty message is ignored)."""
        message = clean(message)
        if not message:
            return
        with self._lock:
            key = (kind, category, source, message)
            old = self._notices.get(key)
            if old is None and len(self._notices) >= self.limit:
                key = ("capture", "overflow", "da3_core", OVERFLOW)
                old = self._notices.get(key)
                if old is None:
                    self._notices[key] = Notice(OVERFLOW, "capture", "overflow", "da3_core", 1, time.time())
                    self._version += 1
                    return
            if old is None:
                self._notices[key] = Notice(message, kind, category, source, 1, time.time())
            else:
                self._notices[key] = Notice(
                    old.message, old.kind, old.category, old.source, old.count + 1, old.first_seen
                )
            self._version += 1

    def snapshot(self) -> tuple[Notice, ...]:
        """Every notice so far, in the order first seen."""
        with self._lock:
            return tuple(self._notices.values())

    def changes(self) -> tuple[Notice, ...] | None:
        """`snapshot` if anything was added since the last call of `changes`, else None."""
        with self._lock:
            if self._version == self._sent:
                return None
            self._sent = self._version
            return tuple(self._notices.values())


class NoticeHandler(logging.Handler):
    """Turns third-party log records into notices. Records at ERROR and above, and every
    record when ``echo`` is given, are also written to ``echo`` (errors stay in the terminal)."""

    def __init__(
        self, book: NoticeBook, echo: TextIO | None = None, tee: bool = False, echo_format: str = DEFAULT_FORMAT
    ) -> None:
        super().__init__(logging.WARNING)
        self.book = book
        self.echo = echo
        self.tee = tee
        self.setFormatter(logging.Formatter(echo_format))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if record.exc_info and record.exc_info[1] is not None:
                message += f" ({type(record.exc_info[1]).__name__}: {record.exc_info[1]})"
            warning = parse_logged_warning(message) if record.name == "py.warnings" else None
            if warning is not None:
                self.book.add("warning", *warning)
            else:
                self.book.add("log", record.levelname, record.name, message)
            if self.echo is not None and (self.tee or record.levelno >= logging.ERROR):
                self.echo.write(self.format(record) + "\n")
                self.echo.flush()
        except Exception:  # noqa: BLE001 - logging must never raise into the library
            self.handleError(record)


_WARNING_LINE = re.compile(r"\A(?P<file>.+?):(?P<line>\d+): (?P<category>\w+): (?P<message>.*)\Z", re.DOTALL)


def parse_logged_warning(text: str) -> tuple[str, str, str] | None:
    """``(category, module, message)`` of a warning that ``logging.captureWarnings(True)``
    turned into a log record (text as `warnings.formatwarning` writes it), else None.

    A library that turns that on (moviepy does, at import) would otherwise make every later
    warning a ``py.warnings`` record instead of a warning.
    """
    found = _WARNING_LINE.match(text.rstrip("\n"))
    if found is None:
        return None
    message = found["message"]
    lines = message.split("\n")
    if len(lines) > 1 and lines[-1].startswith("  "):
        message = "\n".join(lines[:-1])  # formatwarning's copy of the source line
    return found["category"], module_of_file(found["file"]), message


class CaptureStream(io.TextIOBase):
    """Stands in for ``sys.stdout``/``sys.stderr``: each line (or block written by one
    ``print``) becomes a notice from the module that wrote it. ``fileno`` is the real one:
    what is written to the descriptor directly is not captured."""

    def __init__(self, name: str, real: TextIO, book: NoticeBook, tee: bool = False) -> None:
        super().__init__()
        self.name = name
        self.real = real
        self.book = book
        self.tee = tee
        self._buffer = ""
        self._source = "?"
        self._lock = threading.RLock()

    @property
    def encoding(self) -> str:  # type: ignore[override]  # TextIOBase's attribute, read from the real stream
        return getattr(self.real, "encoding", None) or "utf-8"

    @property
    def errors(self) -> str | None:  # type: ignore[override]  # as encoding
        return getattr(self.real, "errors", None)

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False  # progress bars and colours: not for a notice

    def fileno(self) -> int:
        return self.real.fileno()

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        if self.tee:
            self.real.write(text)
        with self._lock:
            if not self._buffer:
                self._source = _writer()
                if self._source.startswith(PASS_THROUGH):
                    if not self.tee:
                        self.real.write(text)
                        self.real.flush()
                    return len(text)
            self._buffer += text
            # print() writes its text and then its end: a block is complete at a newline
            # that ends a write, so one print of several lines stays one notice.
            if self._buffer.endswith("\n") or len(self._buffer) > MAX_MESSAGE:
                block, self._buffer = self._buffer, ""
                if not is_redraw(block):
                    self.book.add("print", self.name, self._source, block)
        return len(text)

    def flush(self) -> None:
        if self.tee:
            self.real.flush()


def _writer() -> str:
    """The module that called into the stream (the frame above `write`, past the plumbing)."""
    frame: Any = sys._getframe(2)
    for _ in range(30):
        if frame is None:
            break
        name = frame.f_globals.get("__name__", "")
        if not any(name == p or name.startswith(p + ".") for p in _PLUMBING):
            return name or module_of_file(frame.f_code.co_filename)
        frame = frame.f_back
    return "?"


BOOK: NoticeBook | None = None
_original: dict[str, Any] = {}


def install(tee: bool = False, echo_format: str = DEFAULT_FORMAT) -> NoticeBook:
    """Capture warnings, third-party log records and prints in this process from now on.

    Args:
        tee: Also print everything as before (the worker passes True when the server logs
            at DEBUG: `da3_core.runner.logsetup.LogSetup.tee`).
        echo_format: The format of the error records still written to stderr (the server's).

    Returns:
        The book the notices go to (also `BOOK`). Idempotent.
    """
    global BOOK
    if BOOK is not None:
        return BOOK
    book = NoticeBook()
    real_out, real_err = sys.stdout, sys.stderr
    _original.update(
        stdout=real_out, stderr=real_err, showwarning=warnings.showwarning, threading_excepthook=threading.excepthook
    )
    shown = warnings.showwarning

    def showwarning(
        message: Any, category: type[Warning], filename: str, lineno: int, file: Any = None, line: Any = None
    ) -> None:
        book.add("warning", category.__name__, module_of_file(filename), str(message))
        if tee:
            shown(message, category, filename, lineno, _original["stderr"] if file is None else file, line)

    warnings.showwarning = showwarning
    root = logging.getLogger()
    root.addHandler(NoticeHandler(book, echo=real_err, tee=tee, echo_format=echo_format))
    if real_out is not None:
        sys.stdout = CaptureStream("stdout", real_out, book, tee)
    if real_err is not None:
        sys.stderr = CaptureStream("stderr", real_err, book, tee)

    def excepthook(args: Any) -> None:
        # An uncaught exception in a thread is an error: one line in the terminal, not a notice.
        if args.exc_type is SystemExit:
            return
        log.error(
            "uncaught %s in thread %s: %s", args.exc_type.__name__, getattr(args.thread, "name", "?"), args.exc_value
        )
        log.debug("traceback", exc_info=(args.exc_type, args.exc_value, args.exc_traceback))

    threading.excepthook = excepthook
    BOOK = book
    return book


def uninstall() -> None:
    """Undo `install` (tests)."""
    global BOOK
    if BOOK is None:
        return
    sys.stdout, sys.stderr = _original["stdout"], _original["stderr"]
    warnings.showwarning = _original["showwarning"]
    threading.excepthook = _original["threading_excepthook"]
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, NoticeHandler)]:
        root.removeHandler(handler)
    BOOK = None


def changes() -> tuple[Notice, ...] | None:
    """The notices if they changed since last sent (None when not installed or unchanged)."""
    return BOOK.changes() if BOOK is not None else None


__all__ = [
    "BOOK",
    "CaptureStream",
    "NoticeBook",
    "NoticeHandler",
    "changes",
    "clean",
    "install",
    "is_redraw",
    "module_of_file",
    "parse_logged_warning",
    "uninstall",
]
