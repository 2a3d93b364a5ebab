"""Thin Airflow adapters for the bake steps: context in, plain call to bakery.bake, small XCom out."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.providers.standard.operators.branch import BranchMixIn
from airflow.sdk import BaseOperator

from bakery.catalogue import get_image
from bakery.operators.assets import emit_published
from bakery.operators.links import BUILD_LINKS, PUBLISH_LINKS
from bakery.operators.packer import PackerOperator, _as_mapping
from bakery.record import BakeRecord

if TYPE_CHECKING:
    from bakery.targets.base import SmokeCheck


def _spec(image: str):
    return get_image(image)  # an image no longer in the catalogue: an error naming the ones that are


def make_target(spec):
    """The image's target, ready to use: for Azure with SDK clients from its connection (built on
    first use, from ``AzureImageHook``; nothing is resolved at DAG parse time)."""
    from bakery import bake

    if spec.target == "azure":
        from bakery.hooks.azure import AzureImageHook

        hook = AzureImageHook(spec.azure.conn_id, subscription_id=spec.azure.subscription_id)
        return bake.get_target("azure", spec, clients=hook.clients)
    return bake.get_target(spec.target, spec)


def triggered_by(dag_run) -> str:
    """Who started the run: the user who triggered it, else ``scheduler`` (scheduled and asset runs)."""
    return getattr(dag_run, "triggering_user_name", None) or "scheduler"


def close_target(target) -> None:
    close = getattr(target, "close", None)
    if close is not None:
        close()


class UnknownConfKeys(ValueError):
    """A run's conf names keys that are not Params of its DAG (the message lists the valid ones)."""

    def __init__(self, dag_id: str, unknown: list[str], params: Any) -> None:
        import difflib

        names = sorted(params.keys())
        hints = [f"{m[0]!r} for {k!r}" for k in unknown if (m := difflib.get_close_matches(k, names, n=1))]
        valid = "; ".join(f"{n} ({_describe_param(params, n)})" for n in names)
        super().__init__(
            f"the run's conf has {'a key' if len(unknown) == 1 else 'keys'} that {'is' if len(unknown) == 1 else 'are'} "
            f"not {'a Param' if len(unknown) == 1 else 'Params'} of {dag_id}: {', '.join(map(repr, unknown))}"
            + (f" (did you mean {', '.join(hints)}?)" if hints else "")
            + f". Nothing was baked: trigger the run again with the Params' own names. Valid Params: {valid}")


def _describe_param(params: Any, name: str) -> str:
    """``type, default X`` of one Param (``params`` is the DAG's ParamsDict)."""
    param = params.get_param(name) if hasattr(params, "get_param") else None
    schema = getattr(param, "schema", None) or {}
    kind = schema.get("type") or ("one of " + "/".join(map(str, schema["enum"])) if "enum" in schema else "any")
    return f"{kind}, default {getattr(param, 'value', params.get(name))!r}"


class PrepareBakeOperator(BaseOperator):
    """Names the version from the run, decides where its packages come from, renders and digests
    the template, readies the base image.

    First of all it refuses a run whose conf has a key that is none of the DAG's Params (a
    misspelled ``prune_kep`` would otherwise be ignored silently and the run bake with the default).
    """

    template_fields = ("accelerator", "allow_current_inputs")

    def __init__(self, *, image: str, accelerator: str = "{{ params.accelerator }}",
                 allow_current_inputs: Any = "{{ params.allow_current_inputs }}", **kwargs):
        super().__init__(**kwargs)
        self.image = image
        self.accelerator = accelerator
        self.allow_current_inputs = allow_current_inputs

    def execute(self, context) -> dict[str, Any]:
        dag_run = context["dag_run"]
        self.check_conf(getattr(dag_run, "conf", None))
        from airflow.sdk.exceptions import AirflowFailException

        from bakery import bake
        from bakery.packages.inputs import InputsError

        spec = _spec(self.image)
        target = make_target(spec)
        try:
            prepared = bake.prepare(
                spec,
                run_type=str(getattr(dag_run.run_type, "value", dag_run.run_type)),
                logical_date=dag_run.logical_date,
                run_after=dag_run.run_after,
                dag_run_id=dag_run.run_id,
                accelerator=self.accelerator,
                allow_current_inputs=_flag(self.allow_current_inputs),
                log=self.log.info,
                target=target,
                triggered_by=triggered_by(dag_run),
            )
            # each key is an XCom of its own too (multiple_outputs): the Packer tasks take these
            return {**prepared, "manifest_path": prepared["packer_variables"].get("manifest_path")}
        except InputsError as exc:  # a retry cannot change what the pool and the archives hold
            raise AirflowFailException(str(exc)) from None
        finally:
            close_target(target)

    def check_conf(self, conf: Any) -> None:
        """Every key of the run's conf is one of the DAG's Params."""
        if not conf or not self.has_dag():
            return
        params = self.dag.params
        unknown = sorted(str(k) for k in conf if k not in params)
        if unknown:
            raise UnknownConfKeys(self.dag.dag_id, unknown, params)


