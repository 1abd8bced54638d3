"""The HTML report is self-contained and says what the Markdown report says; the ROC figure highlights a few attacks."""

from __future__ import annotations

import base64

from pipeline.reporting.figures import highlighted_attacks
from pipeline.reporting.html import html_page

PNG = b"\x89PNG\r\n\x1a\nfake"


def test_html_page_renders_tables_and_embeds_every_linked_figure() -> None:
    text = "# Audit <1>\n\n| target | AUC |\n|---|---|\n| undefended | 0.660 |\n\n![ROC](roc.png)\n\n![trade-off](privacy_utility.png)\n"
    page = html_page(text, {"roc.png": PNG, "privacy_utility.png": PNG + b"2"}, "Audit & co")
    assert page.startswith("<!DOCTYPE html>") and "<title>Audit &amp; co</title>" in page
    assert "<table>" in page and "<td>undefended</td>" in page and "<td>0.660</td>" in page
    assert 'src="roc.png"' not in page and 'src="privacy_utility.png"' not in page  # nothing left to fetch
    assert f'src="data:image/png;base64,{base64.b64encode(PNG).decode()}"' in page
    assert f'src="data:image/png;base64,{base64.b64encode(PNG + b"2").decode()}"' in page


def test_the_roc_figure_colours_the_headline_and_the_post_hoc_best_attacks() -> None:
    def row(headline: str, best_auc: str | None, best_tpr: str | None) -> dict:
        optimistic = {"auc": {"attack": best_auc}, "tpr_at_1pct_fpr": {"attack": best_tpr}, "tpr_at_lowest_fpr": {"attack": None}}
        return {"headline": {"attack": headline, "optimistic": optimistic}}

    table = {"undefended": row("lira_online", "rmia_offline", "lira_online"), "dp_sgd": row("rmia_offline", None, None)}
    assert highlighted_attacks(table) == {"undefended": ["lira_online", "rmia_offline"], "dp_sgd": ["rmia_offline"]}
