"""File names shown as data (never Markdown), and process_res as DA3 really runs it."""

from __future__ import annotations

import pytest

from da3_core.app.text import md
from da3_core.presets import snap_process_res


@pytest.mark.parametrize(
    "name",
    [
        "[docs](https:evil.example) x.png",
        "**x**.png",
        ":red[alarm].png",
        "$x^2$.png",
        "<b>hi</b>.png",
        "# title.png",
        "a\nb.png",
        "`code`.png",
        "x_y_z.png",
    ],
)
def test_md_escapes_every_markdown_construct(name: str) -> None:
    escaped = md(name)
    # Every punctuation mark is escaped, so no link, emphasis, directive, maths, HTML or code span can form.
    for ch in "[]()*:$<>#`_":
        assert ch not in escaped.replace("\\" + ch, ""), (name, escaped)
    assert "\n" not in escaped


def test_md_keeps_plain_text_readable() -> None:
    assert md("café photo 1") == "café photo 1"
    assert md(42) == "42"


@pytest.mark.parametrize(
    "asked,method,used",
    [
        (504, "upper_bound_resize", 504),
        (113, "upper_bound_resize", 112),
        (119, "upper_bound_resize", 126),
        (20, "upper_bound_resize", 14),
        (125, "upper_bound_crop", 112),
        (5, "lower_bound_resize", 14),
        (9999, "upper_bound_resize", 4088),
    ],
)
def test_snap_process_res_matches_da3_rounding(asked: int, method: str, used: int) -> None:
    assert snap_process_res(asked, method) == used
