"""The promote_<image> and rollback_<image> DAGs (issue 9, part 4), run by real Airflow (`airflow dags
test`) on the shipped DAG files: locally on a gallery of real qcow2 disks (the promotion's check runs
``qemu-img check``), and on Azure against the ARM emulator through the Airflow connection. After each
run, ``latest`` resolves as expected (local: the links; Azure: ARM's rule in the emulator), and the
change names who (the run's triggering user), when and which run."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from bakery.catalogue import DEFAULT_CATALOGUE
from bakery.targets.local import LocalTarget

from tests.azure_emulator.dagrun import Bake, emulated_world
from tests.azure_emulator.dagrun import IMAGE as AZ_IMAGE
from tests.integration.test_azure_channels import arm_latest
from tests.integration.test_azure_target import record
from tests.unit.test_channels import publish as publish_local

V1, V2, V3 = "2026.1128.200000", "2026.1129.200000", "2026.1130.200000"
IMAGE = "debian12-nginx"

pytestmark = pytest.mark.needs_tools("qemu-img")


def dags_test(dag_id: str, env: dict, cwd: Path, conf: dict | None = None) -> tuple[str, str, list]:
    """One `airflow dags test` run: (its state, its output, its task's XCom)."""
    cmd = ["airflow", "dags", "test", dag_id, datetime.now(UTC).isoformat()]
    if conf:
        cmd += ["--conf", json.dumps(conf)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, timeout=300, check=False)
    with sqlite3.connect(Path(env["AIRFLOW_HOME"]) / "airflow.db") as db:
        run_id, state = db.execute("SELECT run_id, state FROM dag_run WHERE dag_id=? ORDER BY id DESC LIMIT 1",
                                   (dag_id,)).fetchone()
        rows = db.execute("SELECT value FROM xcom WHERE dag_id=? AND run_id=? AND key='return_value'",
                          (dag_id, run_id)).fetchall()
    xcom = json.loads(rows[0][0]) if rows and isinstance(rows[0][0], str | bytes) else (rows[0][0] if rows else None)
    return state, proc.stdout + proc.stderr, xcom


def local_env(home: Path, tmp_path: Path, airflow_home: Path) -> dict:
    entry = yaml.safe_load(DEFAULT_CATALOGUE.read_text())["images"][IMAGE]
    entry["channels"] = {"soak_hours": 0, "promote_schedule": None}
    catalogue = tmp_path / "catalogue.yaml"
    catalogue.write_text(yaml.safe_dump({"version": 1, "images": {IMAGE: entry}}))
    return {**os.environ, "BAKERY_HOME": str(home), "BAKERY_CATALOGUE": str(catalogue), "AIRFLOW_HOME": str(airflow_home)}


def test_local_promote_and_rollback_dags_move_the_links_and_record_who(private_airflow_home, tmp_path):
    home = tmp_path / "bakery"
    target = LocalTarget(home / "gallery")
    for v in (V1, V2, V3):
        publish_local(tmp_path, target, v, image=IMAGE)
    env = local_env(home, tmp_path, private_airflow_home)
    gallery = home / "gallery" / IMAGE

    state, out, changes = dags_test("promote_debian12_nginx", env, tmp_path, {"version": V2})
    assert state == "success", out[-3000:]
    assert [(c["version"], c["channel"], c["by"]) for c in changes] == [(V2, "stable", "dag_test")]
    assert os.readlink(gallery / "latest") == os.readlink(gallery / "stable") == V2

    state, out, changes = dags_test("rollback_debian12_nginx", env, tmp_path, {"version": V1})
    assert state == "success", out[-3000:]
    assert {c["version"]: c["channel"] for c in changes} == {V1: "stable", V2: "withdrawn", V3: "withdrawn"}
    assert changes[0]["by"] == "dag_test"
    assert os.readlink(gallery / "latest") == os.readlink(gallery / "stable") == V1
    history = json.loads((gallery / "channels.json").read_text())["history"]
    assert {h["run_id"] for h in history if h["action"] == "rollback"} == {changes[0]["run_id"]}
    assert changes[0]["run_id"].startswith("manual__") and changes[0]["at"]

    # a rollback to a version that is not there fails, saying so, and changes nothing
    state, out, _ = dags_test("rollback_debian12_nginx", env, tmp_path, {"version": "2026.1201.200000"})
    assert state == "failed" and "cannot roll back to 2026.1201.200000: no such published version" in out
    assert os.readlink(gallery / "latest") == V1


def test_azure_promote_and_rollback_dags_move_arms_latest(private_airflow_home, tmp_path):
    from bakery.catalogue import parse_catalogue
    from bakery.targets.azure import AzureTarget

    with emulated_world() as world:
        bake = Bake(world, tmp_path / "run")
        catalogue = yaml.safe_load(bake.catalogue.read_text())
        catalogue["images"][AZ_IMAGE]["channels"] = {"soak_hours": 0, "promote_schedule": None}
        bake.catalogue.write_text(yaml.safe_dump(catalogue))
        spec = parse_catalogue(catalogue)[AZ_IMAGE]
        target = AzureTarget(spec, world.clients, progress_interval=0.05)
        try:
            for v in (V1, V2):
                rec = record(world, version=v, run_id=f"scheduled__{v}")
                target.publish(rec.with_(image=AZ_IMAGE, extra={"channel": "candidate", "triggered_by": "scheduler"}),
                               print)
                world.emu.state.get(target.published(AZ_IMAGE, v)["published_id"]).properties[
                    "publishingProfile"]["publishedDate"] = (datetime.now(UTC) - timedelta(days=2)).isoformat()
        finally:
            target.close()
        assert arm_latest(world) is None  # two candidates: nothing in latest yet

        env = {**bake.env(), "AIRFLOW_HOME": str(private_airflow_home)}
        state, out, changes = dags_test("promote_rhel9_nginx", env, bake.home)
        assert state == "success", out[-3000:]
        assert [c["version"] for c in changes] == [V2] and arm_latest(world) == V2

        state, out, changes = dags_test("rollback_rhel9_nginx", env, bake.home, {"version": V1})
        assert state == "success", out[-3000:]
        assert arm_latest(world) == V1
        assert "client_secret" not in out and world.client_secret not in out
