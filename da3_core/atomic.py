"""Files and folders that appear whole or not at all.

A writer gets a hidden temporary path beside the final one (``.<name>.<token>.part``, the
naming `da3_core.runs.workspace.save_upload` uses), writes there, and the temporary path is
renamed to the final one only when the writing ended without an error. A reader that sees
the final path therefore never sees a half-written file (a COLMAP model whose points3D.bin
is still being written). A writer that is killed (a cancelled export whose worker is
stopped) leaves only the hidden temporary path: `remove_partial` clears it.

Torch-free: the worker's exporters and the parent's run service both use it.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PART = ".part"


def partial_name(final: Path) -> Path:
    """A new hidden temporary path beside ``final`` (same suffix, so writers that pick a
    format from it, such as imageio, still do)."""
    return final.with_name(f".{final.name}.{secrets.token_hex(4)}{PART}{final.suffix}")


@contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield an empty hidden folder; on a clean exit it replaces ``final`` (an older
    ``final`` is removed), on an error it is removed and ``final`` is left as it was."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_name(final)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if final.exists():  # rename() cannot replace a non-empty folder: move the old one aside first
        old = partial_name(final)
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextmanager
def atomic_file(final: Path) -> Iterator[Path]:
    """Yield a hidden temporary file path; on a clean exit it replaces ``final``, on an
    error it is removed and ``final`` is left as it was."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_name(final)
    try:
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, final)


def partial_paths(final: Path) -> list[Path]:
    """The temporary paths writers of ``final`` left behind (killed before they finished)."""
    final = Path(final)
    if not final.parent.is_dir():
        return []
    return sorted(p for p in final.parent.glob(f".{final.name}.*{PART}*") if p.name.startswith(f".{final.name}."))


def remove_partial(final: Path) -> list[Path]:
    """Remove what killed writers of ``final`` left behind; return what was removed."""
    removed = []
    for path in partial_paths(final):
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed
