"""The on-disk workspace: per-session and per-run folders, saved uploads, clean-up.

Layout under the workspace root (``Settings.workspace``)::

    <root>/
      demo-weights/                       untrained demo weights (never cleaned up here)
      sessions/<32 hex>/                  one per browser session (uuid4 hex)
        run-YYYYmmdd-HHMMSS-<6 hex>/      one per run; names sort by creation time (UTC)
          input/0000.jpg                  uploaded bytes, generated names, extension from content

Every folder and file name here is generated; no user-supplied string ever becomes part
of a path. `safe_join` is the one way to build a path below a root from parts: it
refuses ``..``, absolute parts and anything that resolves (through symlinks) outside.

`cleanup` only ever deletes inside ``<root>/sessions``; ``demo-weights`` and anything
else at the top level are left alone and are not counted against the size budget.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import stat
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

__all__ = [
    "SESSIONS_DIR",
    "DEMO_WEIGHTS_DIR",
    "INPUT_DIR",
    "UnsafePathError",
    "CleanupReport",
    "safe_join",
    "new_session",
    "session_path",
    "new_run",
    "list_runs",
    "save_upload",
    "tree_size",
    "workspace_size",
    "cleanup",
]

SESSIONS_DIR = "sessions"
DEMO_WEIGHTS_DIR = "demo-weights"
INPUT_DIR = "input"

_SESSION_ID = re.compile(r"[0-9a-f]{32}")
_RUN_NAME = re.compile(r"run-\d{8}-\d{6}-[0-9a-f]{6}")
_EXT = re.compile(r"[a-z0-9]{1,5}")
_GIB = 1024**3


class UnsafePathError(ValueError):
    """A path would leave its root (``..``, an absolute part, or a symlink pointing out)."""


# --------------------------------------------------------------------------------------
# Paths
# --------------------------------------------------------------------------------------


def safe_join(root: str | os.PathLike[str], *parts: str | os.PathLike[str]) -> Path:
    """Join ``parts`` below ``root`` and prove the result stays inside it.

    Each part may hold several components (``"input/0001.jpg"``). Refused: absolute parts,
    ``..`` components, NUL characters, and results that resolve (following any symlinks
    that exist) outside ``root``.

    Args:
        root: The folder that must contain the result.
        *parts: Relative path pieces.

    Returns:
        The resolved absolute path (it need not exist).

    Raises:
        UnsafePathError: The path would escape ``root`` or is malformed.
    """
    root_real = Path(os.path.realpath(root))
    rel: list[str] = []
    for part in parts:
        text = os.fspath(part)
        if not isinstance(text, str):
            raise UnsafePathError(f"path part {text!r} must be text")
        if "\x00" in text:
            raise UnsafePathError("path part contains a NUL character")
        if text.startswith(("/", "\\")) or os.path.isabs(text) or re.match(r"^[A-Za-z]:", text):
            raise UnsafePathError(f"absolute path part {text!r} is not allowed")
        for comp in re.split(r"[/\\]", text):
            if comp == "..":
                raise UnsafePathError(f"'..' in path part {text!r} is not allowed")
            if comp in ("", "."):
                continue
            rel.append(comp)
    candidate = Path(os.path.realpath(root_real.joinpath(*rel)))
    if candidate != root_real and root_real not in candidate.parents:
        raise UnsafePathError(f"{'/'.join(rel)!r} resolves outside the workspace (through a symlink?)")
    return candidate


def new_session_id() -> str:
    """A fresh random session id (32 lowercase hex digits); nothing is created on disk."""
    return uuid.uuid4().hex


def new_session(root: str | os.PathLike[str]) -> Path:
    """Create ``<root>/sessions/<uuid4 hex>`` and return it.

    Args:
        root: The workspace root (created if missing).

    Returns:
        The new session folder.
    """
    while True:
        path = safe_join(root, SESSIONS_DIR, uuid.uuid4().hex)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            path.mkdir()
        except FileExistsError:  # pragma: no cover - a uuid4 collision
            continue
        return path


def session_path(root: str | os.PathLike[str], session_id: str) -> Path:
    """The folder of an existing or future session id (32 lowercase hex digits).

    Raises:
        UnsafePathError: ``session_id`` is not 32 lowercase hex digits.
    """
    if not isinstance(session_id, str) or not _SESSION_ID.fullmatch(session_id):
        raise UnsafePathError(f"session id {session_id!r} is not 32 lowercase hex digits")
    return safe_join(root, SESSIONS_DIR, session_id)


def new_run(session_dir: str | os.PathLike[str], now: datetime | float | None = None) -> Path:
    """Create ``<session>/run-YYYYmmdd-HHMMSS-<6 hex>`` (UTC time) and return it.

    Args:
        session_dir: The session folder (created if missing, e.g. after a clean-up).
        now: Creation time (datetime or epoch seconds); the current time when None.

    Returns:
        The new run folder. Names sort in creation order (to the second; the hex part
        only breaks ties).
    """
    stamp = _as_datetime(now).strftime("%Y%m%d-%H%M%S")
    session = Path(session_dir)
    session.mkdir(parents=True, exist_ok=True)
    while True:
        path = safe_join(session, f"run-{stamp}-{secrets.token_hex(3)}")
        try:
            path.mkdir()
        except FileExistsError:  # pragma: no cover - 1 in 16M within one second
            continue
        return path


def list_runs(session_dir: str | os.PathLike[str]) -> list[Path]:
    """The run folders of a session, oldest first (by name, i.e. creation time).

    Symlinks and anything not named like a run are ignored.
    """
    session = Path(session_dir)
    if not session.is_dir():
        return []
    runs = []
    with os.scandir(session) as it:
        for entry in it:
            if _RUN_NAME.fullmatch(entry.name) and entry.is_dir(follow_symlinks=False):
                runs.append(session / entry.name)
    return sorted(runs, key=lambda p: p.name)


def save_upload(run_dir: str | os.PathLike[str], index: int, data: bytes, ext: str | None = None) -> Path:
    """Write uploaded bytes to ``<run>/input/<index:04d>.<ext>`` (a generated name).

    Args:
        run_dir: The run folder.
        index: Position of the upload in the batch, >= 0.
        data: The bytes, written as received.
        ext: Extension without the dot (``[a-z0-9]{1,5}``); detected from the content
            (`da3_core.media.filenames.sniff`) when None, ``"bin"`` when unknown. Never the user's.

    Returns:
        The file written.

    Raises:
        ValueError: ``index`` negative or ``ext`` malformed.
    """
    if not isinstance(index, int) or index < 0:
        raise ValueError(f"index must be a non-negative int, got {index!r}")
    if ext is None:
        from da3_core.media.filenames import sniff

        ext = sniff(data).ext or "bin"
    ext = ext.lower().lstrip(".")
    if not _EXT.fullmatch(ext):
        raise ValueError(f"extension {ext!r} must be 1-5 lowercase letters or digits")
    target = safe_join(run_dir, INPUT_DIR, f"{index:04d}.{ext}")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.part")
    try:
        with open(tmp, "xb") as fh:
            fh.write(data)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()
    return target


# --------------------------------------------------------------------------------------
# Sizes and ages (never following symlinks)
# --------------------------------------------------------------------------------------


def _walk_stats(path: Path) -> tuple[int, float]:
    """(bytes of regular files, latest mtime) of ``path`` and everything below it, by lstat."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return 0, 0.0
    size = st.st_size if stat.S_ISREG(st.st_mode) else 0
    latest = st.st_mtime
    if stat.S_ISDIR(st.st_mode):
        try:
            with os.scandir(path) as it:
                entries = list(it)
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            entries = []
        for entry in entries:
            sub_size, sub_latest = _walk_stats(Path(entry.path))
            size += sub_size
            latest = max(latest, sub_latest)
    return size, latest


