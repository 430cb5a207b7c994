"""The README's and the docs' relative links name files that exist, and the README's anchors name its
headings (or a linked page's) as GitHub renders them. `make lint` also builds docs/ with
`mkdocs build --strict`, which checks the links between pages and their anchors the site's way."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]

FENCED = re.compile(r"^```.*?^```[ \t]*$", re.S | re.M)
CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t]*#*[ \t]*$", re.M)


def prose(path: Path) -> str:
    """The page without code (fenced blocks and inline spans), where `](` is not a link."""
    return CODE.sub("", FENCED.sub("", path.read_text(encoding="utf-8")))


def links(path: Path) -> list[str]:
    return [t for t in LINK.findall(prose(path)) if not re.match(r"[a-z][a-z0-9+.-]*:", t)]  # no http:, mailto:


def slug(heading: str) -> str:
    """GitHub's anchor for a heading (MkDocs' agrees for the headings used here)."""
    text = re.sub(r"[^\w\- ]", "", heading.replace("`", "").strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = FENCED.sub("", path.read_text(encoding="utf-8"))
    return {slug(h) for h in HEADING.findall(text)}


def test_there_are_pages_and_links():
    assert len(PAGES) > 5, "docs/*.md missing"
    assert any(t.startswith("docs/") for t in links(README)), "the README links into docs/"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page: Path):
    broken = []
    for target in links(page):
        file, _, anchor = target.partition("#")
        dest = (page.parent / file).resolve() if file else page
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and page == README and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading with that anchor in {dest.relative_to(ROOT)}")
    assert not broken, f"{page.relative_to(ROOT)}: " + "; ".join(broken)


def test_every_page_is_in_the_nav():
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    missing = [p.name for p in PAGES if p != README and f": {p.name}" not in nav]
    assert not missing, f"pages not in mkdocs.yml's nav: {missing}"
