"""pytest plugin: under pytest-xdist (scripts/test.sh: ``-n 2``), the tests of every file that marks
tests ``slow`` form one group, run one after the other on one worker: each boots a 2-vCPU TCG guest,
which takes both cores, and two at once would only slow each other down. The compose test's file is
a group of its own. Every other test runs beside them on the other worker, one by one as it frees up.

xdist's own ``--dist loadgroup`` groups by renaming node ids (``item._nodeid``), which pytest 9.2 no
longer reads: its groups fall apart (tried). So this plugin gives xdist a scheduler
(``pytest_xdist_make_scheduler``): xdist's scope scheduling, where a grouped file's tests share one
scope. The controller that schedules has no collected items, so the files are found by their code
(``pytest.mark.slow`` in a ``tests/**/test_*.py``, read with ``ast``).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

# a test file that uses the marker -> its group (the first marker found wins). The compose test (also
# slow) is a group of its own: most of its time is building images and starting containers, so it
# runs on the other worker, beside the slow group.
GROUPED_MARKERS = {"compose": "compose", "slow": "qemu"}


def markers_used(path: Path) -> set[str]:
    """The names ``<x>`` of the ``pytest.mark.<x>`` in a file's code (read, not imported; text in strings,
    such as a throw-away suite a test writes, does not count)."""
    return {node.attr for node in ast.walk(ast.parse(path.read_text(), str(path)))
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute) and node.value.attr == "mark"}


def grouped_files(root: Path) -> dict[str, str]:
    """Test files (relative to ``root``, as in node ids) that use a marker of GROUPED_MARKERS -> group."""
    out = {}
    for path in sorted((root / "tests").rglob("test_*.py")):
        used = markers_used(path)
        group = next((g for marker, g in GROUPED_MARKERS.items() if marker in used), None)
        if group:
            out[path.relative_to(root).as_posix()] = group
    return out


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadScopeScheduling

    files = grouped_files(Path(str(config.rootpath)))

    class GroupedScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return files.get(nodeid.split("::", 1)[0], nodeid)

    return GroupedScheduling(config, log)