def tree_size(path: str | os.PathLike[str]) -> int:
    """Bytes of the regular files at or below ``path`` (symlinks count 0, never followed)."""
    return _walk_stats(Path(path))[0]


def workspace_size(root: str | os.PathLike[str]) -> int:
    """Bytes under the workspace root that count against ``workspace_max_gb`` (all but demo-weights)."""
    root_path = Path(root)
    if not root_path.is_dir():
        return 0
    total = 0
    with os.scandir(root_path) as it:
        for entry in it:
            if entry.name != DEMO_WEIGHTS_DIR:
                total += tree_size(entry.path)
    return total


# --------------------------------------------------------------------------------------
# Clean-up
# --------------------------------------------------------------------------------------


@dataclass
class CleanupReport:
    """What `cleanup` did.

    Attributes:
        removed: Folders (or stray files/links) deleted, in deletion order.
        freed_bytes: Bytes of regular files deleted.
        size_before: Counted workspace bytes before (all but demo-weights).
        size_after: Counted workspace bytes after.
        limit_bytes: The size budget in bytes (``max_gb`` GiB).
        over_limit: Still over budget (everything left is protected or too recent).
        errors: One line per deletion that failed (the rest went on).
    """

    removed: list[Path] = field(default_factory=list)
    freed_bytes: int = 0
    size_before: int = 0
    size_after: int = 0
    limit_bytes: int = 0
    over_limit: bool = False
    errors: list[str] = field(default_factory=list)


