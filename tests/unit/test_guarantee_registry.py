"""The README's "Failure guarantees" table is the registry (tests/guarantees.yaml), row for row, and
each row's "proven by" names exactly the test files whose tests carry its id."""

from __future__ import annotations

import re
from pathlib import Path

from tests.guarantees import REGISTRY, load_registry, marked_ids

REPO = Path(__file__).resolve().parents[2]


def readme_rows() -> list[tuple[str, str, str, tuple[str, ...]]]:
    section = (REPO / "README.md").read_text().split("\n## Failure guarantees\n", 1)[1].split("\n## ", 1)[0]
    lines = [ln for ln in section.splitlines() if ln.startswith("| ")]
    assert lines[0] == "| id | scenario | expected end state | proven by |", lines[0]
    rows = []
    for line in lines[2:]:
        cells = [c.strip() for c in line.strip("| ").split(" | ")]
        assert len(cells) == 4, line
        gid, scenario, expected, files = cells
        rows.append((gid.strip("`"), scenario, expected, tuple(re.findall(r"`([^`]+)`", files))))
    return rows


def test_the_readme_table_is_the_registry():
    registry = [(g.id, g.scenario, g.expected, g.proven_by) for g in load_registry(REGISTRY)]
    assert readme_rows() == registry


def test_proven_by_names_exactly_the_files_that_carry_the_id():
    carried: dict[str, set[str]] = {}
    for path in sorted((REPO / "tests").rglob("*.py")):
        for gid in marked_ids(path):
            carried.setdefault(gid, set()).add(path.relative_to(REPO).as_posix())
    assert carried == {g.id: set(g.proven_by) for g in load_registry(REGISTRY)}
