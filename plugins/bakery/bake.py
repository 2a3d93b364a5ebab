"""The bake steps as plain functions (no Airflow import): the operators only adapt context.

    prepare -> (packer validate) -> (packer build) -> smoke_test -> publish -> prune
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


def get_target(name: str) -> Target:
    if name == "local":
        from bakery.targets.local import LocalTarget

        return LocalTarget()
    raise ValueError(f"unknown target {name!r} (known: local)")


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
) -> dict[str, Any]:
    """Name the version, digest the template, get the target's Packer variables ready.

    Returns ``{"record": BakeRecord dict, "packer_variables": {...}}`` (no secrets in it).
    """
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
    target = get_target(spec.target)
    variables, base_digest = target.prepare(spec, record, wd, accelerator=accelerator, log=log)  # may fill record.extra
    record = replace(record, base_digest=base_digest)
    log(f"{spec.name}: version {version} ({run_type} run {dag_run_id}), template {record.template_digest}")
    return {"record": record.to_dict(), "packer_variables": {**spec.variables, **variables}}


def record_with_build(record: dict[str, Any], build_result: dict[str, Any]) -> BakeRecord:
    """Fold the Packer build's result (artifacts, manifest entry) into the bake record."""
    rec = BakeRecord.from_dict(record)
    artifacts = build_result.get("artifacts") or []
    if not artifacts:
        raise ValueError("the Packer build reported no artifact")
    art = artifacts[0]
    files = list(art.get("files") or [])
    target = get_target(rec.target)
    return replace(
        rec,
        packer_run_uuid=build_result.get("packer_run_uuid"),
        artifact_id=target.artifact_id(art),
        artifact_files=files,
    )


def smoke_test(rec: BakeRecord, check: SmokeCheck, log: Log) -> BakeRecord:
    result = get_target(rec.target).smoke_test(rec, check, log)
    return replace(rec, smoke=result.to_dict())


def publish(rec: BakeRecord, log: Log) -> BakeRecord:
    target = get_target(rec.target)
    published_id = target.publish(rec, log)
    wd = work_dir(rec.image, rec.version)
    if wd.is_dir():
        shutil.rmtree(wd)
        log(f"removed the work folder {wd}")
    with contextlib.suppress(OSError):
        wd.parent.rmdir()  # the image's work folder, when no other version is in flight
    return replace(rec, published_id=published_id)


def prune(rec: BakeRecord, keep: int, dry_run: bool, log: Log) -> list[str]:
    return get_target(rec.target).prune(rec.image, keep, protect={rec.version}, dry_run=dry_run, log=log)