class CheckChangesOperator(BaseOperator, BranchMixIn):
    """Skips build, smoke test and publish when nothing changed since the latest version
    (``bakery.bake.check_changes``); prune and the rest of the run go on. XCom: the decision."""

    inherits_from_skipmixin = True
    template_fields = ("prepared", "force_rebuild", "replace_existing")

    def __init__(self, *, image: str, prepared: Any, build_branch: str = "validate",
                 always: tuple[str, ...] = ("prune",), force_rebuild: Any = "{{ params.force_rebuild }}",
                 replace_existing: Any = "{{ params.replace_existing }}", **kwargs):
        super().__init__(**kwargs)
        self.image = image
        self.prepared = prepared  # prepare's XCom (its task's .output)
        self.build_branch = build_branch
        self.always = always
        self.force_rebuild = force_rebuild
        self.replace_existing = replace_existing

    def execute(self, context) -> dict[str, Any]:
        from bakery import bake

        prepared = _required(self.prepared, "prepared", self.task_id)
        spec = _spec(self.image)
        target = make_target(spec)
        try:
            decision = bake.check_changes(spec, prepared, force_rebuild=_flag(self.force_rebuild),
                                          replace_existing=_flag(self.replace_existing), log=self.log.info,
                                          target=target)
        finally:
            close_target(target)
        # pushed first: in Airflow 3 a branch that skips tasks ends in do_branch (it raises
        # DownstreamTasksSkipped), so a returned decision would never reach XCom when the run skips
        context["ti"].xcom_push(key="return_value", value=decision)
        self.do_branch(context, [self.build_branch, *self.always] if decision["build"] else list(self.always))
        return decision


