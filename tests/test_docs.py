"""The README and the pages under docs/: every relative link resolves, every page is linked from the README, and the
README's code map names exactly what `ucir/` holds."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

# [text](target) and ![alt](target), outside code spans and fenced blocks (see _prose)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def _prose(text: str) -> str:
    """The text without fenced code blocks and inline code spans, where brackets are not links."""
    text = re.sub(r"^```.*?^```[^\n]*$", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def _anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    return {_anchor(m[1]) for m in re.finditer(r"^#+\s+(.*)$", _prose(page.read_text()), re.M)}


def links(page: Path) -> list[str]:
    return [m[1] for m in LINK.finditer(_prose(page.read_text()))]


def broken_links(page: Path) -> list[str]:
    """Relative links of `page` whose file (or heading anchor) does not exist; web and mail links are not checked."""
    bad = []
    for target in links(page):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):          # http:, https:, mailto:
            continue
        path, _, fragment = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            bad.append(target)
        elif fragment and dest.suffix == ".md" and fragment not in _anchors(dest):
            bad.append(target)
    return bad


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_relative_links_resolve(page):
    assert not broken_links(page), f"{page.relative_to(REPO)}: links to nothing: {broken_links(page)}"


def test_broken_links_are_found(tmp_path):
    (tmp_path / "there.md").write_text("# A heading\n")
    page = tmp_path / "page.md"
    page.write_text("[ok](there.md) [ok too](there.md#a-heading) ![img](missing.png) [gone](nowhere.md)\n"
                    "[bad anchor](there.md#no-such-heading) [web](https://example.org/x) `[code](nowhere.md)`\n"
                    "```\n[fenced](nowhere.md)\n```\n")
    assert broken_links(page) == ["missing.png", "nowhere.md", "there.md#no-such-heading"]


def test_every_docs_page_is_linked_from_the_readme():
    linked = {(REPO / t.partition("#")[0]).resolve() for t in links(REPO / "README.md")}
    unlinked = [p.relative_to(REPO).as_posix() for p in PAGES[1:] if p.resolve() not in linked]
    assert not unlinked, f"docs pages the README does not link: {unlinked}"


def _code_map() -> list[str]:
    """The entries of the README's code map: the fenced block of "The code in one page" that starts with `ucir/`."""
    text = (REPO / "README.md").read_text()
    section = re.search(r"^## The code in one page\n(.*?)(?=^## )", text, re.S | re.M)
    assert section, "README.md lacks the section 'The code in one page'"
    block = re.search(r"^```\nucir/\n(.*?)^```", section[1], re.S | re.M)
    assert block, "'The code in one page' lacks its code map (a fenced block starting with `ucir/`)"
    return [m[1] for m in re.finditer(r"^  (\S+)", block[1], re.M)]


def _package_listing() -> set[str]:
    pkg = REPO / "ucir"
    modules = {p.name for p in pkg.glob("*.py") if p.name != "__init__.py"}
    packages = {p.name + "/" for p in pkg.iterdir() if (p / "__init__.py").exists()}
    return modules | packages


def test_code_map_names_every_module_of_the_package():
    missing = sorted(_package_listing() - set(_code_map()))
    assert not missing, f"ucir/ holds what the README's code map does not name: {missing}"


def test_code_map_names_only_what_the_package_holds():
    entries = _code_map()
    assert len(entries) == len(set(entries)), f"the code map names an entry twice: {entries}"
    extra = sorted(set(entries) - _package_listing())
    assert not extra, f"the README's code map names what ucir/ does not hold: {extra}"
