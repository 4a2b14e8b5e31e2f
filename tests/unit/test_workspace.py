"""The on-disk workspace: generated names, safe_join, saved uploads, clean-up policy."""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from da3_core.runs import workspace as ws
from da3_core.runs.workspace import UnsafePathError, cleanup, safe_join
from tests.unit import inputs_corpus as corpus

NOW = 1_800_000_000.0  # a fixed "now" (epoch seconds) for the clean-up tests
HOUR = 3600.0
MIB = 1024 * 1024


# --------------------------------------------------------------------------------------
# safe_join
# --------------------------------------------------------------------------------------


def test_safe_join_plain(tmp_path: Path) -> None:
    assert safe_join(tmp_path, "a", "b/c.txt") == tmp_path.resolve() / "a" / "b" / "c.txt"
    assert safe_join(tmp_path) == tmp_path.resolve()
    assert safe_join(tmp_path, "./a/./b") == tmp_path.resolve() / "a" / "b"


@pytest.mark.parametrize(
    "parts",
    [
        ("..",),
        ("a", "..", "..", "b"),
        ("a/../../b",),
        ("a\\..\\..\\b",),
        ("/etc/passwd",),
        ("\\\\server\\share",),
        ("C:\\Windows",),
        ("c:relative",),
        ("a\x00b",),
    ],
)
def test_safe_join_refuses_escapes(tmp_path: Path, parts: tuple[str, ...]) -> None:
    with pytest.raises(UnsafePathError):
        safe_join(tmp_path, *parts)


def test_safe_join_refuses_symlink_out(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "link").symlink_to(outside, target_is_directory=True)
    (root / "inner").mkdir()
    (root / "link_in").symlink_to(root / "inner", target_is_directory=True)
    with pytest.raises(UnsafePathError):
        safe_join(root, "link")
    with pytest.raises(UnsafePathError):
        safe_join(root, "link", "file.txt")
    assert safe_join(root, "link_in", "f") == (root / "inner" / "f").resolve()


# --------------------------------------------------------------------------------------
# Sessions, runs, uploads
# --------------------------------------------------------------------------------------


def test_new_session_and_run_names(tmp_path: Path) -> None:
    session = ws.new_session(tmp_path / "ws")
    assert session.parent == (tmp_path / "ws" / "sessions").resolve()
    assert re.fullmatch(r"[0-9a-f]{32}", session.name)
    assert ws.session_path(tmp_path / "ws", session.name) == session
    run = ws.new_run(session, now=datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC))
    assert re.fullmatch(r"run-20250304-050607-[0-9a-f]{6}", run.name) and run.is_dir()


@pytest.mark.parametrize("bad", ["../x", "ABCDEF" * 6, "0" * 31, "g" * 32, "", "0" * 32 + "/x"])
def test_session_path_refuses_bad_ids(tmp_path: Path, bad: str) -> None:
    with pytest.raises(UnsafePathError):
        ws.session_path(tmp_path, bad)


def test_runs_sort_by_creation_time(tmp_path: Path) -> None:
    session = ws.new_session(tmp_path)
    start = datetime(2025, 12, 31, 23, 59, 58, tzinfo=UTC)
    made = [ws.new_run(session, now=start + timedelta(seconds=s)) for s in (5, 0, 3600, 1)]
    (session / "notes.txt").write_text("x")
    (session / "run-20990101-000000-abcdef").symlink_to(tmp_path, target_is_directory=True)
    listed = ws.list_runs(session)
    assert listed == [made[1], made[3], made[0], made[2]]
    assert ws.list_runs(tmp_path / "missing") == []


