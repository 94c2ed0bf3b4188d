"""The docs agree with each other and with the code: each figure lives in bench/README.md with its command
(other docs link to it), figures known to have gone stale stay gone, every tests/ folder is described, and
every relative link leads to a file and heading that exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dnscorrelate.findings import CODE_NAMES

REPO = Path(__file__).resolve().parents[2]
DOCS = sorted(p for p in REPO.rglob("*.md") if ".venv" not in p.parts and "node_modules" not in p.parts
              and not any(part.startswith(".") for part in p.relative_to(REPO).parts))
FIGURES_HOME = REPO / "bench" / "README.md"

# figures copied out of bench/README.md that went stale there while their copies stayed (issue 24)
STALE = [
    re.compile(r"up in 106\.7 s"), re.compile(r"\b83\.9 s\b"), re.compile(r"about 40 min"), re.compile(r"about 22 min"),
    re.compile(r"\b11 of (the )?16\b"), re.compile(r"\b15 (finding )?codes\b"),
    re.compile(r"\b6-8x tshark"), re.compile(r"\b8\.4x\b"),  # the pcap reader's ratios before issue 19 item 7's last session
]


@pytest.mark.parametrize("doc", [d for d in DOCS if d != FIGURES_HOME], ids=lambda d: str(d.relative_to(REPO)))
def test_no_copy_of_a_figure_known_to_be_stale(doc):
    text = doc.read_text()
    found = [p.pattern for p in STALE if p.search(text)]
    assert not found, f"{doc.relative_to(REPO)} copies figures that went stale: {found}; link to bench/README.md instead"


def test_a_count_of_finding_codes_is_the_registrys():
    for doc in DOCS:
        for count in re.findall(r"\b(\d+) finding codes\b", doc.read_text()):
            assert int(count) == len(CODE_NAMES), f"{doc.relative_to(REPO)} says {count} finding codes; the registry has {len(CODE_NAMES)}"


def test_tests_readme_describes_every_test_folder():
    readme = (REPO / "tests" / "README.md").read_text()
    folders = [p.name for p in (REPO / "tests").iterdir() if p.is_dir() and not p.name.startswith(("_", "."))]
    missing = [f for f in folders if f"`{f}/`" not in readme]
    assert not missing, f"tests/README.md does not describe {missing}"


def anchor_of(heading: str) -> str:
    """GitHub's anchor for a Markdown heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(doc: Path) -> set[str]:
    return {anchor_of(line.lstrip("#")) for line in doc.read_text().splitlines() if line.startswith("#")}


LINK = re.compile(r"\]\((?!https?:|mailto:)([^)#\s]*)(?:#([^)\s]+))?\)")


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: str(d.relative_to(REPO)))
def test_relative_links_lead_somewhere(doc):
    broken = []
    for target, anchor in LINK.findall(doc.read_text()):
        path = (doc.parent / target).resolve() if target else doc
        if not path.exists():
            broken.append(f"{target}: no such file")
        elif anchor and path.suffix == ".md" and anchor not in anchors(path):
            broken.append(f"{target}#{anchor}: no such heading")
    assert not broken, f"{doc.relative_to(REPO)}: {broken}"
