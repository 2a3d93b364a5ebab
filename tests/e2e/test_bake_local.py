"""End to end: the real DAG (`airflow dags test`) bakes the real Debian + nginx image with real
Packer + QEMU, boots it, gets nginx's page over HTTP, publishes V; a second run publishes V' > V
and prunes to the policy. Assertions are on the gallery on disk."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from bakery.digest import sha256_file
from bakery.versioning import version_key

REPO = Path(__file__).resolve().parents[2]
DAG_ID = "bake_debian12_nginx"
IMAGE = "debian12-nginx"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bakery_home(tmp_path_factory, base_image):
    home = tmp_path_factory.mktemp("bakery-home")
    (home / "base").symlink_to(base_image.parent)  # reuse the cached base image
    return home


def dags_test(bakery_home: Path, logical_date: str, conf: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "BAKERY_HOME": str(bakery_home)}
    cmd = ["airflow", "dags", "test", DAG_ID, logical_date]
    if conf:
        cmd += ["--conf", json.dumps(conf)]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    (bakery_home / f"dags-test-{logical_date[:10]}.log").write_text(proc.stdout + proc.stderr)
    print(f"airflow dags test {logical_date}: rc={proc.returncode} in {time.monotonic() - t0:.0f}s")
    return proc


def qemu_processes(home: Path):
    """QEMUs of this test's bakery home (other QEMUs on the machine are none of our business)."""
    return [
        p for p in psutil.process_iter(["name", "cmdline"])
        if "qemu-system" in (p.info["name"] or "") and str(home) in " ".join(p.info["cmdline"] or [])
    ]


def test_two_nightly_bakes_publish_increasing_versions_and_prune(airflow_db, bakery_home):
    gallery = bakery_home / "gallery" / IMAGE

    first = dags_test(bakery_home, "2026-11-26T02:00:00+00:00")
    assert first.returncode == 0, (first.stdout + first.stderr)[-6000:]
    versions = sorted((p.name for p in gallery.iterdir() if p.is_dir() and not p.is_symlink() and not p.name.startswith(".")), key=version_key)
    assert versions == ["2026.1126.200001"]  # `airflow dags test` makes a manual run with that logical date
    v1 = versions[0]
    meta = json.loads((gallery / v1 / "metadata.json").read_text())
    assert meta["smoke_test"]["passed"] is True and meta["smoke_test"]["status"] == 200
    assert "Welcome to nginx" in meta["smoke_test"]["detail"]
    assert 0 < meta["smoke_test"]["seconds"] < 600
    assert meta["packer_run_uuid"] and meta["template_digest"].startswith("sha256:") and meta["base_digest"].startswith("sha256:")
    assert meta["run_type"] == "manual" and meta["dag_run_id"]
    disk = gallery / v1 / "disk.qcow2"
    assert meta["size_bytes"] == disk.stat().st_size > 100 * 2**20
    assert os.readlink(gallery / "latest") == v1
    assert not (bakery_home / "work" / IMAGE / v1).exists(), "the work folder was not cleaned after publish"
    assert not qemu_processes(bakery_home), "a QEMU outlived the DAG run"
    digest_v1 = sha256_file(disk)

    second = dags_test(bakery_home, "2026-11-27T02:00:00+00:00", conf={"prune_keep": 1})
    assert second.returncode == 0, (second.stdout + second.stderr)[-6000:]
    versions = sorted((p.name for p in gallery.iterdir() if p.is_dir() and not p.is_symlink() and not p.name.startswith(".")), key=version_key)
    assert versions == ["2026.1127.200001"], "prune_keep=1 must leave only the new version"
    assert version_key("2026.1127.200001") > version_key(v1)
    assert os.readlink(gallery / "latest") == "2026.1127.200001"
    meta2 = json.loads((gallery / "2026.1127.200001" / "metadata.json").read_text())
    assert meta2["packer_run_uuid"] != meta["packer_run_uuid"]
    assert sha256_file(gallery / "2026.1127.200001" / "disk.qcow2") != digest_v1
    assert not [p for p in gallery.iterdir() if p.name.startswith((".staging", ".trash"))]
    assert not qemu_processes(bakery_home)
