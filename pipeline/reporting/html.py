"""The report as one self-contained HTML page: the Markdown report rendered, its figures embedded.

Python-Markdown (with its tables extension) renders the same text the
repository's `report.md` holds, so the two never disagree; each figure the
text links to is inlined as a base64 PNG, so the page opens anywhere,
from an MLflow artifact view or an e-mail, with nothing beside it.
"""

from __future__ import annotations

import base64
import html

import markdown

STYLE = """
body { font: 15px/1.5 system-ui, sans-serif; max-width: 1180px; margin: 2em auto; padding: 0 1em; color: #1f2328; }
h1, h2 { border-bottom: 1px solid #d0d7de; padding-bottom: .2em; }
table { border-collapse: collapse; margin: 1em 0; font-size: 13px; }
th, td { border: 1px solid #d0d7de; padding: 3px 8px; }
th { background: #f6f8fa; position: sticky; top: 0; }
tr:nth-child(even) td { background: #fafbfc; }
td:not(:first-child):not(:nth-child(2)) { font-variant-numeric: tabular-nums; white-space: nowrap; }
img { max-width: 100%; }
code { background: #f6f8fa; padding: 0 .25em; border-radius: 3px; }
"""


def html_page(markdown_text: str, figures: dict[str, bytes], title: str) -> str:
    """The page for `markdown_text`; `figures` maps each linked file name (e.g. "roc.png") to its PNG bytes."""
    body = markdown.markdown(markdown_text, extensions=["tables"], output_format="html")
    for name, png in figures.items():
        data = base64.b64encode(png).decode("ascii")
        body = body.replace(f'src="{name}"', f'src="data:image/png;base64,{data}"')
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{html.escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n"
    )
