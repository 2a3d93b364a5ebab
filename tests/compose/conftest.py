"""The compose test's figures, printed at the end of the run (also under -q, where a passing test's
output is not shown)."""

from __future__ import annotations

import sys


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    for module in list(sys.modules.values()):
        figures = getattr(module, "COMPOSE_FIGURES", None)
        if isinstance(figures, dict) and figures and getattr(module, "__file__", "").endswith("test_stack.py"):
            terminalreporter.section("compose stack figures")
            for name, value in figures.items():
                terminalreporter.write_line(f"{name}: {value}")
            return
