"""The Runner page's "Notices from the workers" (`da3_core.app.notices_view`), in process: each
distinct notice once with its meaning, merged over workers; the empty state; and the
section on the real Runner page."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest

from da3_core.app.notices_view import EMPTY, TITLE, notice_rows
from da3_core.runner import WorkerStatus
from da3_core.runner.protocol import Notice
from tests.app.kit import PAGES, check, texts

XFORMERS = (
    "WARNING[XFORMERS]: xFormers can't load C++/CUDA extensions. xFormers was built for:\n"
    "    PyTorch 2.10.0+cu128 with CUDA 1208 (you have 2.14.1+cu130)"
)
OMEGACONF = "register_new_resolver() is deprecated and will be removed in a future release."


def worker(label: str, *notices: Notice) -> WorkerStatus:
    return WorkerStatus(label, "CPU", "idle", 1, None, None, 0.0, None, 1, 0, 0, {}, tuple(notices))


WORKERS = [
    worker(
        "worker 1",
        Notice(XFORMERS, "log", "WARNING", "xformers", 1, 1000.0),
        Notice(OMEGACONF, "warning", "UserWarning", "depth_anything_3.cfg", 1, 1001.0),
        Notice("something new", "print", "stdout", "a.library", 3, 1002.0),
    ),
    worker("worker 2", Notice(XFORMERS, "log", "WARNING", "xformers", 2, 999.0)),
]


def page() -> None:  # runs inside AppTest: imports its own names
    import streamlit as st

    from da3_core.app.notices_view import show_notices

    show_notices(st.session_state.get("workers", []))


def test_rows_merge_workers_and_explain():
    rows = notice_rows(WORKERS)
    assert [r["message"] for r in rows] == [XFORMERS, OMEGACONF, "something new"]  # first seen first
    xformers = rows[0]
    assert xformers["worker"] == "worker 1, worker 2" and xformers["times"] == 3 and xformers["harmless"] == "yes"
    assert "attention" in xformers["meaning"] and xformers["from"] == "xformers (WARNING)"
    assert rows[2]["harmless"] == "unknown" and "shown as printed" in rows[2]["meaning"]
    assert notice_rows([worker("worker 1")]) == []


def test_the_section_lists_each_notice_once_with_its_meaning():
    at = AppTest.from_function(page, default_timeout=30)
    at.session_state["workers"] = WORKERS
    at.run()
    check(at, "notices")
    markdown = texts(at.markdown)
    assert markdown[0] == f"**{TITLE}**"
    meanings = markdown[1:]
    assert len(meanings) == 3
    assert (
        meanings[0].startswith("✅ **Harmless: yes.** xFormers has no compiled kernels") and "What to do" in meanings[0]
    )
    assert meanings[2].startswith("❔ **Harmless: unknown.** Not known to this dashboard")
    assert [c.value for c in at.code] == [XFORMERS, OMEGACONF, "something new"]
    where = [c for c in texts(at.caption) if c.startswith("from ")]
    assert where[0].startswith("from xformers (WARNING) · worker 1, worker 2 · first seen ") and where[0].endswith(
        "· 3 time(s)"
    )


def test_the_empty_state_says_nothing_was_printed():
    at = AppTest.from_function(page, default_timeout=30)
    at.run()
    check(at, "no notices")
    assert texts(at.markdown) == [f"**{TITLE}**"] and texts(at.caption) == [EMPTY]
    assert not at.code


def test_the_runner_page_has_the_section(new_app):
    at = new_app()
    at.run()
    at.switch_page(PAGES[4]).run()
    check(at, "runner")
    assert f"**{TITLE}**" in texts(at.markdown)