class QemuPackerOperator(PackerOperator):
    """PackerOperator for the local qemu templates: adds an ephemeral SSH key pair for this run,
    and for ``build`` the bakery's package server the guest installs from.

    The key pair lives in a private temporary folder for the duration of the Packer command
    only; the guest gets the public key through QEMU fw_cfg (see include/packer/debian12-nginx).
    The package server (``bakery.packages.server``) runs on loopback for the length of the build:
    it proxies the image's mirrors (keeping every package in the pool) or, to rebuild a version,
    serves exactly that version's packages from the pool. After the build the guest's package
    list becomes the version's manifest and its pending pool index.
    """

    operator_extra_links = BUILD_LINKS
    template_fields = (*PackerOperator.template_fields, "prepared")

    def __init__(self, *, prepared: Any = None, **kwargs):
        super().__init__(**kwargs)
        self.prepared = prepared  # prepare's XCom (its task's .output): the record, for build

    def execute(self, context) -> dict[str, Any]:
        from bakery.preflight import check_base_image
        from bakery.sshkey import ephemeral_keypair

        check_template_dir(self.template_dir, self.task_id)
        check_base_image(_as_mapping(self.variables, "variables"))  # before any key or Packer run
        with ephemeral_keypair(f"bakery-{self.task_id}") as (private_key, public_key):
            self.variables = {
                **_as_mapping(self.variables, "variables"),
                "ssh_private_key_file": str(private_key),
                "ssh_public_key_file": str(public_key),
            }
            if self.command != "build":
                return super().execute(context)
            prepared = _required(self.prepared, "prepared", self.task_id)
            return self._build(context, BakeRecord.from_dict(prepared["record"]))

    def _build(self, context, rec: BakeRecord) -> dict[str, Any]:
        from bakery import bake
        from bakery.packages.inputs import Inputs, b64, guest_apt_config
        from bakery.ssh_relay import SshRelay

        spec = _spec(rec.image)
        inputs = Inputs.from_dict(rec.inputs or {"kind": "current", "ref": "?"})
        with bake.package_server(spec, inputs, log=self.log.info) as server, SshRelay() as relay:
            if server is not None:
                sources, conf = guest_apt_config(inputs, spec.packages.mirrors, server.guest_url())
                self.variables = {**self.variables, "apt_sources_b64": b64(sources), "apt_conf_b64": b64(conf)}
                self.log.info("the build installs packages from %s through the bakery's package server on %s",
                              inputs.label, server.url())
            # Packer reaches the VM's sshd through the relay, which connects only once sshd answers
            self.variables = {**self.variables, **relay.packer_variables()}
            result = super().execute(context)
            if relay.connected_after:
                self.log.info("SSH relay: Packer's first connection reached sshd after %.1fs",
                              relay.connected_after[0])
        if server is not None:
            self.log.info(server.summary())
        manifest, packages = bake.capture_manifest(rec, self.log.info)
        if server is not None:
            packages["pool_index"] = str(bake.write_pending_index(
                rec, manifest, server.fetched.values(), install=str(spec.variables.get("packages", "")),
                base_image=self.variables.get("base_image_path"), log=self.log.info))
            bake.check_exact_rebuild(rec, manifest, log=self.log.info)
        return {**result, "packages": packages}


def check_template_dir(template_dir: Any, task_id: str) -> None:
    """The Packer folder prepare rendered into the run's work folder is still there (publish removes
    the work folder, the janitor a stale one): otherwise say how to get it back."""
    from pathlib import Path

    from bakery.preflight import PreflightError

    if template_dir and not Path(str(template_dir)).exists():
        raise PreflightError(
            f"the Packer folder {template_dir} of this run is gone ({task_id} runs Packer on the folder the "
            "run's prepare task rendered into its work folder, which publish removes, and the janitor once it "
            "is stale): clear this run's prepare task and the tasks after it, so that prepare renders it again")


def smoke_check_of(spec, params) -> SmokeCheck:
    """The catalogue's HTTP check with the run's timeout (Param smoke_timeout_seconds)."""
    from bakery.targets.base import SmokeCheck

    timeout = params.get("smoke_timeout_seconds") if params else None
    return SmokeCheck(**{**spec.smoke_test.__dict__,
                         "timeout_seconds": int(timeout if timeout is not None else spec.smoke_test.timeout_seconds)})


class SmokeTestOperator(BaseOperator):
    """Boots the new image and checks its HTTP answer; fails the task (publishing nothing) if bad.
    A failed check is a verdict on the image: it fails at once, without the task's retries (those
    are for the errors around it, such as a VM that could not start)."""

    template_fields = ("prepared", "built")

    def __init__(self, *, image: str, prepared: Any, built: Any, **kwargs):
        super().__init__(**kwargs)
        self.image = image
        self.prepared = prepared  # prepare's XCom
        self.built = built  # build's XCom

    def execute(self, context) -> dict[str, Any]:
        from bakery import bake

        prepared = _required(self.prepared, "prepared", self.task_id)
        built = _required(self.built, "built", self.task_id)
        spec = _spec(self.image)
        check = smoke_check_of(spec, context["params"])
        target = make_target(spec)
        try:
            rec = bake.record_with_build(prepared["record"], built, target)
            rec = bake.smoke_test(rec, check, self.log.info, target)
        finally:
            close_target(target)
        if not rec.smoke["passed"]:
            raise verdict_failed(rec)
        return rec.to_dict()


def verdict_failed(rec: BakeRecord) -> Exception:
    """The smoke test's failed verdict: fails the task without retries (the image will not change)."""
    from airflow.sdk.exceptions import AirflowFailException

    return AirflowFailException(
        f"smoke test of {rec.image} {rec.version} failed after {rec.smoke['seconds']}s: {rec.smoke['detail']}")


