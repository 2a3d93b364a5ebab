"""Row 8 of issue #4: the guarantee table plugin (tests/guarantees.py), run on a throw-away suite."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
from faultkit import REPO

SUITE = '''
import pytest

@pytest.mark.guarantee("alpha: killed mid-way", expected="nothing left")
@pytest.mark.parametrize("x", [1, 2, 3])
def test_alpha(x):
    assert x < 3

@pytest.mark.guarantee("beta: retried", expected="one version")
def test_beta_one():
    pass

@pytest.mark.guarantee("beta: retried", expected="one version")
@pytest.mark.parametrize("x", [1, 2])
def test_beta_two(x):
    pass

@pytest.mark.guarantee("gamma: no qemu here", expected="skipped")
def test_gamma():
    pytest.skip("no QEMU")

@pytest.fixture
def breaks_in_teardown():
    yield
    raise RuntimeError("left a process running")

@pytest.mark.guarantee("delta: cleanup", expected="teardown counts")
def test_delta(breaks_in_teardown):
    pass

@pytest.mark.guarantee("epsilon: partly skipped", expected="passes where it can")
@pytest.mark.parametrize("x", [1, 2])
def test_epsilon(x):
    if x == 2:
        pytest.skip("not here")

def test_not_a_guarantee():
    pass
'''


def run_suite(tmp_path, body: str, *args: str) -> subprocess.CompletedProcess:
    (tmp_path / "test_suite.py").write_text(textwrap.dedent(body))
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "tests.guarantees", "-p", "no:cacheprovider",
                           "-q", "--rootdir", str(tmp_path), str(tmp_path), *args],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120, check=False)


def table(stdout: str) -> dict[str, list[str]]:
    lines = stdout.split("failure guarantees", 1)[1].splitlines()
    rows = [[c.strip() for c in ln.split(" | ")] for ln in lines if " | " in ln]
    return {r[0]: r[1:] for r in rows}


G = pytest.mark.guarantee(
    "summary table of the guarantees",
    expected="one row per scenario (all parametrizations counted), PASSED/FAILED/SKIPPED, and a totals line",
)


@G
def test_table_counts_every_parametrization_and_phase(tmp_path):
    out = run_suite(tmp_path, SUITE)
    assert out.returncode == 1, out.stdout + out.stderr  # test_alpha[3] and delta's teardown failed
    rows = table(out.stdout)
    assert rows["scenario"] == ["expected end state", "result"]
    assert rows["alpha: killed mid-way"] == ["nothing left", "FAILED (1/3 failed)"]
    assert rows["beta: retried"] == ["one version", "PASSED (3/3)"]
    assert rows["gamma: no qemu here"] == ["skipped", "SKIPPED"]
    assert rows["delta: cleanup"] == ["teardown counts", "FAILED (1/1 failed)"]
    assert rows["epsilon: partly skipped"] == ["passes where it can", "PASSED (1/2, 1 skipped)"]
    assert len(rows) == 6  # the header + 5 scenarios; unmarked tests are not in the table
    assert "5 scenarios, 2 passed, 2 failed, 1 skipped" in out.stdout


@G
def test_only_selected_tests_count(tmp_path):
    out = run_suite(tmp_path, SUITE, "-k", "beta or alpha and not 3")
    assert out.returncode == 0, out.stdout + out.stderr
    rows = table(out.stdout)
    assert rows["alpha: killed mid-way"][1] == "PASSED (2/2)"
    assert set(rows) == {"scenario", "alpha: killed mid-way", "beta: retried"}
    assert "2 scenarios, 2 passed, 0 failed, 0 skipped" in out.stdout


@G
@pytest.mark.parametrize("marker, message", [
    ('@pytest.mark.guarantee("no expected state")', 'needs the expected end state'),
    ('@pytest.mark.guarantee(expected="no scenario")', "needs one scenario string"),
])
def test_a_marker_without_scenario_or_expected_state_is_a_usage_error(tmp_path, marker, message):
    out = run_suite(tmp_path, f"import pytest\n\n{marker}\ndef test_x():\n    pass\n")
    assert out.returncode == 4, out.stdout + out.stderr
    assert message in out.stdout + out.stderr


@G
def test_one_scenario_with_two_expected_states_is_a_usage_error(tmp_path):
    out = run_suite(tmp_path, '''
import pytest

@pytest.mark.guarantee("s", expected="one thing")
def test_a():
    pass

@pytest.mark.guarantee("s", expected="another")
def test_b():
    pass
''')
    assert out.returncode == 4 and "two expected end states" in out.stdout + out.stderr
