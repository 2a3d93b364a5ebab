"""pytest plugin: the failure-guarantee table (issue #4).

Mark a test with the guarantee it checks::

    @pytest.mark.guarantee("SIGTERM to the task during packer build",
                           expected="Packer cleaned up; no Packer/QEMU left; no output folder")
    def test_...

At the end of the session a table is printed, one row per scenario (every test and every
parametrization carrying the same scenario counts towards its row)::

    scenario | expected end state | result
    ...
    N scenarios, N passed, N failed, N skipped

A scenario is FAILED if any of its tests failed (in setup, call or teardown), else PASSED if any
passed, else SKIPPED; the counts (passed/total) are shown with the result.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

MARKER = "guarantee"
_KEY = pytest.StashKey[dict]()


@dataclass
class _Scenario:
    expected: str
    tests: dict[str, str] = field(default_factory=dict)  # nodeid -> passed|failed|skipped

    def result(self) -> str:
        outcomes = list(self.tests.values())
        total = len(outcomes)
        passed, failed, skipped = (outcomes.count(o) for o in ("passed", "failed", "skipped"))
        not_run = total - passed - failed - skipped
        if failed:
            return f"FAILED ({failed}/{total} failed)"
        if passed:
            rest = [f"{n} {what}" for n, what in ((skipped, "skipped"), (not_run, "not run")) if n]
            return f"PASSED ({passed}/{total}{', ' + ', '.join(rest) if rest else ''})"
        return "SKIPPED" if skipped else "NOT RUN"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f'{MARKER}(scenario, expected="..."): the failure guarantee a test checks; summarised in a table at the end',
    )
    config.stash[_KEY] = {}


def _scenario_of(item: pytest.Item) -> tuple[str, str] | None:
    marker = item.get_closest_marker(MARKER)
    if marker is None:
        return None
    if len(marker.args) != 1 or not isinstance(marker.args[0], str) or not marker.args[0].strip():
        raise pytest.UsageError(f"{item.nodeid}: @pytest.mark.{MARKER} needs one scenario string")
    expected = marker.kwargs.get("expected")
    if not isinstance(expected, str) or not expected.strip():
        raise pytest.UsageError(f'{item.nodeid}: @pytest.mark.{MARKER}(..., expected="...") needs the expected end state')
    return marker.args[0].strip(), expected.strip()


def pytest_collection_finish(session: pytest.Session) -> None:
    """The final selection (after -k / -m / deselection): only tests that will run are counted."""
    table: dict[str, _Scenario] = session.config.stash[_KEY]
    for item in session.items:
        found = _scenario_of(item)
        if found is None:
            continue
        scenario, expected = found
        row = table.setdefault(scenario, _Scenario(expected))
        if row.expected != expected:
            raise pytest.UsageError(
                f"{item.nodeid}: scenario {scenario!r} is marked with two expected end states: "
                f"{row.expected!r} and {expected!r}"
            )
        item.stash[_KEY] = {"scenario": scenario}
        row.tests.setdefault(item.nodeid, "not run")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    info = item.stash.get(_KEY, None)
    if info is None:
        return report
    row = item.config.stash[_KEY][info["scenario"]]
    current = row.tests.get(item.nodeid, "not run")
    if report.failed:
        outcome = "failed"
    elif report.skipped:
        # an expected failure (xfail) counts as skipped: it guarantees nothing
        outcome = "skipped" if current != "failed" else "failed"
    elif report.when == "call":
        outcome = "passed" if current != "failed" else "failed"
    else:
        outcome = current
    row.tests[item.nodeid] = "failed" if current == "failed" else outcome
    return report


def _rows(table: dict[str, _Scenario]) -> list[tuple[str, str, str]]:
    return [(name, row.expected, row.result()) for name, row in table.items()]


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    table: dict[str, _Scenario] = config.stash.get(_KEY, {})
    ran = {k: v for k, v in table.items() if any(o != "not run" for o in v.tests.values())}
    if not ran:
        return
    rows = [("scenario", "expected end state", "result"), *_rows(ran)]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]

    def fmt(r: tuple[str, str, str]) -> str:
        return " | ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()

    tr = terminalreporter
    tr.write_sep("=", "failure guarantees")
    tr.write_line(fmt(rows[0]))
    tr.write_line("-+-".join("-" * w for w in widths))
    for r in rows[1:]:
        tr.write_line(fmt(r), red=r[2].startswith("FAILED"), green=r[2].startswith("PASSED"))
    results = [r[2] for r in rows[1:]]
    passed = sum(r.startswith("PASSED") for r in results)
    failed = sum(r.startswith("FAILED") for r in results)
    skipped = len(results) - passed - failed
    tr.write_line(f"{len(results)} scenarios, {passed} passed, {failed} failed, {skipped} skipped")