def _required(value: Any, field: str, task_id: str) -> Any:
    """A template field fed by an upstream task's XCom (XComArg): it must have arrived."""
    if not value:
        raise RuntimeError(f"{task_id}: no {field} (the upstream task's XCom is empty: did it run?)")
    return value


def _flag(value: Any) -> bool:
    return value if isinstance(value, bool) else str(value).strip().lower() == "true"


def published(task: BaseOperator, context, rec: BakeRecord) -> dict[str, Any]:
    """The XCom of a published record; the image's asset event (the task's outlet) carries it. Airflow
    sends ``context["outlet_events"]`` with the task's success only (the task SDK's
    ``task_runner._handle_current_task_success``: ``SucceedTask(outlet_events=...)``); a deferral sends
    none (``DeferTask``), and a resumed task runs ``execute_complete`` with the context whose events its
    success sends."""
    emit_published(task, context, rec)
    return rec.to_dict()


class PublishOperator(BaseOperator):
    """Publishes the smoke-tested image as a gallery version (atomic, idempotent).

    Locally it publishes in the worker. On Azure it sends the version's PUT (or adopts this run's
    version, as a retry does) and ends: the replication is waited for by the next task,
    ``ReplicationWaitOperator``, which starts in the triggerer and holds no worker slot meanwhile.

    ``record``: the smoke test's XCom (the bake record). ``replace_existing`` (Azure): replace a
    version of the same number published by another run. XCom: the record (on Azure its
    ``published_id`` is set once the wait has seen the version Succeeded). Locally, with the image's
    Asset among its ``outlets`` (``bakery.operators.assets.image_asset``, as the DAG factory wires it),
    the event it emits on success carries the published version (``bakery.assets.event_extra``); on
    Azure ``wait_replication`` emits it. A publish that fails or is skipped emits none.
    """

    template_fields = ("record", "replace_existing")
    operator_extra_links = PUBLISH_LINKS

    def __init__(self, *, record: Any, replace_existing: Any = False, **kwargs):
        super().__init__(**kwargs)
        self.record = record
        self.replace_existing = replace_existing

    def execute(self, context) -> dict[str, Any]:
        from bakery import bake

        rec = BakeRecord.from_dict(_required(self.record, "record", self.task_id))
        spec = _spec(rec.image)
        target = make_target(spec)
        try:
            if spec.target != "azure":
                return published(self, context, bake.publish(rec, self.log.info, target,
                                                             replace_existing=_flag(self.replace_existing)))
            published_id = target.begin_publish(rec, self.log.info, replace_existing=_flag(self.replace_existing))
        finally:
            close_target(target)
        if published_id is None:
            self.log.info("publish: the version's PUT is sent; wait_replication follows its replication in the "
                          "triggerer (no worker slot held)")
        return rec.to_dict()


