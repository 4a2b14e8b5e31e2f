"""Compare: two runs of the same frames side by side (numbers, overlaid clouds, depth differences),
a run scored against its reference (a bundled example's truth, or known cameras), and a COLMAP
folder evaluated at two settings. Every number is computed in a child process
(`da3_core.runs.compare`); this page only draws."""

from __future__ import annotations

import streamlit as st

from da3_core.app import compare_view, ui

ctx = ui.page_setup("Compare", "⚖️")
st.title("Compare")
compare_view.render(ctx)
