"""The docs stay true to the code and to each other: the config reference is regenerated from the
config's field comments, every relative link (and anchor) resolves, the README stays short."""

from __future__ import annotations

import importlib.util
import re
import unicodedata
from functools import cache
from pathlib import Path

import pytest
import yaml

from tunesmith.cli import main
from tunesmith.config import field_docs

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
README = ROOT / "README.md"
README_MAX_LINES = 160
PAGES = sorted([README, *DOCS.rglob("*.md")])


def _generator():
    spec = importlib.util.spec_from_file_location(
        "config_reference", ROOT / "scripts" / "config_reference.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_config_reference_is_current():
    generator = _generator()
    assert generator.REFERENCE.read_text(encoding="utf-8") == generator.render(), (
        "docs/reference/config.md is stale: run python scripts/config_reference.py"
    )


def test_config_reference_lists_every_key_once():
    text = _generator().render()
    listed = re.findall(r"^\| `([^`]+)` \|", text, flags=re.M)
    assert listed == list(field_docs())


def test_config_reference_check_fails_in_one_line_when_stale(tmp_path, monkeypatch, capsys):
    generator = _generator()
    stale = tmp_path / "config.md"
    stale.write_text(generator.render().replace("Peak learning rate", "Top learning rate"))
    monkeypatch.setattr(generator, "REFERENCE", stale)
    monkeypatch.setattr(generator, "ROOT", tmp_path)
    assert generator.main(["--check"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "stale" in err and "config_reference.py" in err
    stale.write_text(generator.render())
    assert generator.main(["--check"]) == 0


def test_help_config_wraps_each_doc_under_its_key(capsys):
    assert main(["train", "--help-config"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert max(len(line) for line in lines) <= 100
    keys = [line.split(" (")[0] for line in lines if not line.startswith(" ")]
    assert keys == list(field_docs())
    # The doc of a long field comes back whole from its wrapped lines.
    at = lines.index(next(line for line in lines if line.startswith("train.temperature_scaling")))
    wrapped = []
    for line in lines[at + 1 :]:
        if not line.startswith("    "):
            break
        wrapped.append(line.strip())
    assert " ".join(wrapped) == field_docs()["train.temperature_scaling"][1]


def test_readme_stays_short_and_keeps_the_two_commands():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= README_MAX_LINES, "move detail to docs/"
    assert "\nmake demo " in text and "\nmake test " in text


def test_every_docs_page_is_in_the_site_nav():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))

    def pages(nav) -> list[str]:
        if isinstance(nav, str):
            return [nav]
        if isinstance(nav, dict):
            return [p for v in nav.values() for p in pages(v)]
        return [p for item in nav for p in pages(item)]

    in_nav = pages(config["nav"])
    assert sorted(in_nav) == sorted(str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md"))


# ---- links -------------------------------------------------------------------------------------

FENCE = re.compile(r"^(```|~~~).*?^\1\s*$", flags=re.M | re.S)
CODE_SPAN = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[[^\]\n]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", flags=re.M)


def _prose(text: str) -> str:
    return CODE_SPAN.sub("", FENCE.sub("", text))


def _heading_text(heading: str) -> str:
    heading = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link: its text
    return heading.replace("`", "").replace("*", "")


def _github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading (without the -1, -2 of repeated headings)."""
    return re.sub(r"[^\w\- ]", "", _heading_text(heading).strip().lower()).replace(" ", "-")


def _mkdocs_slug(heading: str) -> str:
    """The anchor Python-Markdown's toc extension (mkdocs) gives a heading."""
    value = unicodedata.normalize("NFKD", _heading_text(heading))
    value = re.sub(r"[^\w\s-]", "", value.encode("ascii", "ignore").decode()).strip().lower()
    return re.sub(r"[-\s]+", "-", value)


@cache
def _anchors(path: Path) -> set[str]:
    headings = HEADING.findall(FENCE.sub("", path.read_text(encoding="utf-8")))
    anchors = {_github_slug(h) for h in headings}
    if DOCS in path.parents:  # also served by mkdocs, whose anchors must match
        anchors &= {_mkdocs_slug(h) for h in headings}
    return anchors


def _links(page: Path) -> list[str]:
    return LINK.findall(_prose(page.read_text(encoding="utf-8")))


def test_the_link_checker_sees_links_and_anchors():
    assert "data.md" in _links(DOCS / "index.md")
    assert "the-demo-make-demo" in _anchors(ROOT / "benchmarks" / "README.md")
    assert "skewed-classes-class-weights" in _anchors(DOCS / "several-labels.md")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    broken = []
    for link in _links(page):
        if re.match(r"[a-z][a-z0-9+.-]*:", link):  # https:, mailto:
            continue
        path, _, anchor = link.partition("#")
        target = (page.parent / path).resolve() if path else page
        if ROOT not in [target, *target.parents] or not target.exists():
            broken.append(f"{link}: no such file in the repository")
        elif anchor and target.suffix == ".md" and anchor not in _anchors(target):
            broken.append(f"{link}: no heading #{anchor} in {target.relative_to(ROOT)}")
    assert not broken, broken