class ReplicationWaitOperator(BaseOperator):
    """Azure: waits until the version ``publish`` created has replicated to every target region, then
    finishes the publish (logs the regions, checks the version, logs the package diff, clears the work
    folder); fails saying why when the replication failed or passed the catalogue's
    ``azure.replication.timeout_minutes``.

    It starts in the triggerer (``start_from_trigger``): the scheduler hands its
    ``GalleryReplicationTrigger`` straight to the triggerer, which renders the version from publish's
    XCom, so no worker slot is taken before or while Azure replicates; a worker runs only
    ``execute_complete``, once the wait is over. Run by ``dag.test()`` (``airflow dags test``), which
    runs tasks in-process, ``execute`` defers to the same trigger from the worker instead.

    ``record``: publish's XCom (the bake record).
    """

    template_fields = ("record", "version")
    operator_extra_links = PUBLISH_LINKS

    def __init__(self, *, image: str, record: Any, azure: Any, **kwargs):
        from airflow.triggers.base import StartTriggerArgs

        super().__init__(**kwargs)
        self.image = image
        self.record = record  # publish's XComArg
        # a trigger's arguments are stored as JSON, so the version travels as the template that reads it
        # from the same XCom as ``record`` (made from the XComArg: no task id is written by hand)
        # (map_indexes=-1: one XCom by GetXCom, which the triggerer's supervisor serves; without it the pull
        # asks for a sequence slice, which it does not)
        version = f"{{{{ ti.xcom_pull(task_ids={record.operator.task_id!r}, map_indexes=-1)['version'] }}}}"
        self.version = version
        self.timeout_seconds = float(azure.replication_timeout_minutes) * 60
        # the trigger's arguments name the connection, never a credential (the trigger table stores them)
        self.trigger_kwargs = {
            "conn_id": azure.conn_id, "subscription_id": azure.subscription_id,
            "gallery": [azure.gallery.resource_group, azure.gallery.name, azure.gallery.image_definition],
            "deadline": None, "timeout": self.timeout_seconds, "poll_interval": float(azure.replication_poll_seconds),
        }
        self.start_from_trigger = True
        self.start_trigger_args = StartTriggerArgs(
            trigger_cls="bakery.triggers.replication.GalleryReplicationTrigger",
            trigger_kwargs={**self.trigger_kwargs, "version": version},  # version rendered in the triggerer
            next_method="execute_complete", next_kwargs=None,
            # Airflow's own timeout only backs the trigger's deadline up (a triggerer that is down)
            timeout=timedelta(seconds=self.timeout_seconds + 600))

    def execute(self, context) -> None:
        import time

        from bakery.triggers.replication import GalleryReplicationTrigger

        rec = BakeRecord.from_dict(_required(self.record, "record", self.task_id))
        self.log.info("wait_replication: deferring while Azure replicates %s (deadline %.0fs)", rec.version,
                      self.timeout_seconds)
        trigger = GalleryReplicationTrigger(**{**self.trigger_kwargs, "version": rec.version,
                                               "deadline": time.time() + self.timeout_seconds})
        self.defer(trigger=trigger, method_name="execute_complete",
                   timeout=timedelta(seconds=self.timeout_seconds + 600))

    def execute_complete(self, context, event: dict[str, Any]) -> dict[str, Any]:
        from bakery import bake
        from bakery.targets.azure import AzureTargetError

        rec = BakeRecord.from_dict(_required(self.record, "record", self.task_id))
        self.log.info("publish: the replication wait of %s ended: %s after %ss", rec.version, event.get("status"),
                      event.get("seconds", "?"))
        for r in event.get("regions") or []:
            self.log.info("publish: %s: %s %s%%%s", r["region"], r["state"], r["progress"],
                          f" ({r['details']})" if r.get("details") else "")
        if event.get("version") not in (None, rec.version):
            raise AzureTargetError(f"publish: the trigger followed {event.get('version')}, not {rec.version}")
        if event.get("status") != "succeeded":
            raise AzureTargetError(f"publish: {event.get('message') or event}")
        target = make_target(_spec(rec.image))
        try:
            published_id = target.finish_publish(rec, self.log.info, event)
        finally:
            close_target(target)
        return published(self, context, bake.done_publishing(rec, published_id, self.log.info))


class PruneOperator(BaseOperator):
    """Keeps the N newest versions (N from the catalogue or the run's Params). Runs also when
    check_changes skipped the bake (retention goes on); the version this run published, if any,
    is never deleted."""

    template_fields = ("published", "keep", "dry_run")

    def __init__(self, *, image: str, published: Any = None, keep: Any = "{{ params.prune_keep }}",
                 dry_run: Any = "{{ params.prune_dry_run }}", **kwargs):
        kwargs.setdefault("trigger_rule", "none_failed_min_one_success")
        super().__init__(**kwargs)
        self.image = image
        self.published = published  # publish's XCom (None when check_changes skipped the bake)
        self.keep = keep
        self.dry_run = dry_run

    def execute(self, context) -> list[str]:
        from bakery import bake

        published = self.published
        protect = {published["version"]} if published else set()
        spec = _spec(self.image)
        target = make_target(spec)
        try:
            return bake.prune(spec, int(self.keep), _flag(self.dry_run), self.log.info, target, protect=protect)
        finally:
            close_target(target)
