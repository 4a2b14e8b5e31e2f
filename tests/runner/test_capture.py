"""The worker-side capture of third-party warnings, log records and prints
(`da3_core.runner.inside.capture`), piece by piece in this process; `install` itself runs
in a fresh interpreter (it replaces sys.stdout/stderr and warnings.showwarning)."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import threading

from da3_core.runner.inside import capture
from da3_core.runner.inside.capture import (
    CaptureStream,
    NoticeBook,
    NoticeHandler,
    clean,
    module_of_file,
    parse_logged_warning,
)
from da3_core.runner.protocol import Notice, merge_notices
from tests.conftest import ROOT, run_python


def test_the_book_keeps_each_notice_once_with_a_count():
    book = NoticeBook()
    book.add("warning", "UserWarning", "lib.a", "careful")
    book.add("warning", "UserWarning", "lib.a", "careful\n")  # the same once cleaned
    book.add("log", "WARNING", "lib.b", "careful")  # another kind: another notice
    book.add("print", "stdout", "lib.c", "   ")  # blank: ignored
    notices = book.snapshot()
    assert [(n.kind, n.source, n.count) for n in notices] == [("warning", "lib.a", 2), ("log", "lib.b", 1)]
    assert all(n.first_seen > 0 for n in notices)


def test_changes_are_sent_only_when_something_was_added():
    book = NoticeBook()
    assert book.changes() is None
    book.add("warning", "UserWarning", "lib", "one")
    first = book.changes()
    assert first is not None and len(first) == 1
    assert book.changes() is None
    book.add("warning", "UserWarning", "lib", "one")  # a repeat changes the count: sent again
    again = book.changes()
    assert again is not None and again[0].count == 2


def test_the_book_is_bounded():
    book = NoticeBook(limit=3)
    for i in range(10):
        book.add("print", "stdout", "chatty", f"line {i}")
    notices = book.snapshot()
    assert len(notices) == 4
    assert notices[-1].message == capture.OVERFLOW and notices[-1].count == 7


def test_the_book_is_thread_safe():
    book = NoticeBook()

    def spam():
        for _ in range(500):
            book.add("log", "WARNING", "lib", "same")

    threads = [threading.Thread(target=spam) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert book.snapshot()[0].count == 2000


def test_clean_keeps_what_a_terminal_shows():
    assert clean("\x1b[93m[WARN ] gsplat missing\x1b[0m\n") == "[WARN ] gsplat missing"
    assert clean("\r 10%|#   |\r 50%|##  |\r100%|####|\n") == "100%|####|"
    assert clean("windows line\r\n") == "windows line"
    long = clean("x" * (capture.MAX_MESSAGE + 100))
    assert len(long) == capture.MAX_MESSAGE + 2 and long.endswith(" …")


def test_module_of_file():
    assert module_of_file("/v/lib/python3.11/site-packages/depth_anything_3/cfg.py") == "depth_anything_3.cfg"
    assert module_of_file("/usr/lib/python3/dist-packages/xformers/__init__.py") == "xformers"
    assert module_of_file(capture.__file__) == "da3_core.runner.inside.capture"  # the repo is on sys.path
    assert module_of_file("<frozen importlib._bootstrap>") == "<frozen importlib._bootstrap>"


def test_a_warning_turned_into_a_log_record_is_read_back_as_a_warning():
    # moviepy calls logging.captureWarnings(True) at import: later warnings arrive as records.
    text = (
        "/v/lib/python3.11/site-packages/torch/jit/_script.py:1491: FutureWarning: `torch.jit.script` is deprecated. "
        "Please switch to `torch.compile` or `torch.export`.\n  warnings.warn(\n"
    )
    assert parse_logged_warning(text) == (
        "FutureWarning",
        "torch.jit._script",
        "`torch.jit.script` is deprecated. Please switch to `torch.compile` or `torch.export`.",
    )
    multi = "/x/site-packages/omegaconf/a.py:3: UserWarning: line one\nline two\n"
    assert parse_logged_warning(multi) == ("UserWarning", "omegaconf.a", "line one\nline two")
    assert parse_logged_warning("just a log line") is None


def test_the_handler_records_third_party_records_and_echoes_only_errors():
    book, echo = NoticeBook(), io.StringIO()
    logger = logging.getLogger("thirdparty.for_the_test")
    logger.propagate = False
    handler = NoticeHandler(book, echo=echo)
    logger.addHandler(handler)
    try:
        logger.info("not a notice")  # below WARNING
        logger.warning("a warning %s", "here")
        logger.warning("a warning %s", "here")
        logger.error("a real problem")
        logging.getLogger("py.warnings").addHandler(handler)
        logging.getLogger("py.warnings").warning("%s", "/s/site-packages/lib/m.py:1: DeprecationWarning: old\n")
    finally:
        logger.removeHandler(handler)
        logging.getLogger("py.warnings").removeHandler(handler)
    got = [(n.kind, n.category, n.source, n.message, n.count) for n in book.snapshot()]
    assert got == [
        ("log", "WARNING", "thirdparty.for_the_test", "a warning here", 2),
        ("log", "ERROR", "thirdparty.for_the_test", "a real problem", 1),
        ("warning", "DeprecationWarning", "lib.m", "old", 1),
    ]
    assert echo.getvalue().count("\n") == 1 and "ERROR" in echo.getvalue() and "a real problem" in echo.getvalue()


def test_the_stream_keeps_one_print_as_one_notice_from_its_caller():
    book, real = NoticeBook(), io.StringIO()
    stream = CaptureStream("stdout", real, book)
    print("first line\nsecond line", file=stream)
    stream.write("partial ")
    stream.write("line\n")
    print("first line\nsecond line", file=stream)
    assert real.getvalue() == ""  # nothing reaches the terminal
    got = [(n.category, n.source, n.message, n.count) for n in book.snapshot()]
    assert got == [("stdout", __name__, "first line\nsecond line", 2), ("stdout", __name__, "partial line", 1)]
    assert not stream.isatty() and stream.writable()


def test_progress_bars_are_not_notices():
    book = NoticeBook()
    stream = CaptureStream("stderr", io.StringIO(), book)
    stream.write("\r  0%|          | 0/4 [00:00<?, ?it/s]")
    stream.write("\r100%|##########| 4/4 [00:01<00:00,  3.2it/s]")
    stream.write("\n")
    stream.write("a windows line\r\n")
    assert [n.message for n in book.snapshot()] == ["a windows line"]


def test_the_stream_tees_when_asked():
    book, real = NoticeBook(), io.StringIO()
    stream = CaptureStream("stderr", real, book, tee=True)
    print("both", file=stream)
    assert real.getvalue() == "both\n" and book.snapshot()[0].message == "both"


def test_merge_adds_counts_over_worker_starts():
    a = (Notice("m", "warning", "UserWarning", "lib", 2, 10.0), Notice("x", "log", "WARNING", "lib", 1, 12.0))
    b = (Notice("m", "warning", "UserWarning", "lib", 1, 20.0), Notice("y", "print", "stdout", "lib", 1, 5.0))
    merged = merge_notices(a, b)
    assert [(n.message, n.count, n.first_seen) for n in merged] == [("y", 1, 5.0), ("m", 3, 10.0), ("x", 1, 12.0)]
    assert merge_notices() == ()


INSTALL_SCRIPT = r"""
import json, logging, sys, threading, warnings
from da3_core.runner.logsetup import LogSetup
LogSetup().apply()  # as a worker of a server that logs to stderr at INFO
from da3_core.runner.inside import capture
capture.install(tee=TEE)
warnings.warn("warned", UserWarning)
logging.getLogger("some.library").warning("logged")
print("printed")
print("to stderr", file=sys.stderr)
logging.getLogger("da3_core.test").info("our own line")
t = threading.Thread(target=lambda: 1 / 0, name="boom")
t.start(); t.join()
sys.__stdout__.write(json.dumps([[n.kind, n.category, n.source, n.message] for n in capture.BOOK.snapshot()]) + "\n")
"""


def _install_run(tee: bool) -> tuple[list, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DA3_APP_LOG_LEVEL": "INFO"}
    out = subprocess.run(
        [sys.executable, "-c", INSTALL_SCRIPT.replace("TEE", str(tee))],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1]), out.stderr


def test_install_captures_everything_but_our_lines_and_errors():
    notices, stderr = _install_run(tee=False)
    assert notices == [
        ["warning", "UserWarning", "<string>", "warned"],
        ["log", "WARNING", "some.library", "logged"],
        ["print", "stdout", "__main__", "printed"],
        ["print", "stderr", "__main__", "to stderr"],
    ]
    lines = stderr.splitlines()
    assert len(lines) == 2, stderr
    assert "INFO" in lines[0] and "our own line" in lines[0]
    # An uncaught exception in a thread is an error: one line in the terminal, no traceback.
    assert "ERROR" in lines[1] and "uncaught ZeroDivisionError in thread boom" in lines[1]


def test_install_with_tee_prints_everything_as_before():
    notices, stderr = _install_run(tee=True)
    assert len(notices) == 4
    for text in ("UserWarning: warned", "logged", "to stderr", "our own line"):
        assert text in stderr, stderr


def test_an_exception_that_ends_the_process_still_reaches_the_terminal():
    # multiprocessing prints it to sys.stderr, which the capture replaced: it passes through.
    code = (
        "import multiprocessing as mp\nfrom tests import notice_tasks\n"
        "if __name__ == '__main__':\n"
        "    p = mp.get_context('spawn').Process(target=notice_tasks.crash_after_install, name='da3-worker')\n"
        "    p.start(); p.join(); print(p.exitcode)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.stdout.strip().splitlines()[-1] == "1"  # (the module's import-time prints come before the capture)
    assert "Process da3-worker:" in out.stderr and "Traceback (most recent call last)" in out.stderr
    assert "RuntimeError: notice-test: the worker loop failed" in out.stderr
    assert "captured before the crash" not in out.stderr + out.stdout


def test_install_is_not_used_by_the_parent():
    # The server process never installs it: only the worker loop and the Ray actor do.
    assert (
        run_python(
            "import da3_core.runner, da3_core.app.holder\nfrom da3_core.runner.inside import capture\nprint(capture.BOOK)"
        ).strip()
        == "None"
    )


def test_workers_log_as_their_caller_does(tmp_path):
    """The runner reads no settings: a worker's logging is a copy of its caller's logger (its
    stderr and file handlers, their format, its level), made when the runner is made."""
    import pickle

    from da3_core.runner.logsetup import LogSetup

    log_file = tmp_path / "server.log"
    name = "logsetup_test"  # a logger of its own: the suite's are left alone
    logger = logging.getLogger(name)
    handler = logging.FileHandler(log_file)
    handler.setFormatter(logging.Formatter("F %(levelname)s %(processName)s %(name)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        setup = LogSetup.of_caller(name)
    finally:
        logger.removeHandler(handler)
        handler.close()
    fmt = "F %(levelname)s %(processName)s %(name)s: %(message)s"
    assert setup == LogSetup(name, logging.DEBUG, False, None, ((str(log_file), fmt),))
    assert setup.tee and setup.echo_format == fmt  # at DEBUG, third-party output is printed too
    assert LogSetup.of_caller("nothing.set.up") == LogSetup("nothing.set.up")  # the default: stderr at INFO
    assert not LogSetup().tee
    # Applied in a fresh interpreter, as a worker does first: its lines land in the caller's file.
    run_python(
        f"import logging, pickle\nsetup = pickle.loads({pickle.dumps(setup)!r})\nsetup.apply()\nsetup.apply()\n"
        f"logging.getLogger('{name}.worker').debug('from the worker')\n"
    )
    assert log_file.read_text().splitlines() == [
        f"F DEBUG MainProcess {name}.worker: from the worker"
    ]  # once: apply is idempotent
