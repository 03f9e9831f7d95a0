"""Every link in README.md works where the README is read: on the repository page.

A relative target must name a file or folder of the repository (an ``#anchor`` into a
markdown file must be one of the heading anchors GitHub makes for it; other anchors are
not checked), and no link may point at the documentation site, which is built from
``doc/`` by ``.github/workflows/docs.yml`` and may not be deployed: a reader of the
README must be able to follow every link without it.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"

# ``[text](target)`` and ``![alt](target "title")``; the text may hold backticks and
# brackets one level deep (``[`skdvl` command](doc/cli.md)``).
_INLINE = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
# ``[label]: target`` reference definitions.
_REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$", re.MULTILINE)
_FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
_CODE_SPAN = re.compile(r"(`+)(?!`).*?(?<!`)\1", re.DOTALL)
_SITE = "skdvl.github.io"


def _prose(text: str) -> str:
    """``text`` without fenced code blocks, whose brackets are code, not links."""
    return _FENCE.sub("", text)


def markdown_links(text: str) -> list[str]:
    """The target of every inline link, image and reference definition in ``text``."""
    prose = _prose(text)
    # Code spans inside link text stay (they are part of the link); a code span that is
    # not inside a link cannot hold one, so only its own brackets are blanked.
    targets = [m.group(1) for m in _INLINE.finditer(prose)]
    targets += [m.group(1) for m in _REFERENCE.finditer(_CODE_SPAN.sub("", prose))]
    return targets


_HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t]*#*[ \t]*$", re.MULTILINE)


def github_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives the headings of ``markdown`` (``## `A` b`` -> ``a-b``)."""
    anchors: set[str] = set()
    seen: dict[str, int] = {}
    for m in _HEADING.finditer(_prose(markdown)):
        text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", m.group(1))  # a link: its text
        slug = re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        anchors.add(slug if n == 0 else f"{slug}-{n}")
    return anchors


def _is_relative(target: str) -> bool:
    parts = urlsplit(target)
    return not parts.scheme and not parts.netloc and not target.startswith("#")


def broken_links(text: str, root: Path = ROOT) -> list[str]:
    """The links of ``text`` (a markdown file at ``root``) that go nowhere, with why."""
    problems = []
    for target in markdown_links(text):
        if _SITE in target:
            problems.append(f"{target}: the documentation site (link to the source in doc/)")
        elif _is_relative(target):
            path = unquote(urlsplit(target).path)
            if path.startswith("/"):
                problems.append(f"{target}: absolute path (GitHub resolves it elsewhere)")
            elif not (root / path).exists():
                problems.append(f"{target}: no {path} in the repository")
            elif (anchor := urlsplit(target).fragment) and path.endswith(".md"):
                headings = github_anchors((root / path).read_text(encoding="utf-8"))
                if unquote(anchor) not in headings:
                    problems.append(f"{target}: no heading #{anchor} in {path}")
    return problems


def test_readme_has_links():
    # The parser finds the links; a README whose links it missed would pass vacuously.
    assert len(markdown_links(README.read_text(encoding="utf-8"))) >= 20


def test_readme_links_resolve():
    problems = broken_links(README.read_text(encoding="utf-8"))
    assert not problems, "README.md links that go nowhere:\n" + "\n".join(problems)


@pytest.mark.parametrize(
    ("text", "n_broken"),
    [
        ("[semivalues](doc/methods/semivalues.md)", 0),
        ("[stopping](doc/valuation.md#stopping)", 0),
        ("[c](doc/cleaning.md#datacleaner-in-an-imbalanced-learn-pipeline)", 0),
        ("[no heading](doc/valuation.md#no-such-heading)", 1),
        ("[api](doc/api.rst#not-checked)", 0),
        ("[the examples](examples/)", 0),
        ("[`skdvl` command](doc/cli.md)", 0),
        ("[web](https://github.com/skdvl/skdvl) and [top](#skdvl)", 0),
        ("[gone](doc/no_such_page.md)", 1),
        ("[gone](doc/no_such_page.md#anchor)", 1),
        ("[api](https://skdvl.github.io/skdvl/api.html)", 1),
        ("[x]: https://skdvl.github.io/skdvl/cli.html", 1),
        ("[`ShapleyValuer`](https://skdvl.github.io/skdvl/generated/skdvl.ShapleyValuer.html)", 1),
        ("```python\nx[0](y)\n```\n[ok](README.md)", 0),
    ],
)
def test_broken_links_detects(text, n_broken):
    assert len(broken_links(text)) == n_broken


def test_github_anchors():
    text = "# Top\n\n## `DataCleaner` in a pipeline\n\n```\n# not a heading\n```\n## Top\n"
    assert github_anchors(text) == {"top", "datacleaner-in-a-pipeline", "top-1"}
