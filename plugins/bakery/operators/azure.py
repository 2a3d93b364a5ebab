"""Airflow adapters of the Azure target: Packer with the connection's credentials, and the three
smoke-test steps (setup, check, teardown) the DAG wires as an Airflow setup/teardown pair.

Nothing Azure is imported or resolved at DAG parse time: the hook (and with it the provider and
the SDK) is imported inside ``execute``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from airflow.sdk import BaseOperator

from bakery.operators.bake import (
    _required,
    _spec,
    check_template_dir,
    close_target,
    make_target,
    smoke_check_of,
    verdict_failed,
)
from bakery.operators.links import BUILD_LINKS
from bakery.operators.packer import PackerOperator, _as_mapping
from bakery.record import BakeRecord

VERDICT_KEY = "smoke_verdict"


class AzurePackerOperator(PackerOperator):
    """PackerOperator for the azure-arm templates: authentication from an ``azure`` connection.

    ``subscription_id``, ``tenant_id``, ``client_id``, ``use_azure_cli_auth`` and
    ``cloud_environment_name`` are plain variables; ``client_secret`` is only ever a sensitive
    variable (``PKR_VAR_client_secret`` in Packer's environment, masked in the task log).

    For ``build``, the package list the template downloaded from the build VM (before it was
    deprovisioned) becomes the version's package manifest (``bakery.bake.capture_manifest``); the
    XCom gains ``packages`` (manifest path, digest, count, family), as for the local target.
    """

    operator_extra_links = BUILD_LINKS
    template_fields = (*PackerOperator.template_fields, "prepared")

    def __init__(self, *, conn_id: str, subscription_id: str | None = None, prepared: Any = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.conn_id = conn_id
        self.subscription_id = subscription_id
        self.prepared = prepared  # prepare's XCom (its task's .output): the record, for build
        self._sensitive: dict[str, str] | None = None

    def _auth(self) -> tuple[dict[str, Any], dict[str, str]]:
        from bakery.hooks.azure import AzureImageHook

        return AzureImageHook(self.conn_id, subscription_id=self.subscription_id).packer_variables()

    def get_sensitive_variables(self, context: Any) -> dict[str, str]:
        if self._sensitive is None:
            plain, self._sensitive = self._auth()
            self.variables = {**_as_mapping(self.variables, "variables"), **plain}
        return dict(self._sensitive)

    def execute(self, context: Any) -> dict[str, Any]:
        from bakery import bake

        check_template_dir(self.template_dir, self.task_id)  # the folder prepare rendered
        self._sensitive = None  # read the connection on every try (it may have been fixed meanwhile)
        if self.command != "build":
            return super().execute(context)
        prepared = _required(self.prepared, "prepared", self.task_id)
        if "record" not in prepared:
            raise RuntimeError(f"{self.task_id}: prepare's XCom has no bake record")
        record = prepared["record"]
        listing = (record.get("packages") or {}).get("list")
        if listing:  # a list left by an earlier try must never pass for this build's
            Path(listing).unlink(missing_ok=True)
        result = super().execute(context)
        _, packages = bake.capture_manifest(record, self.log.info)
        return {**result, "packages": packages}


def _record(data: Any, field: str, task_id: str) -> BakeRecord:
    """The bake record from an upstream XCom (prepare's: under ``record``; the smoke steps': itself)."""
    data = _required(data, field, task_id)
    return BakeRecord.from_dict(data.get("record", data))


class AzureSmokeSetupOperator(BaseOperator):
    """Creates the smoke-test VM (NSG, IP, NIC, VM) from the new managed image; an Airflow setup task.

    On failure it deletes what it created before failing; a retry first deletes leftovers.
    """

    template_fields = ("prepared", "built")

    def __init__(self, *, image: str, prepared: Any, built: Any, **kwargs):
        super().__init__(**kwargs)
        self.image = image
        self.prepared = prepared  # prepare's XCom
        self.built = built  # build's XCom

    def execute(self, context) -> dict[str, Any]:
        from bakery import bake

        spec = _spec(self.image)
        target = make_target(spec)
        try:
            rec = bake.record_with_build(_required(self.prepared, "prepared", self.task_id)["record"],
                                         _required(self.built, "built", self.task_id), target)
            return bake.smoke_setup(rec, smoke_check_of(spec, context["params"]), self.log.info, target).to_dict()
        finally:
            close_target(target)


class AzureSmokeCheckOperator(BaseOperator):
    """Polls the smoke-test VM's HTTP answer; fails the task (so nothing is published) if it is wrong.

    Pushes its verdict as XCom ``smoke_verdict`` (also when it fails) for the teardown. A failed
    check is a verdict on the image: it fails at once, without the task's retries.
    """

    template_fields = ("setup",)

    def __init__(self, *, image: str, setup: Any, **kwargs):
        super().__init__(**kwargs)
        self.image = image
        self.setup = setup  # smoke_setup's XCom (the record with the VM's address)

    def execute(self, context) -> dict[str, Any]:
        from bakery import bake

        spec = _spec(self.image)
        rec = _record(self.setup, "setup", self.task_id)
        target = make_target(spec)
        try:
            rec = bake.smoke_check(rec, smoke_check_of(spec, context["params"]), self.log.info, target)
        finally:
            close_target(target)
        passed = bool(rec.smoke and rec.smoke["passed"])
        context["ti"].xcom_push(key=VERDICT_KEY, value="passed" if passed else "failed")
        if not passed:
            raise verdict_failed(rec)
        return rec.to_dict()


class AzureSmokeTeardownOperator(BaseOperator):
    """Deletes every smoke-test resource of this bake (an Airflow teardown task: it runs whatever
    happened to the check). When the check failed, it also deletes the bake's managed image, which
    will never be published (unless the catalogue sets ``azure.keep_failed_image``)."""

    template_fields = ("setup",)

    def __init__(self, *, image: str, setup: Any, check_task_id: str = "smoke_test", **kwargs):
        super().__init__(**kwargs)
        self.image = image
        self.setup = setup  # smoke_setup's XCom (a teardown runs only when its setup succeeded)
        self.check_task_id = check_task_id

    def execute(self, context) -> list[str]:
        from bakery import bake

        spec = _spec(self.image)
        rec = _record(self.setup, "setup", self.task_id)
        # pulled, not an XComArg: the check may not have run (its verdict is then absent, not an error)
        verdict = context["ti"].xcom_pull(task_ids=self.check_task_id, key=VERDICT_KEY)
        delete_image = verdict == "failed" and not spec.azure.keep_failed_image
        if delete_image:
            self.log.info("the smoke test failed: the managed image of %s %s goes too", rec.image, rec.version)
        target = make_target(spec)
        try:
            return bake.smoke_teardown(rec, self.log.info, target, delete_image=delete_image)
        finally:
            close_target(target)
