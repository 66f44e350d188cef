"""The documentation: every relative link resolves inside the repository; the README stays short."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README_LIMIT = 11_000  # bytes
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "bench" / "README.md"]

# [text](target) and [text](target "title"); images too. Code spans and fenced blocks are removed
# first, so that code that looks like a link is not checked.
LINK = re.compile(r"\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
CODE = re.compile(r"`[^`\n]*`")


def links(path: Path) -> list[str]:
    text = CODE.sub("", FENCE.sub("", path.read_text(encoding="utf-8")))
    return LINK.findall(text)


def relative(target: str) -> bool:
    return not re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I) and not target.startswith("#")


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve_inside_the_repository(doc: Path) -> None:
    assert doc.is_file(), doc
    broken = []
    for target in links(doc):
        if not relative(target):
            continue
        path = target.split("#", 1)[0].split("?", 1)[0]
        resolved = (ROOT / path.lstrip("/")) if path.startswith("/") else (doc.parent / path)
        resolved = resolved.resolve()
        if not resolved.is_relative_to(ROOT) or not resolved.exists():
            broken.append(target)
    assert not broken, f"{doc.relative_to(ROOT)}: links outside the repository or missing: {broken}"


def test_readme_is_short() -> None:
    size = len((ROOT / "README.md").read_bytes())
    assert size <= README_LIMIT, f"README.md is {size} bytes, more than {README_LIMIT}"


def test_the_link_check_catches_what_it_should() -> None:
    text = "[a](docs/x.md#y) [b](https://e.org) [c](#top) `[d](no.md)` [e](../shared/DESIGN.md)"
    found = LINK.findall(CODE.sub("", text))
    assert found == ["docs/x.md#y", "https://e.org", "#top", "../shared/DESIGN.md"]
    assert [t for t in found if relative(t)] == ["docs/x.md#y", "../shared/DESIGN.md"]
    assert not (ROOT / "../shared/DESIGN.md").resolve().is_relative_to(ROOT)
