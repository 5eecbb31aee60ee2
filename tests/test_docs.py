"""The documentation: README.md stays short, docs/configuration.md matches the config models it is generated
from, and every relative link in README.md and docs/*.md reaches a file (and, into Markdown, a heading).
No Ray, no models."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
README_MAX_LINES = 200

FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"\[[^\]]*\]\(\s*([^)\s]+)(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def _prose(text: str) -> str:
    """Markdown without fenced code blocks and code spans, where brackets are code, not links."""
    return CODE_SPAN.sub("", FENCE.sub("", text))


def _anchors(path: Path) -> set[str]:
    """The heading anchors GitHub makes for a Markdown file."""
    anchors: set[str] = set()
    for heading in HEADING.findall(FENCE.sub("", path.read_text())):
        slug = re.sub(r"[^\w\- ]", "", heading.replace("`", "").strip().lower()).replace(" ", "-")
        candidate, n = slug, 0
        while candidate in anchors:
            n += 1
            candidate = f"{slug}-{n}"
        anchors.add(candidate)
    return anchors


@pytest.mark.timeout(120)
def test_configuration_reference_is_current():
    result = subprocess.run(
        [sys.executable, str(ROOT / "docs" / "config_reference.py"), "--check"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 0, (
        f"{result.stderr or result.stdout}\nThe config models changed: regenerate the reference with "
        "`python docs/config_reference.py` and commit docs/configuration.md"
    )


@pytest.mark.timeout(60)
def test_readme_is_short():
    lines = len(README.read_text().splitlines())
    assert lines <= README_MAX_LINES, (
        f"README.md has {lines} lines (at most {README_MAX_LINES}): move the details to a page under docs/"
    )


@pytest.mark.timeout(60)
@pytest.mark.parametrize("page", [README, *DOCS], ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page: Path):
    broken = []
    for target in LINK.findall(_prose(page.read_text())):
        if SCHEME.match(target):
            continue  # http(s), mailto: not checked here
        path_part, _, anchor = target.partition("#")
        path = (page.parent / path_part).resolve() if path_part else page
        if not path.exists():
            broken.append(f"{target}: no such file {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
        elif anchor and path.suffix == ".md" and anchor not in _anchors(path):
            broken.append(f"{target}: no heading #{anchor} in {path.relative_to(ROOT)}")
    assert not broken, f"{page.relative_to(ROOT)}: broken links:\n  " + "\n  ".join(broken)


@pytest.mark.timeout(60)
def test_docs_pages_exist():
    """The pages the README's table and the issue ask for."""
    names = {p.name for p in DOCS}
    assert {
        "concepts.md",
        "configuration.md",
        "benchmarks.md",
        "python-api.md",
        "cluster.md",
        "sandbox.md",
        "teachers.md",
    } <= names


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()


def test_the_mutation_record_is_not_older_than_a_release():
    """docs/mutation.md's rule: a release starts at the last commit that changed ``version`` in pyproject.toml; every
    covered file that existed then was measured as it was at or after that commit (or is now), and the record's
    figures hold: every score at least 90%, every survivor explained (``ACCEPTED`` in tests/mutation.py)."""
    from tests import mutation

    record = mutation.read_record()
    assert record, "docs/mutation.md holds no measurements: run `make mutation`"
    release = _git("log", "-1", "--format=%H", "-G", r"^version = ", "--", "pyproject.toml")
    stale = []
    for path in mutation.covered():
        existed = subprocess.run(["git", "cat-file", "-e", f"{release}:{path}"], cwd=ROOT).returncode == 0
        if path not in record:
            if existed:
                stale.append(f"{path}: not measured")
            continue
        seen = {mutation.blob(path)} | {
            _git("rev-parse", f"{c}:{path}") for c in _git("rev-list", f"{release}..HEAD", "--", path).split()
        }
        if existed:
            seen.add(_git("rev-parse", f"{release}:{path}"))
        if record[path]["blob"] not in seen:
            stale.append(f"{path}: measured as blob {record[path]['blob'][:10]}, from before this release")
    assert not stale, "docs/mutation.md is older than a release of changes (run `make mutation`):\n" + "\n".join(stale)
    for path, measured in record.items():
        assert measured["score"] >= mutation.MIN_SCORE, f"{path}: mutation score {measured['score']:.1%}"
        for survivor in measured["survivors"]:
            assert f"{path}: {survivor['line']}" in mutation.ACCEPTED, (
                f"{path}: unexplained survivor {survivor['line']}"
            )
