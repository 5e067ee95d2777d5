"""What the committed prose may not contain: diary words, this machine's paths, internal issue numbers."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DIARY = re.compile(r"\b(session|today|this run|tried and dropped|earlier we)\b", re.I)
MACHINE_PATH = re.compile(r"(?<![\w.])/(work|tmp)/")
ISSUE_NUMBER = re.compile(r"(\bissue #?\d+|(?<![\w&])#\d+\b)", re.I)


def _files() -> list[Path]:
    files = [ROOT / "README.md", ROOT / "environment.yml", ROOT / "pyproject.toml"]
    files += sorted((ROOT / "docs").rglob("*.md")) + sorted((ROOT / "docs").rglob("*.py"))
    files += sorted((ROOT / "benchmarks").rglob("*.py")) + sorted((ROOT / "benchmarks" / "results").rglob("*.json"))
    files += sorted((ROOT / "workflows" / "configs").glob("*.yaml"))
    return [f for f in files if "_build" not in f.parts]


@pytest.mark.parametrize("path", _files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_diary_words_machine_paths_or_issue_numbers(path):
    text = path.read_text()
    for pattern, what in ((DIARY, "diary word"), (MACHINE_PATH, "machine path"), (ISSUE_NUMBER, "issue number")):
        hits = sorted({m.group(0) for m in pattern.finditer(text)})
        assert not hits, f"{path.relative_to(ROOT)} has the {what}(s) {hits}"


def test_readme_is_short_and_in_order():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 300
    heads = re.findall(r"^## (.+)$", text, re.M)
    assert heads == ["Install", "Two commands", "Getting data", "Running an experiment", "Running on a cluster",
                     "Using a trained model", "Documentation"]
    assert ">=3.11" in (ROOT / "pyproject.toml").read_text().replace(" ", "") and "3.11" in text
    assert "environment.yml" in text
