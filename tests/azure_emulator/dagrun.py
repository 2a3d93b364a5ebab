"""Run the real Azure DAG (`airflow dags test`, dags/image_bakery.py) against the ARM emulator.

Shared by the end-to-end tests (tests/e2e/test_bake_azure.py) and the failure-guarantee tests
(tests/faults): the catalogue is a test copy of the shipped one whose azure block points at the
emulator's resource groups, the connection an ordinary ``azure`` connection given as
``AIRFLOW_CONN_AZURE_EMU`` (aimed at the emulator, which issues the tokens and refuses any other),
and the fake ``packer`` (first on PATH) does the azure-arm build at the emulator, handing
``validate`` to the real Packer.

A test module's fixture: ``with emulated_world() as world: yield world``.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import yaml

from . import FAKE_PACKER_BIN_DIR, ArmEmulator
from .world import AzureWorld

IMAGE = "rhel9-nginx"
DAG_ID = "bake_rhel9_nginx"
CONN_ID = "azure_emu"


@contextlib.contextmanager
def emulated_world(client_secret: str | None = None, *, infrastructure: bool = True,
                   **emulator_kwargs) -> Iterator[AzureWorld]:
    """An emulator that accepts only the tokens it issued, with the platform's infrastructure made in
    it (``world.emu`` is the emulator; ``infrastructure=False``: the test makes it); stopped at the end,
    and it must have had no internal error. ``client_secret``: the service principal's secret (default:
    a random one)."""
    kwargs = {"retry_after": 0, "require_issued_tokens": True, "page_size": 2, "seed": 3, **emulator_kwargs}
    emulator = ArmEmulator(**kwargs)
    try:
        w = AzureWorld(emulator, client_secret=client_secret) if client_secret else AzureWorld(emulator)
        if infrastructure:
            w.create_infrastructure()
        yield w
    finally:
        emulator.stop()
    assert emulator.internal_errors == []


def catalogue_entry(world: AzureWorld, *, smoke_timeout: int = 60, keep: int = 2, sbom: dict | None = None,
                    mirrors: list[dict] | None = None) -> dict:
    """The shipped catalogue's entry of IMAGE, pointed at the emulator (``sbom``: its azure.sbom block).
    ``mirrors``: its packages.mirrors (a loopback repository of the test); by default none: the shipped
    entry's real AlmaLinux repositories are never read by a test (check_changes then always bakes)."""
    from bakery.catalogue import DEFAULT_CATALOGUE

    entry = yaml.safe_load(DEFAULT_CATALOGUE.read_text())["images"][IMAGE]
    entry["azure"] = world.azure_block(conn_id=CONN_ID)
    if sbom is not None:
        entry["azure"]["sbom"] = sbom
    entry["packages"] = {**(entry.get("packages") or {}), "mirrors": list(mirrors or [])}
    entry["smoke_test"] = {"path": "/", "port": world.emu.vm_http_port, "expect_status": 200,
                           "expect_text": "Welcome to nginx", "timeout_seconds": smoke_timeout}
    entry["prune"] = {"keep": keep, "dry_run": False}
    return entry


