"""README's layout table names every module of the packages, and only modules that exist."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("ranker", "training", "feature_store", "serving")


def _table() -> dict[str, set[str]]:
    """{folder: the `*.py` names its row lists} from README's "## Layout" section."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Layout\n") : text.index("\n## ", text.index("## Layout\n") + 1)]
    rows = {}
    for folder, cell in re.findall(r"^\| `([a-z_/]+/)` \| (.*) \|$", section, re.M):
        rows[folder] = set(re.findall(r"`([a-z_0-9]+\.py)`", cell))
    return rows


def test_every_package_folder_has_a_row_naming_exactly_its_modules() -> None:
    rows = _table()
    folders = {
        f"{path.relative_to(ROOT).as_posix()}/"
        for package in PACKAGES
        for path in [ROOT / package, *(ROOT / package).rglob("*")]
        if path.is_dir() and (path / "__init__.py").exists()
    }
    assert folders <= set(rows), sorted(folders - set(rows))
    for folder in folders:
        modules = {p.name for p in (ROOT / folder).glob("*.py") if p.name != "__init__.py"}
        assert rows[folder] == modules, (folder, rows[folder] ^ modules)
    assert "training/data/" in folders  # so the test can fail: the table is read at all
