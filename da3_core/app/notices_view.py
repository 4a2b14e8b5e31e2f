"""The Runner page's "Notices from the workers": each distinct third-party warning once,
with what it means (`da3_core.runs.notices`)."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import streamlit as st

from da3_core.app.text import md
from da3_core.runs.notices import explain, harmless_label

TITLE = "Notices from the workers"
ICONS = {"yes": "✅", "no": "⚠️", "unknown": "❔"}
EMPTY = "Nothing was printed: no library warned in the workers so far (their start, model loads and runs included)."


def notice_rows(workers: Iterable[Any]) -> list[dict[str, object]]:
    """One row per distinct notice over ``workers`` (`WorkerStatus`es), first seen first:
    its counts added, the workers that printed it named once each."""
    merged: dict[tuple[str, str, str, str], dict[str, Any]] = {}
    for worker in workers:
        for notice in worker.notices:
            entry = merged.setdefault(
                notice.key, {"notice": notice, "count": 0, "first": notice.first_seen, "workers": []}
            )
            entry["count"] += notice.count
            entry["first"] = min(entry["first"], notice.first_seen)
            if worker.label not in entry["workers"]:
                entry["workers"].append(worker.label)
    rows = []
    for entry in sorted(merged.values(), key=lambda e: e["first"]):
        notice = entry["notice"]
        meaning = explain(notice.message, notice.source)
        rows.append(
            {
                "harmless": harmless_label(meaning.harmless),
                "meaning": meaning.meaning,
                "what to do": meaning.action,
                "message": notice.message,
                "from": f"{notice.source} ({notice.category})",
                "worker": ", ".join(entry["workers"]),
                "first seen": time.strftime("%H:%M:%S", time.localtime(entry["first"])) if entry["first"] else "",
                "times": entry["count"],
            }
        )
    return rows


def show_notices(workers: Iterable[Any]) -> None:
    """The section: each notice as its meaning, where and when it was seen, and its text as
    printed; or a line saying there are none."""
    rows = notice_rows(workers)
    st.markdown(f"**{TITLE}**")
    if not rows:
        st.caption(EMPTY)
        return
    st.caption(
        "What torch, DA3 and their libraries printed in the workers, each once: captured there instead of "
        "the server's terminal. `DA3_APP_LOG_LEVEL=DEBUG` prints them in the terminal too."
    )
    for row in rows:
        icon = ICONS[str(row["harmless"])]
        action = f" **What to do:** {md(row['what to do'])}" if row["what to do"] else ""
        st.markdown(f"{icon} **Harmless: {row['harmless']}.** {md(row['meaning'])}{action}")
        st.caption(
            md(f"from {row['from']} · {row['worker']} · first seen {row['first seen']} · {row['times']} time(s)")
        )
        st.code(str(row["message"]), language="text")


__all__ = ["EMPTY", "ICONS", "TITLE", "notice_rows", "show_notices"]