@dataclass
class _Item:
    path: Path
    size: int
    latest: float
    is_dir: bool
    children: list[_Item] = field(default_factory=list)


def _as_datetime(now: datetime | float | None) -> datetime:
    if now is None:
        return datetime.now(UTC)
    if isinstance(now, datetime):
        return now.astimezone(UTC) if now.tzinfo else now.replace(tzinfo=UTC)
    return datetime.fromtimestamp(float(now), UTC)


def _as_epoch(now: datetime | float | None) -> float:
    if now is None:
        return time.time()
    if isinstance(now, datetime):
        return _as_datetime(now).timestamp()
    return float(now)


def _inventory(sessions: Path) -> list[_Item]:
    items: list[_Item] = []
    with os.scandir(sessions) as it:
        entries = sorted(it, key=lambda e: e.name)
    for entry in entries:
        path = sessions / entry.name
        if entry.is_dir(follow_symlinks=False):
            try:
                own_mtime = os.lstat(path).st_mtime
                with os.scandir(path) as it2:
                    subs = sorted(it2, key=lambda e: e.name)
            except FileNotFoundError:
                continue
            children = []
            for sub in subs:
                sub_path = path / sub.name
                size, latest = _walk_stats(sub_path)
                children.append(_Item(sub_path, size, latest, sub.is_dir(follow_symlinks=False)))
            latest = max([own_mtime] + [c.latest for c in children])
            items.append(_Item(path, sum(c.size for c in children), latest, True, children))
        else:  # a stray file or symlink: a leaf, judged by its own lstat
            size, latest = _walk_stats(path)
            items.append(_Item(path, size, latest, False))
    return items


def _protected(path: Path, keep: list[Path]) -> bool:
    """True when ``path`` is kept, lies inside a kept folder, or holds one."""
    for k in keep:
        if k == path or path in k.parents or k in path.parents:
            return True
    return False


def _remove(item: _Item, sessions: Path, report: CleanupReport) -> bool:
    path = item.path
    if sessions not in path.parents:  # defence in depth: never delete outside sessions/
        report.errors.append(f"refused to delete {path}: outside {sessions}")
        return False
    try:
        st = os.lstat(path)
        if stat.S_ISDIR(st.st_mode):
            # On Linux rmtree uses the fd-based variant: it unlinks symlinks, never follows them.
            shutil.rmtree(path)
        else:
            os.unlink(path)
    except FileNotFoundError:  # another session cleaned it first
        pass
    except OSError as exc:
        report.errors.append(f"could not delete {path}: {exc}")
        return False
    report.removed.append(path)
    report.freed_bytes += item.size
    return True


