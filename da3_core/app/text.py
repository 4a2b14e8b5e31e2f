"""Text that users supply (file names, error messages) shown safely in Streamlit Markdown.

File names are data. Streamlit renders ``st.warning``, ``st.info``, ``st.markdown`` and
friends as Markdown with its own extensions (``:red[...]`` colours, ``:material/...:``
icons, ``$...$`` maths), so a file named ``[docs](https:evil.example) x.png`` would become
a live link. Streamlit has no escaping helper, so this one backslash-escapes every ASCII
punctuation mark (CommonMark allows that for all of them) and defuses the directives.
"""

from __future__ import annotations

import re

_PUNCTUATION = re.compile(r"([\\`*_{}\[\]()#+\-.!|~<>$:&\"'=^@%])")


def md(text: object) -> str:
    """``text`` escaped so Streamlit's Markdown shows it literally.

    Args:
        text: Any value; ``str(text)`` is escaped.

    Returns:
        The escaped text; line breaks are kept as spaces so a name cannot start a new
        Markdown block (a heading, a list, a table).
    """
    s = str(text).replace("\r", " ").replace("\n", " ")
    return _PUNCTUATION.sub(r"\\\1", s)
