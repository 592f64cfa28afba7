"""Every link to a section of the docs (README, docs/, code comments and docstrings) names a heading that exists:
renaming a heading without its links fails here."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
LINK = re.compile(r"(?:docs/)?([a-z0-9_-]+\.md)#([A-Za-z0-9_-]+)")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped (letters, digits, spaces, - and _ kept),
    spaces to hyphens."""
    text = re.sub(r"`", "", heading.strip().lower())
    text = "".join(c for c in text if c.isalnum() or c in " -_")
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found, fenced = set(), False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and line.startswith("#"):
            found.add(slug(line.lstrip("#")))
    return found


def sources():
    yield ROOT / "README.md"
    yield from sorted(DOCS.glob("*.md"))
    yield from sorted((ROOT / "src").rglob("*.py"))


def test_slug_follows_github():
    assert slug("HAG — Yang et al., Adversarial examples (IEEE T-Cybernetics 2018)") == \
        "hag--yang-et-al-adversarial-examples-ieee-t-cybernetics-2018"
    assert slug("The `alpha` schedule") == "the-alpha-schedule"


@pytest.mark.parametrize("path", list(sources()), ids=lambda p: str(p.relative_to(ROOT)))
def test_section_links_resolve(path):
    text = path.read_text(encoding="utf-8")
    broken = []
    for name, anchor in LINK.findall(text):
        target = DOCS / name
        if not target.is_file():
            if (ROOT / name).is_file() or name in ("SPEC.md", "STYLE.md"):
                continue  # README.md#... or the shared contract, not a docs page
            broken.append(f"{name}#{anchor} (no docs/{name})")
        elif anchor not in anchors(target):
            broken.append(f"{name}#{anchor}")
    assert not broken, f"{path.relative_to(ROOT)} links to missing sections: {broken}"