def test_save_upload_uses_generated_names(tmp_path: Path) -> None:
    run = ws.new_run(ws.new_session(tmp_path))
    jpeg = corpus.encode(corpus.gradient_rgb(), "JPEG")
    p1 = ws.save_upload(run, 3, jpeg)
    assert p1 == run / "input" / "0003.jpg" and p1.read_bytes() == jpeg
    p2 = ws.save_upload(run, 4, b"not a known format")
    assert p2.name == "0004.bin"
    p3 = ws.save_upload(run, 5, corpus.encode(corpus.gradient_rgb(), "PNG"), ext="PNG")
    assert p3.name == "0005.png"
    assert sorted(p.name for p in (run / "input").iterdir()) == ["0003.jpg", "0004.bin", "0005.png"]
    for bad_ext in ("../x", "a/b", "toolong", ""):
        with pytest.raises(ValueError):
            ws.save_upload(run, 6, b"x", ext=bad_ext)
    with pytest.raises(ValueError):
        ws.save_upload(run, -1, b"x")


# --------------------------------------------------------------------------------------
# Clean-up
# --------------------------------------------------------------------------------------


def set_age(path: Path, hours: float) -> None:
    """Give ``path`` and everything below it an mtime ``hours`` before NOW (links not followed)."""
    t = NOW - hours * HOUR
    for dirpath, dirnames, filenames in os.walk(path, topdown=False, followlinks=False):
        for name in filenames + dirnames:
            os.utime(os.path.join(dirpath, name), (t, t), follow_symlinks=False)
    os.utime(path, (t, t), follow_symlinks=False)


def make_run(session: Path, name: str, size: int, hours: float) -> Path:
    run = session / name
    (run / "input").mkdir(parents=True)
    (run / "input" / "0000.jpg").write_bytes(b"\x00" * size)
    (run / "result.npz").write_bytes(b"\x01" * 10)
    set_age(run, hours)
    return run


def make_session(root: Path, sid: str) -> Path:
    session = root / "sessions" / sid
    session.mkdir(parents=True)
    return session


