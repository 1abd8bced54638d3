"""The manual's links work and the README stays a short front door.

Every relative link and image in README.md, CONTRIBUTING.md and docs/*.md
must name a file in the repository, and a `#anchor` must name a heading of
its target page (GitHub's heading ids). Links inside code are not links.
No network: web addresses are not followed.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]
PAGES = sorted([PROJECT / "README.md", PROJECT / "CONTRIBUTING.md", *(PROJECT / "docs").glob("*.md")])
README_MAX_LINES = 260

FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"(`+).+?\1", re.DOTALL)
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)
EXTERNAL = ("http://", "https://", "mailto:")


def prose(text: str) -> str:
    """The page without fenced code blocks and inline code spans."""
    return CODE_SPAN.sub("", FENCE.sub("", text))


def links(page: Path) -> list[str]:
    """Every link and image target in a page's prose, in order."""
    return LINK.findall(prose(page.read_text()))


def slug(heading: str) -> str:
    """GitHub's id for a heading: link text kept, lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """The ids of a page's headings; a repeated heading gets -1, -2, ... as on GitHub."""
    seen: dict[str, int] = {}
    out = set()
    for heading in HEADING.findall(FENCE.sub("", page.read_text())):
        base = slug(heading)
        count = seen.get(base, 0)
        out.add(base if count == 0 else f"{base}-{count}")
        seen[base] = count + 1
    return out


def broken(page: Path, root: Path = PROJECT) -> list[str]:
    """The page's relative links whose file or heading does not exist under `root`, each with the reason."""
    problems = []
    for target in links(page):
        if target.startswith(EXTERNAL):
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.exists() or root.resolve() not in (resolved, *resolved.parents):
            problems.append(f"{target}: no such file in the repository")
        elif anchor and (resolved.suffix != ".md" or anchor not in anchors(resolved)):
            problems.append(f"{target}: no heading #{anchor} in {resolved.relative_to(root.resolve())}")
    return problems


def test_the_checker_finds_links_and_headings_as_github_does(tmp_path: Path) -> None:
    """Known answers: links in code are ignored, images count, ids follow GitHub's rule."""
    page = tmp_path / "page.md"
    page.write_text(
        "# A page\n\n## What `make run` prints\n\n## Notes\n\n## Notes\n\n"
        "See [the notes](#notes-1) and ![a figure](fig.png), not `[code](x.md)`.\n\n"
        "```\n[fenced](y.md)\n# not a heading\n```\n"
    )
    assert links(page) == ["#notes-1", "fig.png"]
    assert anchors(page) == {"a-page", "what-make-run-prints", "notes", "notes-1"}
    assert slug("DP-SGD's randomness") == "dp-sgds-randomness"
    assert slug("A team tracking server (PostgreSQL)") == "a-team-tracking-server-postgresql"


def test_a_missing_file_or_heading_is_reported(tmp_path: Path) -> None:
    """The check can fail: a link to no file, and an anchor to no heading, are each named."""
    (tmp_path / "other.md").write_text("# Other\n")
    page = tmp_path / "page.md"
    page.write_text("[gone](missing.md) [wrong](other.md#nothing) [right](other.md#other) [web](https://example.org)\n")
    assert broken(page, tmp_path) == [
        "missing.md: no such file in the repository",
        "other.md#nothing: no heading #nothing in other.md",
    ]


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(PROJECT)) for p in PAGES])
def test_every_relative_link_and_image_resolves(page: Path) -> None:
    assert broken(page) == []


def test_the_readme_is_a_short_front_door() -> None:
    text = (PROJECT / "README.md").read_text()
    assert len(text.splitlines()) <= README_MAX_LINES
    assert "make run" in text and "make test" in text


def test_every_docs_page_is_reachable_from_the_readme() -> None:
    """Following links from the README reaches every page under docs/ (no orphan pages)."""
    reached, todo = set(), [PROJECT / "README.md"]
    while todo:
        page = todo.pop()
        if page in reached:
            continue
        reached.add(page)
        for target in links(page):
            path = target.partition("#")[0]
            if path.endswith(".md") and not target.startswith(EXTERNAL):
                resolved = (page.parent / path).resolve()
                if resolved.is_file():
                    todo.append(resolved)
    orphans = [str(p.relative_to(PROJECT)) for p in (PROJECT / "docs").glob("*.md") if p.resolve() not in reached]
    assert orphans == [], "link these pages from the README or a page it links"


def test_every_screenshot_is_shown_on_some_page() -> None:
    shown = {(page.parent / target).resolve() for page in PAGES for target in links(page) if target.endswith(".png")}
    unused = [str(p.relative_to(PROJECT)) for p in (PROJECT / "docs").glob("*.png") if p.resolve() not in shown]
    assert unused == []
