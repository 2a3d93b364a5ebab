"""pytest plugin: the failure-guarantee table (issues #4, #8).

The guarantees are listed once, in tests/guarantees.yaml (``--guarantees`` names another file):
a stable id, the scenario, the expected end state and the test files that prove it. A test proves
a row with its id::

    @pytest.mark.guarantee("packer-stopped-mid-build")

After the run every row is printed, none left out, with its result and counts:

* PASSED   every test marked with its id (every parametrization), in every file the row lists,
           was selected, ran and passed (setup, call and teardown);
* FAILED   one of them failed, in setup, call or teardown;
* NOT RUN  anything else: one was skipped (or xfail), deselected (-k, -m) or never ran, or a listed
           file gave no test to this session, e.g. ``NOT RUN (2/5 passed, 3 skipped)``;

then a totals line. With CI set (``true``/``1``), a NOT RUN row or a skipped guarantee test fails
the session; without it the table only reports.

With pytest-xdist (``-n``) every worker collects the whole suite and notes the marked tests; it
hands them to the controller in its ``workeroutput``, and the controller, which sees every test's
reports, prints the table. A worker that died before handing them over leaves its tests' rows
NOT RUN (or FAILED: xdist reports the test it died in as failed).

Usage errors (exit 4): a marker that is not one known id; a test marked with an id whose row does
not list its file; a row listing a file with no test marked with its id (so no row is unproven by
mistake); a malformed registry.
"""

from __future__ import annotations

import ast
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

pytest_plugins = ["tests.tools"]  # the needs_tools marker: a missing tool skips, or fails under CI

MARKER = "guarantee"
REGISTRY = Path(__file__).with_suffix(".yaml")
KEYS = ("id", "scenario", "expected", "proven_by")


@dataclass(frozen=True)
class Guarantee:
    id: str
    scenario: str
    expected: str
    proven_by: tuple[str, ...]  # test files, relative to the repository root (the registry's folder's parent)


def marked_ids(path: Path) -> set[str]:
    """The ids of the ``pytest.mark.guarantee("<id>")`` calls in a file (read, not imported)."""
    return {
        node.args[0].value
        for node in ast.walk(ast.parse(path.read_text(), str(path)))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == MARKER
        and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)
    }


def load_registry(path: Path) -> list[Guarantee]:
    """The rows of the registry, checked: unique ids, every field, every listed file marks the row."""
    root = path.parent.parent
    try:
        rows = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise pytest.UsageError(f"guarantee registry: {exc}") from exc
    if not isinstance(rows, list) or not rows:
        raise pytest.UsageError(f"{path}: must be a list of guarantees")
    out: list[Guarantee] = []
    for n, row in enumerate(rows, 1):
        where = f"{path}, row {n}"
        if not isinstance(row, dict) or set(row) != set(KEYS):
            raise pytest.UsageError(f"{where}: needs exactly the keys {', '.join(KEYS)}")
        if not all(isinstance(row[k], str) and row[k].strip() for k in KEYS[:3]):
            raise pytest.UsageError(f"{where}: id, scenario and expected must be non-empty text")
        files = row["proven_by"]
        if not isinstance(files, list) or not files or not all(isinstance(f, str) for f in files):
            raise pytest.UsageError(f"{where} ({row['id']}): proven_by must list the test files that prove it")
        if any(g.id == row["id"] for g in out):
            raise pytest.UsageError(f"{where}: the id {row['id']!r} is used twice")
        for f in files:
            if not (root / f).is_file():
                raise pytest.UsageError(f"{where} ({row['id']}): {f} does not exist")
            if row["id"] not in marked_ids(root / f):
                raise pytest.UsageError(
                    f"{where} ({row['id']}): no test in {f} is marked @pytest.mark.{MARKER}({row['id']!r})")
        out.append(Guarantee(row["id"], row["scenario"].strip(), row["expected"].strip(), tuple(files)))
    return out


