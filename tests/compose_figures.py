"""pytest plugin (loaded by tests/conftest.py, not a conftest of tests/compose/: under pytest-xdist the
controller, which prints the summary, loads no conftest below tests/): the compose test's figures,
printed at the end of the run (also under -q, where a passing test's output is not shown). The test
prints each as ``[compose figures] name: value``; they are read back from the reports' captured
output, which pytest-xdist hands from the worker to the controller, or, when output is not captured
(``-s``), from the test module itself."""

from __future__ import annotations

import sys

PREFIX = "[compose figures] "
_reported: dict[str, str] = {}


def pytest_runtest_logreport(report):
    for _, text in report.sections:
        for line in text.splitlines():
            if line.startswith(PREFIX) and ": " in line:
                name, value = line[len(PREFIX):].split(": ", 1)
                _reported[name] = value


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if hasattr(config, "workeroutput"):
        return  # an xdist worker: the controller prints
    figures = dict(_reported)
    for module in list(sys.modules.values()):
        found = getattr(module, "COMPOSE_FIGURES", None)
        if isinstance(found, dict) and getattr(module, "__file__", "").endswith("test_stack.py"):
            figures = {**found, **figures}
    if figures:
        terminalreporter.section("compose stack figures")
        for name, value in figures.items():
            terminalreporter.write_line(f"{name}: {value}")
