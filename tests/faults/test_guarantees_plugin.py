"""The guarantee table (tests/guarantees.py, issue #8), run on throw-away suites in a subprocess.

Each suite has its own registry (``--guarantees``): ``suite/guarantees.yaml`` next to the test files,
which it lists as ``suite/<file>``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from faultkit import REPO

SUITE = '''
import pytest

@pytest.mark.guarantee("alpha")
@pytest.mark.parametrize("x", [1, 2, 3])
def test_alpha(x):
    assert x < 3

@pytest.mark.guarantee("beta")
def test_beta_one():
    pass

@pytest.mark.guarantee("beta")
@pytest.mark.parametrize("x", [1, 2])
def test_beta_two(x):
    pass

@pytest.mark.guarantee("gamma")
def test_gamma():
    pytest.skip("no QEMU")

@pytest.fixture
def breaks_in_teardown():
    yield
    raise RuntimeError("left a process running")

@pytest.mark.guarantee("delta")
def test_delta(breaks_in_teardown):
    pass

@pytest.mark.guarantee("epsilon")
@pytest.mark.parametrize("x", [1, 2])
def test_epsilon(x):
    if x == 2:
        pytest.skip("not here")

def test_not_a_guarantee():
    pass
'''
OTHER = '''
import pytest

@pytest.mark.guarantee("zeta")
def test_zeta():
    pass
'''
SUITE_ROWS = {"alpha": ["test_suite.py"], "beta": ["test_suite.py"], "gamma": ["test_suite.py"],
              "delta": ["test_suite.py"], "epsilon": ["test_suite.py"], "zeta": ["test_other.py"]}

# The case: "Packer stopped mid-build" has two tests with the null builder and three that need
# QEMU; with QEMU off PATH only the first two can run, and they cannot show QEMU stopped.
QEMU_SUITE = '''
import shutil
import pytest

@pytest.mark.guarantee("stop")
def test_exception_stops_the_group():
    pass

@pytest.mark.guarantee("stop")
def test_terminate_kills_the_group_after_grace():
    pass

@pytest.mark.guarantee("stop")
{needs_qemu}
@pytest.mark.parametrize("how", ["terminate", "sigterm", "runner-killed"])
def test_qemu_build_stopped(how):
    pass
'''
NEEDS_QEMU = {
    "needs_tools": '@pytest.mark.needs_tools("qemu-system-x86_64")',
    "skipif": '@pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="needs QEMU")',
}


def run_suite(tmp_path: Path, files: dict[str, str], rows: dict[str, list[str]], *args: str,
              targets: tuple[str, ...] = ("suite/test_suite.py",), ci: str | None = None,
              path: str | None = None) -> subprocess.CompletedProcess:
    """pytest on ``targets`` with the table plugin and a registry of ``rows`` (id -> files); CI unset
    unless ``ci`` is given; ``path`` replaces PATH."""
    suite = tmp_path / "suite"
    suite.mkdir(exist_ok=True)
    for name, body in files.items():
        (suite / name).write_text(textwrap.dedent(body))
    registry = suite / "guarantees.yaml"
    registry.write_text(yaml.safe_dump([
        {"id": gid, "scenario": f"{gid} goes wrong", "expected": f"{gid} end state",
         "proven_by": [f"suite/{f}" for f in proven_by]} for gid, proven_by in rows.items()], sort_keys=False))
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["PYTHONPATH"] = f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"
    if ci is not None:
        env["CI"] = ci
    if path is not None:
        env["PATH"] = path
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "tests.guarantees", "-p", "no:cacheprovider",
                           "-q", "-rs", "--rootdir", str(tmp_path), "--guarantees", str(registry), *args, *targets],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120, check=False)


def table(out: subprocess.CompletedProcess) -> dict[str, list[str]]:
    """guarantee id -> [result, scenario, expected end state], in the printed order."""
    lines = out.stdout.split("failure guarantees", 1)[1].splitlines()
    rows = [[c.strip() for c in ln.split(" | ")] for ln in lines if " | " in ln]
    assert rows[0] == ["guarantee", "result", "scenario", "expected end state"], out.stdout
    return {r[0]: r[1:] for r in rows[1:]}


def results(out: subprocess.CompletedProcess) -> dict[str, str]:
    return {gid: cells[0] for gid, cells in table(out).items()}


XDIST = {"serial": (), "xdist": ("-p", "tests.xdist_groups", "-n", "2", "--max-worker-restart", "0")}  # as scripts/test.sh runs the suite


@pytest.mark.parametrize("run", list(XDIST))
def test_a_row_passes_only_if_every_one_of_its_tests_passed(tmp_path, run):
    out = run_suite(tmp_path, {"test_suite.py": SUITE, "test_other.py": OTHER}, SUITE_ROWS, *XDIST[run])
    assert out.returncode == 1, out.stdout + out.stderr  # test_alpha[3] and delta's teardown failed
    assert table(out)["beta"] == ["PASSED (3/3 passed)", "beta goes wrong", "beta end state"]
    assert results(out) == {  # every row of the registry, in its order; unmarked tests are in none
        "alpha": "FAILED (2/3 passed, 1 failed)",
        "beta": "PASSED (3/3 passed)",
        "gamma": "NOT RUN (0/1 passed, 1 skipped)",
        "delta": "FAILED (0/1 passed, 1 failed)",  # the test passed; its teardown failed
        "epsilon": "NOT RUN (1/2 passed, 1 skipped)",  # one passed is not enough
        "zeta": "NOT RUN (0/0 passed, 1 file not collected)",  # its file was not part of the run
    }
    assert list(results(out)) == list(SUITE_ROWS)
    assert ("guarantees: 1 passed, 2 failed, 3 not run (of 6); their tests: 6 passed, 2 failed, 2 skipped, "
            "0 deselected, 0 not run (of 10)") in out.stdout


@pytest.mark.parametrize("ci", [None, "false", "0"])
@pytest.mark.parametrize("mechanism", list(NEEDS_QEMU))
def test_with_qemu_off_path_two_of_five_passed_is_not_run_not_passed(tmp_path, mechanism, ci):
    (tmp_path / "bin").mkdir()
    out = run_suite(tmp_path, {"test_suite.py": QEMU_SUITE.format(needs_qemu=NEEDS_QEMU[mechanism])},
                    {"stop": ["test_suite.py"]}, ci=ci, path=str(tmp_path / "bin"))
    assert out.returncode == 0, out.stdout + out.stderr  # without CI the table only reports
    assert results(out) == {"stop": "NOT RUN (2/5 passed, 3 skipped)"}
    assert "guarantees: 0 passed, 0 failed, 1 not run (of 1)" in out.stdout
    assert "CI is set" not in out.stdout


@pytest.mark.parametrize("mechanism, ci", [("needs_tools", "true"), ("skipif", "true"), ("skipif", "1")])
def test_with_qemu_off_path_ci_fails(tmp_path, mechanism, ci):
    (tmp_path / "bin").mkdir()
    out = run_suite(tmp_path, {"test_suite.py": QEMU_SUITE.format(needs_qemu=NEEDS_QEMU[mechanism])},
                    {"stop": ["test_suite.py"]}, ci=ci, path=str(tmp_path / "bin"))
    assert out.returncode == 1, out.stdout + out.stderr
    if mechanism == "needs_tools":  # the tool requirement itself fails the tests under CI
        assert results(out) == {"stop": "FAILED (2/5 passed, 3 failed)"}
        assert "needs qemu-system-x86_64 on PATH (CI is set: a missing tool fails the test" in out.stdout
        assert "2 passed, 3 errors" in out.stdout  # failed in setup, before any fixture
    else:  # a plain skip: the tests "pass" as skipped, the table fails the session
        assert results(out) == {"stop": "NOT RUN (2/5 passed, 3 skipped)"}
        assert "2 passed, 3 skipped" in out.stdout
        assert "CI is set, so the session fails: 4 guarantee(s) or test(s) not proven:" in out.stdout
        assert "  stop: NOT RUN (2/5 passed, 3 skipped)" in out.stdout
        assert "  skipped: suite/test_suite.py::test_qemu_build_stopped[terminate]" in out.stdout


@pytest.mark.parametrize("run", list(XDIST))
@pytest.mark.parametrize("ci", [None, "true"])
def test_deselected_tests_make_their_row_not_run_and_no_row_vanishes(tmp_path, ci, run):
    out = run_suite(tmp_path, {"test_suite.py": SUITE, "test_other.py": OTHER}, SUITE_ROWS,
                    "-k", "beta or alpha and not 3", *XDIST[run], ci=ci)
    assert results(out) == {
        "alpha": "NOT RUN (2/3 passed, 1 deselected)",
        "beta": "PASSED (3/3 passed)",
        "gamma": "NOT RUN (0/1 passed, 1 deselected)",
        "delta": "NOT RUN (0/1 passed, 1 deselected)",
        "epsilon": "NOT RUN (0/2 passed, 2 deselected)",
        "zeta": "NOT RUN (0/0 passed, 1 file not collected)",
    }
    assert ("guarantees: 1 passed, 0 failed, 5 not run (of 6); their tests: 5 passed, 0 failed, 0 skipped, "
            "5 deselected, 0 not run (of 10)") in out.stdout
    if ci is None:
        assert out.returncode == 0, out.stdout + out.stderr
        assert "CI is set" not in out.stdout
    else:
        assert out.returncode == 1, out.stdout + out.stderr
        assert "CI is set, so the session fails: 5 guarantee(s) or test(s) not proven:" in out.stdout
        assert "  zeta: NOT RUN (0/0 passed, 1 file not collected)" in out.stdout


MARKED = 'import pytest\n\n@pytest.mark.guarantee("beta")\ndef test_b():\n    pass\n'


def test_under_ci_a_session_that_proves_every_row_passes(tmp_path):
    out = run_suite(tmp_path, {"test_suite.py": MARKED, "test_other.py": OTHER},
                    {"beta": ["test_suite.py"], "zeta": ["test_other.py"]},
                    targets=("suite/test_suite.py", "suite/test_other.py"), ci="true")
    assert out.returncode == 0, out.stdout + out.stderr
    assert results(out) == {"beta": "PASSED (1/1 passed)", "zeta": "PASSED (1/1 passed)"}
    assert "CI is set" not in out.stdout


@pytest.mark.parametrize("files, rows, message", [
    pytest.param({"test_suite.py": MARKED.replace('("beta")', "()")}, {"beta": ["test_other.py"]},
                 'use @pytest.mark.guarantee("<id>") with one id of', id="marker-without-id"),
    pytest.param({"test_suite.py": MARKED.replace('("beta")', '("beta", expected="x")')}, {"beta": ["test_other.py"]},
                 'use @pytest.mark.guarantee("<id>") with one id of', id="old-style-marker"),
    pytest.param({"test_suite.py": MARKED.replace("beta", "nope")}, {"beta": ["test_other.py"]},
                 "unknown guarantee id 'nope'", id="unknown-id"),
    pytest.param({"test_suite.py": MARKED}, {"beta": ["test_other.py"]},
                 "marked 'beta', but that row of", id="file-not-in-the-row"),
    pytest.param({"test_suite.py": MARKED}, {"beta": ["test_suite.py"], "lonely": ["test_suite.py"]},
                 "(lonely): no test in suite/test_suite.py is marked @pytest.mark.guarantee('lonely')",
                 id="row-no-test-references"),
    pytest.param({"test_suite.py": MARKED}, {"beta": ["test_suite.py"], "lonely": []},
                 "(lonely): proven_by must list the test files that prove it", id="row-without-files"),
    pytest.param({"test_suite.py": MARKED}, {"beta": ["test_suite.py", "test_gone.py"]},
                 "(beta): suite/test_gone.py does not exist", id="row-with-a-missing-file"),
])
def test_usage_errors(tmp_path, files, rows, message):
    out = run_suite(tmp_path, {"test_other.py": OTHER.replace("zeta", "beta"), **files}, rows)
    assert out.returncode == 4, out.stdout + out.stderr
    assert message in out.stdout + out.stderr



CRASH = '''
import os
import pytest

@pytest.mark.guarantee("alpha")
def test_alpha_dies():
    os._exit(1)  # as a worker killed by the OOM killer

@pytest.mark.guarantee("alpha")
def test_alpha_after():
    pass

@pytest.mark.guarantee("beta")
def test_beta():
    pass
'''


def test_under_xdist_a_worker_that_dies_fails_its_row_and_the_session(tmp_path):
    """As scripts/test.sh runs: ``--max-worker-restart 0``, because xdist 3.8's scope scheduling (which
    the suite's scheduler is, tests/xdist_groups.py) hangs when it hands a dead worker's tests to a new
    worker (tried: the session never ends)."""
    out = run_suite(tmp_path, {"test_suite.py": CRASH}, {"alpha": ["test_suite.py"], "beta": ["test_suite.py"]},
                    *XDIST["xdist"], ci="true")
    assert out.returncode == 1, out.stdout + out.stderr
    assert results(out)["alpha"].startswith("FAILED ("), out.stdout
    assert "crashed while running 'suite/test_suite.py::test_alpha_dies" in out.stdout
