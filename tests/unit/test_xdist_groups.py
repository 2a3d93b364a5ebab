"""The suite's xdist scheduler (tests/xdist_groups.py), run on a throw-away suite in a subprocess the way
scripts/test.sh runs the real one (``-n 2``): every test of a file that marks tests ``slow`` runs on one
worker, one after the other; the other tests run beside them on the other worker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

RECORDING = '''
import json, os, time
import pytest

def record(name):
    start = time.time()
    time.sleep({sleep})
    with open(os.environ["RECORD"], "a") as fh:
        fh.write(json.dumps({{"test": name, "worker": os.environ["PYTEST_XDIST_WORKER"], "start": start,
                              "end": time.time()}}) + "\\n")
'''
SLOW_ONE = RECORDING.format(sleep=0.4) + '''
pytestmark = pytest.mark.slow

@pytest.mark.parametrize("n", range(3))
def test_vm_one(n):
    record(f"one-{n}")
'''
SLOW_TWO = RECORDING.format(sleep=0.4) + '''
def test_light_in_a_slow_file():
    record("two-light")

@pytest.mark.slow
def test_vm_two():
    record("two-vm")
'''
LIGHT = RECORDING.format(sleep=0.2) + '''
@pytest.mark.parametrize("n", range(8))
def test_light(n):
    record(f"light-{n}")
'''


def test_the_slow_files_run_on_one_worker_one_test_at_a_time_and_the_rest_beside_them(tmp_path):
    tests = tmp_path / "tests"
    (tests / "e2e").mkdir(parents=True)
    (tests / "e2e" / "test_vm_one.py").write_text(textwrap.dedent(SLOW_ONE))
    (tests / "test_vm_two.py").write_text(textwrap.dedent(SLOW_TWO))
    (tests / "test_light.py").write_text(textwrap.dedent(LIGHT))
    record = tmp_path / "record.jsonl"
    env = {**os.environ, "RECORD": str(record), "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    out = subprocess.run([sys.executable, "-m", "pytest", "-p", "tests.xdist_groups", "-p", "no:cacheprovider", "-q",
                          "-W", "ignore::pytest.PytestUnknownMarkWarning", "--rootdir", str(tmp_path),
                          "-n", "2", "--max-worker-restart", "0", "tests"],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    runs = [json.loads(line) for line in record.read_text().splitlines()]
    assert len(runs) == 13, runs
    grouped = [r for r in runs if not r["test"].startswith("light-")]  # every test of both slow files
    assert len({r["worker"] for r in grouped}) == 1, grouped
    spans = sorted((r["start"], r["end"], r["test"]) for r in grouped)
    for (s1, e1, a), (s2, _, b) in zip(spans, spans[1:]):
        assert e1 <= s2, f"{a} and {b} of the slow group ran at the same time"
    beside = [r for r in runs if r["test"].startswith("light-") and r["worker"] != grouped[0]["worker"]]
    first, last = spans[0][0], spans[-1][1]
    assert any(first < r["start"] < last for r in beside), (
        "no other test ran on the other worker while the slow group ran: "
        f"{[(r['test'], r['worker'], datetime.fromtimestamp(r['start']).time()) for r in runs]}")


def test_the_groups_come_from_the_code_not_from_text_in_strings():
    sys.path.insert(0, str(REPO))
    from tests.xdist_groups import grouped_files

    groups = grouped_files(REPO)
    assert groups["tests/e2e/test_inputs_and_backfills.py"] == "qemu" and groups["tests/faults/test_bake_faults.py"] == "qemu"
    assert "tests/unit/test_xdist_groups.py" not in groups  # its throw-away suite's markers are in strings
