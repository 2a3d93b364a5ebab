"""Shared test set-up (owned by the lead; other fixtures go in their own conftest files).

* puts plugins/ on sys.path (as Airflow does) so tests import `bakery` directly;
* gives the whole session ONE private Airflow home (SQLite) before anything imports Airflow,
  so tests never touch a developer's var/airflow; `airflow_db` migrates it once, lazily.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

pytest_plugins = ["tests.guarantees", "tests.xdist_groups", "tests.compose_figures"]

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "plugins"))

_AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="bakery-test-airflow-"))
os.environ["AIRFLOW_HOME"] = str(_AIRFLOW_HOME)
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(REPO / "dags")
os.environ["AIRFLOW__CORE__PLUGINS_FOLDER"] = str(REPO / "plugins")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "False"
os.environ.setdefault("PYTHONPATH", str(REPO / "plugins"))
if str(REPO / "plugins") not in os.environ["PYTHONPATH"].split(os.pathsep):
    os.environ["PYTHONPATH"] = str(REPO / "plugins") + os.pathsep + os.environ["PYTHONPATH"]
# the venv's console scripts (airflow) for subprocesses
os.environ["PATH"] = str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"]


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: needs a real Packer build / QEMU boot (minutes under TCG)")
    config.addinivalue_line("markers", "compose: runs docker-compose.yaml for real with podman-compose "
                            "(tests/compose/; select with -m compose, leave out with -m 'not compose')")


def pytest_unconfigure(config):
    shutil.rmtree(_AIRFLOW_HOME, ignore_errors=True)  # leave no test Airflow home behind


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """The session's Airflow home with a migrated metadata DB."""
    marker = _AIRFLOW_HOME / ".migrated"
    if not marker.exists():
        proc = subprocess.run(["airflow", "db", "migrate"], capture_output=True, text=True, env=os.environ.copy())
        assert proc.returncode == 0, f"airflow db migrate failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        shutil.copy2(_AIRFLOW_HOME / "airflow.db", _AIRFLOW_HOME / PRISTINE_DB)
        marker.touch()
    return _AIRFLOW_HOME


PRISTINE_DB = "pristine-airflow.db"  # the session's metadata DB right after its migration


@pytest.fixture
def private_airflow_home(airflow_db, tmp_path) -> Path:
    """An Airflow home of the test's own: a copy of the freshly migrated session DB, so that what
    other tests' runs left in the session DB (or did to it) cannot reach this test's runs."""
    home = tmp_path / "airflow-home"
    home.mkdir()
    shutil.copy2(airflow_db / PRISTINE_DB, home / "airflow.db")
    return home


@pytest.fixture(scope="session")
def base_image() -> Path:
    """The Debian 12 base image, built by the repo's own (cached) recipe under var/base."""
    proc = subprocess.run(
        ["bash", str(REPO / "scripts" / "build-base-image.sh")],
        capture_output=True, text=True, env={**os.environ, "BAKERY_HOME": os.environ.get("BAKERY_HOME", str(REPO / "var"))},
    )
    assert proc.returncode == 0, f"base image build failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    path = Path(proc.stdout.strip().splitlines()[-1])
    assert path.is_file()
    return path
