"""What the Streamlit pages use: the shell and forms (`ui`), per-browser state (`session`), the
server-wide holders (`holder`), sign-in (`auth`), the notices and GLB viewer panels, and safe
Markdown for user text (`text`). The only package here that imports Streamlit; no torch."""
