"""The bake steps as plain functions (no Airflow import): the operators only adapt context.

    prepare -> (packer validate) -> (packer build) -> smoke_test -> publish -> prune

The Azure target splits the smoke test in three steps for the DAG (setup, check, teardown: the
teardown is an Airflow teardown task and runs whatever happened); ``smoke_test`` still does all three.
Every step takes an optional ready ``target`` (the operators build the Azure one with SDK clients
from the connection); without one, ``get_target`` makes it.
"""

from __future__ import annotations

import contextlib
import shutil
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

from bakery.catalogue import ImageSpec
from bakery.digest import tree_digest
from bakery.paths import work_root
from bakery.record import BakeRecord
from bakery.targets.base import Log, SmokeCheck, Target
from bakery.versioning import version_for_run


def get_target(name: str, spec: ImageSpec | None = None, *, clients: Any = None) -> Target:
    """The target ``name``. Azure needs the image's spec (its catalogue azure block) and SDK clients
    (``bakery.azure_clients.AzureClients``, or a zero-argument factory of them, called when needed)."""
    if name == "local":
        from bakery.targets.local import LocalTarget

        return LocalTarget()
    if name == "azure":
        from bakery.targets.azure import AzureTarget

        if spec is None:
            raise ValueError("the azure target needs the image's catalogue spec")
        return AzureTarget(spec, clients)
    raise ValueError(f"unknown target {name!r} (known: local, azure)")


def work_dir(image: str, version: str) -> Path:
    return work_root() / image / version


def prepare(
    spec: ImageSpec,
    *,
    run_type: str,
    logical_date: datetime | None,
    run_after: datetime | None,
    dag_run_id: str | None,
    accelerator: str = "auto",
    log: Log,
    target: Target | None = None,
) -> dict[str, Any]:
    """Name the version, digest the template, get the target's Packer variables ready.

    First the cheap checks of the bake's inputs (``bakery.preflight``: tools on PATH, catalogue
    variables the template declares), before the target's own preparation (base image build,
    Azure infrastructure check) and long before Packer builds anything.

    Returns ``{"record": BakeRecord dict, "packer_variables": {...}}`` (no secrets in it).
    """
    from bakery import preflight

    preflight.run(spec, log)
    version = version_for_run(run_type=run_type, logical_date=logical_date, run_after=run_after)
    record = BakeRecord(
        image=spec.name,
        version=version,
        target=spec.target,
        template_digest=tree_digest(spec.template_dir),
        dag_run_id=dag_run_id,
        run_type=run_type,
    )
    wd = work_dir(spec.name, version)
    wd.mkdir(parents=True, exist_ok=True)
    target = target or get_target(spec.target, spec)
    variables, base_digest = target.prepare(spec, record, wd, accelerator=accelerator, log=log)  # may fill record.extra
    record = replace(record, base_digest=base_digest)
    log(f"{spec.name}: version {version} ({run_type} run {dag_run_id}), template {record.template_digest}")
    return {"record": record.to_dict(), "packer_variables": {**spec.variables, **variables}}


def record_with_build(record: dict[str, Any], build_result: dict[str, Any], target: Target | None = None) -> BakeRecord:
    """Fold the Packer build's result (artifacts, manifest entry) into the bake record."""
    rec = BakeRecord.from_dict(record)
    artifacts = build_result.get("artifacts") or []
    if not artifacts:
        raise ValueError("the Packer build reported no artifact")
    art = artifacts[0]
    files = list(art.get("files") or [])
    target = target or get_target(rec.target, _spec_of(rec))
    return replace(
        rec,
        packer_run_uuid=build_result.get("packer_run_uuid"),
        artifact_id=target.artifact_id(art),
        artifact_files=files,
    )


def _spec_of(rec: BakeRecord) -> ImageSpec | None:
    if rec.target == "local":
        return None
    from bakery.catalogue import get_image

    return get_image(rec.image)


def smoke_test(rec: BakeRecord, check: SmokeCheck, log: Log, target: Target | None = None) -> BakeRecord:
    result = (target or get_target(rec.target, _spec_of(rec))).smoke_test(rec, check, log)
    return replace(rec, smoke=result.to_dict())


def smoke_setup(rec: BakeRecord, check: SmokeCheck, log: Log, target: Any) -> BakeRecord:
    """Azure: create the smoke-test VM; the record's ``extra["smoke_vm"]`` says where it answers."""
    info = target.smoke_setup(rec, check, log)
    return replace(rec, extra={**rec.extra, "smoke_vm": info})


def smoke_check(rec: BakeRecord, check: SmokeCheck, log: Log, target: Any) -> BakeRecord:
    """Azure: the HTTP check of the VM made by ``smoke_setup``."""
    result = target.smoke_check(rec, rec.extra["smoke_vm"], check, log)
    return replace(rec, smoke=result.to_dict())


def smoke_teardown(rec: BakeRecord, log: Log, target: Any, *, delete_image: bool = False) -> list[str]:
    """Azure: delete the smoke-test VM and everything made with it (and a failed bake's image)."""
    return target.smoke_teardown(rec, log, delete_image=delete_image)


def publish(rec: BakeRecord, log: Log, target: Target | None = None, *, replace_existing: bool = False) -> BakeRecord:
    target = target or get_target(rec.target, _spec_of(rec))
    if replace_existing:  # only the azure target can replace a published version
        published_id = target.publish(rec, log, replace_existing=True)  # type: ignore[call-arg]
    else:
        published_id = target.publish(rec, log)
    wd = work_dir(rec.image, rec.version)
    if wd.is_dir():
        shutil.rmtree(wd)
        log(f"removed the work folder {wd}")
    with contextlib.suppress(OSError):
        wd.parent.rmdir()  # the image's work folder, when no other version is in flight
    return replace(rec, published_id=published_id)


def prune(rec: BakeRecord, keep: int, dry_run: bool, log: Log, target: Target | None = None) -> list[str]:
    target = target or get_target(rec.target, _spec_of(rec))
    return target.prune(rec.image, keep, protect={rec.version}, dry_run=dry_run, log=log)