def test_cleanup_by_age(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    s_old = make_session(root, "a" * 32)
    make_run(s_old, "run-20250101-000000-000001", 100, 100)
    set_age(s_old, 100)
    s_mixed = make_session(root, "b" * 32)
    old_run = make_run(s_mixed, "run-20250101-000000-000002", 100, 80)
    new_run = make_run(s_mixed, "run-20250105-000000-000003", 100, 1)
    s_kept = make_session(root, "c" * 32)
    kept_run = make_run(s_kept, "run-20250101-000000-000004", 100, 200)
    set_age(s_kept, 200)
    demo = root / "demo-weights" / "da3-small"
    demo.mkdir(parents=True)
    (demo / "model.safetensors").write_bytes(b"\x00" * 1000)
    set_age(root / "demo-weights", 10_000)

    report = cleanup(root, max_age_h=72, max_gb=5, now=NOW, keep=[kept_run])

    assert not s_old.exists() and not old_run.exists()
    assert new_run.exists() and s_mixed.exists()
    assert kept_run.exists() and s_kept.exists()
    assert (demo / "model.safetensors").exists()
    assert set(report.removed) == {s_old.resolve(), old_run.resolve()}
    assert report.freed_bytes == 2 * 110
    assert report.errors == [] and not report.over_limit
    # demo-weights are not counted against the budget
    assert report.size_after == ws.workspace_size(root) == 2 * 110


def test_cleanup_keeping_a_session_keeps_its_runs(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    session = make_session(root, "d" * 32)
    run = make_run(session, "run-20250101-000000-000005", 10, 500)
    set_age(session, 500)
    cleanup(root, max_age_h=1, max_gb=5, now=NOW, keep=[str(session)])
    assert run.exists()


def test_cleanup_by_size_oldest_first(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    session = make_session(root, "e" * 32)
    runs = [
        make_run(session, f"run-2025010{i}-000000-00000{i}", MIB, hours)
        for i, hours in enumerate((5.0, 4.0, 3.0, 2.0), start=1)
    ]
    other = make_session(root, "f" * 32)
    newest = make_run(other, "run-20250109-000000-000009", MIB, 0.5)
    kept = make_run(other, "run-20250101-000000-00000a", MIB, 9.0)  # the oldest, but kept
    set_age(other, 0.5)
    budget_gb = 3.5 * MIB / 1024**3  # room for three 1 MiB runs

    report = cleanup(root, max_age_h=72, max_gb=budget_gb, now=NOW, keep=[kept])

    assert [p.name for p in report.removed] == [runs[0].name, runs[1].name, runs[2].name]
    assert runs[3].exists() and newest.exists() and kept.exists()
    assert report.size_after <= report.limit_bytes and not report.over_limit
    assert report.size_before - report.size_after == report.freed_bytes


def test_cleanup_spares_very_recent_runs_even_over_budget(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    session = make_session(root, "1" * 32)
    fresh = make_run(session, "run-20250101-000000-000001", MIB, 60 / HOUR)  # 1 minute old
    report = cleanup(root, max_age_h=72, max_gb=0.1 * MIB / 1024**3, now=NOW)
    assert fresh.exists() and report.removed == [] and report.over_limit
    report = cleanup(root, max_age_h=72, max_gb=0.1 * MIB / 1024**3, now=NOW, min_age_s=0)
    assert not fresh.exists()
    assert not session.exists()  # emptied, old enough with min_age_s=0


def test_cleanup_never_follows_symlinks_out(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    outside = tmp_path / "precious"
    outside.mkdir()
    (outside / "data.bin").write_bytes(b"\x00" * 5000)
    set_age(outside, 1000)
    session = make_session(root, "2" * 32)
    run = make_run(session, "run-20250101-000000-000001", 10, 100)
    (run / "escape").symlink_to(outside, target_is_directory=True)
    (root / "sessions" / ("3" * 32)).symlink_to(outside, target_is_directory=True)
    (session / "run-20250101-000000-00000f").symlink_to(outside, target_is_directory=True)
    set_age(root / "sessions", 100)

    assert ws.workspace_size(root) == 20  # the 5000 bytes behind links are not counted
    report = cleanup(root, max_age_h=1, max_gb=5, now=NOW)

    assert (outside / "data.bin").exists() and (outside / "data.bin").stat().st_size == 5000
    assert not (root / "sessions" / ("3" * 32)).is_symlink()  # the link itself went
    assert not session.exists()
    assert report.errors == []


def test_cleanup_ignores_a_symlinked_sessions_folder(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    root.mkdir()
    outside = tmp_path / "elsewhere"
    victim = outside / ("4" * 32) / "run-20250101-000000-000001"
    victim.mkdir(parents=True)
    set_age(outside, 1000)
    (root / "sessions").symlink_to(outside, target_is_directory=True)
    report = cleanup(root, max_age_h=1, max_gb=0.000001, now=NOW, min_age_s=0)
    assert victim.exists() and report.removed == []


def test_cleanup_leaves_other_top_level_entries(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    root.mkdir()
    (root / "notes.txt").write_text("keep me")
    set_age(root / "notes.txt", 1000)
    cleanup(root, max_age_h=1, max_gb=5, now=NOW)
    assert (root / "notes.txt").exists()


def test_cleanup_missing_root_and_datetime_now(tmp_path: Path) -> None:
    assert cleanup(tmp_path / "nope", 1, 1).removed == []
    root = tmp_path / "ws"
    session = make_session(root, "5" * 32)
    make_run(session, "run-20250101-000000-000001", 10, 100)
    set_age(session, 100)
    report = cleanup(root, 72, 5, now=datetime.fromtimestamp(NOW, UTC))
    assert report.removed == [session.resolve()]


def test_new_run_recreates_a_cleaned_session(tmp_path: Path) -> None:
    session = ws.new_session(tmp_path)
    set_age(session, 1000)
    cleanup(tmp_path, 1, 5, now=NOW)
    assert not session.exists()
    assert ws.new_run(session).parent == session and session.is_dir()
