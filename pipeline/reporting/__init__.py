"""The report: the results table, Markdown, figures and the self-contained HTML page."""
