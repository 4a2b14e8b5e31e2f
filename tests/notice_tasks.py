"""A task module that behaves like a noisy third-party library, for the log tests: at import
(the worker's preload) it warns, logs a WARNING record and prints; its task does it again.
Every text starts with ``notice-test:`` so the tests can find it in the notices and make sure
it never reaches the terminal."""

from __future__ import annotations

import logging
import sys
import warnings

warnings.warn("notice-test: a warning at worker start", UserWarning, stacklevel=1)
logging.getLogger("notice_test_lib").warning("notice-test: a third-party log record")
print("notice-test: printed to stdout at worker start")
print("notice-test: printed to stderr at worker start", file=sys.stderr)


def noisy(value: int) -> int:
    """Warn, log and print during a call; return ``value``."""
    warnings.warn(
        "notice-test: a warning during a call", RuntimeWarning, stacklevel=1
    )  # once per place ("default" filter)
    logging.getLogger("notice_test_lib").warning("notice-test: a third-party log record")  # counted again
    print("notice-test: printed during a call")
    return value


def crash_after_install() -> None:
    """A process target that captures like a worker, then fails in its own code."""
    from da3_core.runner.inside import capture

    capture.install(tee=False)
    print("notice-test: captured before the crash")
    raise RuntimeError("notice-test: the worker loop failed")