class Bake:
    """One `airflow dags test` of the Azure DAG, with its environment and everything it left.

    Everything of the run lives under ``home``: the catalogue, the bakery home (``home/bakery``),
    the fake packer's invocation log (``home/fake-packer.jsonl``), the output of `airflow dags test`.
    ``env`` adds (or overrides) environment variables of the run; ``sbom`` is the catalogue's
    ``azure.sbom`` block (its wasb connection goes in ``env`` as ``AIRFLOW_CONN_<ID>``); ``mirrors`` its
    ``packages.mirrors`` (default: none).
    """

    def __init__(self, world: AzureWorld, home: Path, *, smoke_timeout: int = 60,
                 env: dict[str, str] | None = None, sbom: dict | None = None,
                 mirrors: list[dict] | None = None) -> None:
        self.world = world
        self.home = home
        home.mkdir(parents=True, exist_ok=True)
        self.catalogue = home / "catalogue.yaml"
        self.catalogue.write_text(yaml.safe_dump({"version": 1, "images": {
            IMAGE: catalogue_entry(world, smoke_timeout=smoke_timeout, sbom=sbom, mirrors=mirrors)}}))
        self.packer_log = home / "fake-packer.jsonl"
        self.bakery_home = home / "bakery"
        self.extra_env = dict(env or {})
        self.output = ""
        self.run_id = ""

    def env(self) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PKR_VAR_", "BAKERY_FAKE_PACKER_", "AZURE_"))}
        env.update(self.world.emu.env())
        env.update({
            "PATH": f"{FAKE_PACKER_BIN_DIR}{os.pathsep}{env['PATH']}",
            "BAKERY_FAKE_PACKER_LOG": str(self.packer_log),
            "BAKERY_CATALOGUE": str(self.catalogue),
            "BAKERY_HOME": str(self.bakery_home),
            f"AIRFLOW_CONN_{CONN_ID.upper()}": self.world.connection_json(),
            "CHECKPOINT_DISABLE": "1",
        })
        env.update(self.extra_env)
        return env

    def run(self, logical_date: str, conf: dict | None = None) -> str:
        cmd = ["airflow", "dags", "test", DAG_ID, logical_date]
        if conf:
            cmd += ["--conf", json.dumps(conf)]
        t0 = time.monotonic()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=self.env(), timeout=900, cwd=self.home,
                              check=False)
        self.output = proc.stdout + proc.stderr
        (self.home / f"dags-test-{logical_date[:10]}.log").write_text(self.output)
        print(f"airflow dags test {logical_date}: rc={proc.returncode} in {time.monotonic() - t0:.1f}s")
        self.run_id = self.db("SELECT run_id FROM dag_run WHERE dag_id=? ORDER BY id DESC LIMIT 1", DAG_ID)[0][0]
        return self.db("SELECT state FROM dag_run WHERE run_id=? AND dag_id=?", self.run_id, DAG_ID)[0][0]

    # --- Airflow's metadata DB -------------------------------------------------------------------
    def db(self, sql: str, *args) -> list[tuple]:
        with sqlite3.connect(Path(os.environ["AIRFLOW_HOME"]) / "airflow.db") as conn:
            return conn.execute(sql, args).fetchall()

    def states(self) -> dict[str, str]:
        return dict(self.db("SELECT task_id, state FROM task_instance WHERE dag_id=? AND run_id=?", DAG_ID, self.run_id))

    def tries(self) -> dict[str, int]:
        return dict(self.db("SELECT task_id, try_number FROM task_instance WHERE dag_id=? AND run_id=?",
                            DAG_ID, self.run_id))

    def xcom(self, task_id: str, key: str = "return_value"):
        rows = self.db("SELECT value FROM xcom WHERE dag_id=? AND run_id=? AND task_id=? AND key=?",
                       DAG_ID, self.run_id, task_id, key)
        if not rows:
            return None
        value = rows[0][0]
        return json.loads(value) if isinstance(value, str | bytes) else value

    def all_xcom_text(self) -> str:
        return "\n".join(str(r[0]) for r in self.db("SELECT value FROM xcom WHERE dag_id=?", DAG_ID))

    def all_logs_text(self) -> str:
        parts = [self.output]
        for root in (Path(os.environ["AIRFLOW_HOME"]) / "logs", self.bakery_home):
            if root.is_dir():
                parts += [p.read_text(errors="replace") for p in root.rglob("*") if p.is_file()]
        return "\n".join(parts)

    def packer_invocations(self) -> list[dict]:
        return [json.loads(line) for line in self.packer_log.read_text().splitlines()]

    def var_files(self) -> list[str]:
        """The private var-files the product gave Packer (``-var-file=...`` of every invocation)."""
        return [a.split("=", 1)[1] for inv in self.packer_invocations() for a in inv["argv"]
                if a.startswith("-var-file=")]


def version_of(bake: Bake) -> str:
    return bake.xcom("prepare")["record"]["version"]
