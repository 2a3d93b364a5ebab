"""Thin Airflow adapters for the bake steps: context in, plain call to bakery.bake, small XCom out."""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseOperator

from bakery import bake
from bakery.operators.packer import PackerOperator, _as_mapping
from bakery.sshkey import ephemeral_keypair
from bakery.catalogue import load_catalogue
from bakery.record import BakeRecord
from bakery.targets.base import SmokeCheck


def _spec(image: str):
    return load_catalogue()[image]


class PrepareBakeOperator(BaseOperator):
    """Names the version from the run, digests the template, readies the base image."""

    template_fields = ("accelerator",)

    def __init__(self, *, image: str, accelerator: str = "{{ params.accelerator }}", **kwargs):
        super().__init__(**kwargs)
        self.image = image
        self.accelerator = accelerator

    def execute(self, context) -> dict[str, Any]:
        dag_run = context["dag_run"]
        return bake.prepare(
            _spec(self.image),
            run_type=str(getattr(dag_run.run_type, "value", dag_run.run_type)),
            logical_date=dag_run.logical_date,
            run_after=dag_run.run_after,
            dag_run_id=dag_run.run_id,
            accelerator=self.accelerator,
            log=self.log.info,
        )


class QemuPackerOperator(PackerOperator):
    """PackerOperator for the local qemu templates: adds an ephemeral SSH key pair for this run.

    The key pair lives in a private temporary folder for the duration of the Packer command
    only; the guest gets the public key through QEMU fw_cfg (see include/packer/debian12-nginx).
    """

    def execute(self, context) -> dict[str, Any]:
        with ephemeral_keypair(f"bakery-{self.task_id}") as (private_key, public_key):
            self.variables = {
                **_as_mapping(self.variables, "variables"),
                "ssh_private_key_file": str(private_key),
                "ssh_public_key_file": str(public_key),
            }
            return super().execute(context)


class SmokeTestOperator(BaseOperator):
    """Boots the new image and checks its HTTP answer; fails the task (publishing nothing) if bad."""

    def __init__(self, *, image: str, prepare_task_id: str = "prepare", build_task_id: str = "build", **kwargs):
        super().__init__(**kwargs)
        self.image = image
        self.prepare_task_id = prepare_task_id
        self.build_task_id = build_task_id

    def execute(self, context) -> dict[str, Any]:
        ti = context["ti"]
        prepared = ti.xcom_pull(task_ids=self.prepare_task_id)
        built = ti.xcom_pull(task_ids=self.build_task_id)
        rec = bake.record_with_build(prepared["record"], built)
        params = context["params"]
        check = SmokeCheck(**{**_spec(self.image).smoke_test.__dict__, "timeout_seconds": int(params["smoke_timeout_seconds"])})
        rec = bake.smoke_test(rec, check, self.log.info)
        if not rec.smoke["passed"]:
            raise RuntimeError(
                f"smoke test of {rec.image} {rec.version} failed after {rec.smoke['seconds']}s: "
                f"{rec.smoke['detail']}"
            )
        return rec.to_dict()


class PublishOperator(BaseOperator):
    """Publishes the smoke-tested image as a gallery version (atomic, idempotent)."""

    def __init__(self, *, smoke_task_id: str = "smoke_test", **kwargs):
        super().__init__(**kwargs)
        self.smoke_task_id = smoke_task_id

    def execute(self, context) -> dict[str, Any]:
        rec = BakeRecord.from_dict(context["ti"].xcom_pull(task_ids=self.smoke_task_id))
        return bake.publish(rec, self.log.info).to_dict()


class PruneOperator(BaseOperator):
    """Keeps the N newest versions (N from the catalogue or the run's Params)."""

    template_fields = ("keep", "dry_run")

    def __init__(self, *, publish_task_id: str = "publish", keep: Any = "{{ params.prune_keep }}",
                 dry_run: Any = "{{ params.prune_dry_run }}", **kwargs):
        super().__init__(**kwargs)
        self.publish_task_id = publish_task_id
        self.keep = keep
        self.dry_run = dry_run

    def execute(self, context) -> list[str]:
        rec = BakeRecord.from_dict(context["ti"].xcom_pull(task_ids=self.publish_task_id))
        dry_run = self.dry_run if isinstance(self.dry_run, bool) else str(self.dry_run).lower() == "true"
        return bake.prune(rec, int(self.keep), dry_run, self.log.info)
