"""The tools the tests need (Packer, QEMU, ...), found on PATH, never at a fixed path.

* :func:`find_tool` is the first ``name`` on PATH, skipping the folder of the fake ``packer``
  (tests/azure_emulator/bin): tests that put the fake first on PATH still get the real one.
* A test that cannot run without a tool says so with ``@pytest.mark.needs_tools("packer", ...)``
  (or calls :func:`require_tool`): it is skipped where the tool is missing, and FAILS when ``CI``
  is ``true``/``1``, so that a CI machine without Packer fails loudly instead of skipping silently.

A pytest plugin (the marker); loaded with tests.guarantees.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

FAKE_PACKER_DIR = Path(__file__).resolve().parent / "azure_emulator" / "bin"


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1")


def find_tool(name: str) -> str | None:
    """The first ``name`` on PATH that is not the fake packer's, or None."""
    dirs = [d for d in os.environ.get("PATH", "").split(os.pathsep) if d and Path(d).resolve() != FAKE_PACKER_DIR]
    return shutil.which(name, path=os.pathsep.join(dirs))


def require_tool(name: str) -> str:
    """The path of ``name``; if it is not on PATH: skip the test, or fail it under CI."""
    path = find_tool(name)
    if path is None:
        message = f"needs {name} on PATH"
        if in_ci():
            pytest.fail(f"{message} (CI is set: a missing tool fails the test instead of skipping it)",
                        pytrace=False)
        pytest.skip(message)
    return path


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "needs_tools(*names): skip when a tool is not on PATH (fail when CI is set)")


@pytest.hookimpl(tryfirst=True)  # before any fixture is set up
def pytest_runtest_setup(item: pytest.Item) -> None:
    for marker in item.iter_markers("needs_tools"):
        for name in marker.args:
            require_tool(name)
