"""The entry point (`streamlit run streamlit_app.py`): Streamlit's navigation over the pages in
``pages/``, listed once in `da3_core.app.ui.NAV` (titles, icons, URLs)."""

from __future__ import annotations

import streamlit as st

from da3_core.app import ui

st.navigation(ui.pages()).run()