def cleanup(
    root: str | os.PathLike[str],
    max_age_h: float,
    max_gb: float,
    now: datetime | float | None = None,
    keep: Iterable[str | os.PathLike[str]] = (),
    min_age_s: float = 600.0,
) -> CleanupReport:
    """Delete old sessions and runs, then the oldest runs until the workspace fits.

    1. Age: a session folder whose latest activity (newest mtime of anything inside, by
       lstat) is older than ``max_age_h`` goes whole; in the sessions that stay, each run
       (or other entry) older than that goes.
    2. Size: while the counted size (everything under ``root`` but ``demo-weights``)
       exceeds ``max_gb`` GiB, the run with the oldest activity goes, as long as it is
       older than ``min_age_s`` (so a run another browser session is writing right now
       survives); then emptied sessions older than ``min_age_s`` go.

    Never deleted: anything in ``keep``, anything inside a kept folder, any folder holding
    a kept one (so keeping a run keeps its session folder, not its sibling runs),
    ``demo-weights`` and everything outside ``<root>/sessions``. Symlinks are deleted as
    links and never followed. Failures are reported, not raised.

    Args:
        root: The workspace root.
        max_age_h: Age limit in hours.
        max_gb: Size budget in GiB.
        now: The current time (datetime or epoch seconds); ``time.time()`` when None.
        keep: Paths to protect (the active runs or sessions).
        min_age_s: Size-based deletion spares anything younger than this.

    Returns:
        The `CleanupReport`.
    """
    report = CleanupReport(limit_bytes=int(max_gb * _GIB))
    root_path = Path(root)
    if not root_path.is_dir():
        return report
    root_real = Path(os.path.realpath(root_path))
    now_s = _as_epoch(now)
    cutoff = now_s - float(max_age_h) * 3600.0
    recent = now_s - float(min_age_s)
    kept = [Path(os.path.realpath(k)) for k in keep]
    report.size_before = workspace_size(root_real)
    sessions = root_real / SESSIONS_DIR
    if not sessions.is_dir() or sessions.is_symlink():
        report.size_after = report.size_before
        report.over_limit = report.size_after > report.limit_bytes
        return report

    items = _inventory(sessions)  # ages are measured before anything is deleted
    survivors: list[_Item] = []
    for item in items:
        if item.latest < cutoff and not _protected(item.path, kept):
            _remove(item, sessions, report)
            continue
        remaining = []
        for child in item.children:
            if child.latest < cutoff and not _protected(child.path, kept):
                _remove(child, sessions, report)
            else:
                remaining.append(child)
        item.children = remaining
        survivors.append(item)

    size = workspace_size(root_real)
    if size > report.limit_bytes:
        runs: list[tuple[_Item, _Item | None]] = [(child, item) for item in survivors for child in item.children]
        runs += [(item, None) for item in survivors if not item.is_dir]
        runs.sort(key=lambda pair: (pair[0].latest, str(pair[0].path)))
        for child, parent in runs:
            if size <= report.limit_bytes:
                break
            if child.latest >= recent or _protected(child.path, kept):
                continue
            if _remove(child, sessions, report):
                size -= child.size
                if parent is not None:
                    parent.children.remove(child)
        for item in survivors:
            if item.is_dir and not item.children and item.latest < recent and not _protected(item.path, kept):
                try:
                    with os.scandir(item.path) as it:
                        still_empty = next(it, None) is None
                except FileNotFoundError:
                    continue
                if still_empty:
                    _remove(item, sessions, report)

    report.size_after = workspace_size(root_real)
    report.over_limit = report.size_after > report.limit_bytes
    return report