class GuaranteeTable:
    """The plugin object of one session: which tests each row has, and how they ended."""

    def __init__(self, registry: list[Guarantee], path: Path) -> None:
        self.registry, self.path = registry, path
        self.ids: dict[str, list[str]] = {}  # nodeid -> the guarantee ids it proves
        self.collected: dict[str, str] = {}  # nodeid -> deselected|not run, as collection left it
        self.reported: dict[str, str] = {}  # nodeid -> passed|failed|skipped, from its reports
        self.files: dict[str, set[str]] = {}  # guarantee id -> the files that gave it a test
        self.ci_reasons: list[str] = []

    @property
    def outcomes(self) -> dict[str, str]:
        """nodeid -> passed|failed|skipped|deselected|not run, for every marked test."""
        return {n: self.reported.get(n, c) for n, c in self.collected.items()}

    def note(self, item: pytest.Item, outcome: str) -> None:
        known = {g.id: g for g in self.registry}
        ids = []
        for marker in item.iter_markers(MARKER):
            if len(marker.args) != 1 or marker.kwargs or not isinstance(marker.args[0], str):
                raise pytest.UsageError(
                    f'{item.nodeid}: use @pytest.mark.{MARKER}("<id>") with one id of {self.path} '
                    "(the scenario and the expected end state are written there)")
            ids.append(marker.args[0])
        root = self.path.parent.parent
        file = item.path.relative_to(root).as_posix() if item.path.is_relative_to(root) else str(item.path)
        for gid in ids:
            if gid not in known:
                raise pytest.UsageError(f"{item.nodeid}: unknown guarantee id {gid!r} (not in {self.path})")
            if file not in known[gid].proven_by:
                raise pytest.UsageError(
                    f"{item.nodeid}: marked {gid!r}, but that row of {self.path} does not list {file} in proven_by")
            self.files.setdefault(gid, set()).add(file)
        if ids:
            self.ids[item.nodeid] = ids
            self.collected[item.nodeid] = outcome

    def result(self, g: Guarantee) -> str:
        every = self.outcomes
        outcomes = [every[n] for n, ids in self.ids.items() if g.id in ids]
        counts = Counter(outcomes)
        missing = len([f for f in g.proven_by if f not in self.files.get(g.id, ())])
        detail = [f"{counts['passed']}/{len(outcomes)} passed"]
        detail += [f"{counts[k]} {k}" for k in ("failed", "skipped", "deselected", "not run") if counts[k]]
        if missing:
            detail.append(f"{missing} file{'s' if missing > 1 else ''} not collected")
        if counts["failed"]:
            verdict = "FAILED"
        elif counts["passed"] == len(outcomes) and not missing:
            verdict = "PASSED"
        else:
            verdict = "NOT RUN"
        return f"{verdict} ({', '.join(detail)})"

    # --- hooks ---------------------------------------------------------------------------------------
    def pytest_deselected(self, items: list[pytest.Item]) -> None:
        for item in items:
            self.note(item, "deselected")

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        for item in session.items:
            self.note(item, "not run")

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        # every test's, marked or not: under xdist the controller learns which are marked only at the end
        if report.failed or self.reported.get(report.nodeid) == "failed":
            self.reported[report.nodeid] = "failed"
        elif report.skipped or (report.when == "call" and hasattr(report, "wasxfail")):
            self.reported[report.nodeid] = "skipped"  # an xfail (or xpass) proves nothing
        elif report.when == "call":
            self.reported[report.nodeid] = "passed"

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node, error) -> None:
        """xdist controller: take what a worker collected (every worker collects every test)."""
        got = getattr(node, "workeroutput", {}).get(MARKER)
        if got:
            self.ids.update(got["ids"])
            self.collected.update(got["collected"])
            for gid, files in got["files"].items():
                self.files.setdefault(gid, set()).update(files)

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        from tests.tools import in_ci  # not at the top: pytest_plugins imports it first (assertion rewriting)

        workeroutput = getattr(session.config, "workeroutput", None)
        if workeroutput is not None:  # an xdist worker: the controller judges and prints
            workeroutput[MARKER] = {"ids": self.ids, "collected": self.collected,
                                    "files": {gid: sorted(f) for gid, f in self.files.items()}}
            return
        if session.config.option.collectonly or not in_ci():
            return
        results = {g.id: self.result(g) for g in self.registry}
        self.ci_reasons = [f"{gid}: {r}" for gid, r in results.items() if r.startswith("NOT RUN")]
        self.ci_reasons += [f"skipped: {n}" for n, o in self.outcomes.items() if o == "skipped"]
        if self.ci_reasons and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter, config: pytest.Config) -> None:
        if config.option.collectonly or hasattr(config, "workeroutput"):
            return
        rows = [("guarantee", "result", "scenario", "expected end state"),
                *[(g.id, self.result(g), g.scenario, g.expected) for g in self.registry]]
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        tr = terminalreporter
        tr.write_sep("=", "failure guarantees")
        for n, r in enumerate(rows):
            tr.write_line(" | ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip(),
                          red=r[1].startswith("FAILED"), green=r[1].startswith("PASSED"),
                          yellow=r[1].startswith("NOT RUN"))
            if n == 0:
                tr.write_line("-+-".join("-" * w for w in widths))
        verdicts = Counter(r[1].split(" (")[0] for r in rows[1:])
        tests = Counter(self.outcomes.values())
        tr.write_line(
            f"guarantees: {verdicts['PASSED']} passed, {verdicts['FAILED']} failed, {verdicts['NOT RUN']} not run "
            f"(of {len(rows) - 1}); their tests: "
            + ", ".join(f"{tests[k]} {k}" for k in ("passed", "failed", "skipped", "deselected", "not run"))
            + f" (of {len(self.outcomes)})")
        if self.ci_reasons:
            tr.write_line(f"CI is set, so the session fails: {len(self.ci_reasons)} guarantee(s) or test(s) "
                          "not proven:", red=True)
            for reason in self.ci_reasons:
                tr.write_line(f"  {reason}", red=True)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--guarantees", type=Path, default=REGISTRY,
                     help="the guarantee registry (default: tests/guarantees.yaml)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", f'{MARKER}("<id>"): the test proves that row of the guarantee registry')
    path = config.getoption("guarantees").resolve()
    config.pluginmanager.register(GuaranteeTable(load_registry(path), path), "guarantee-table")
