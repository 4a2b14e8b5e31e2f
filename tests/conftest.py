"""Shared fixtures. Isolation is the default everywhere, tests included."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# Nothing in the suite may talk to the model hub; the real loading code still runs.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DA3_ISOLATION", "isolated")


@pytest.fixture
def runner():
    """A fresh isolated runner per test, closed afterwards (no worker left behind)."""
    from da3_core.gpu import Runner

    r = Runner(cancel_grace_s=1.0)
    yield r
    r.close()
