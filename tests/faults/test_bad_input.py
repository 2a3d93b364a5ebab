"""Issue #4, bad input: every mistake a user can make, provoked for real, and the EXACT message they see.

One table. Each row says what the user got wrong, how it is provoked here, and the fragments the
message must contain (what is wrong, where, how to fix it). The provocations go through what the
user goes through: the DAG file parsed by Airflow's DagBag (catalogue errors are import errors),
Airflow's own Param validation (the trigger form, `airflow dags test --conf`), the real operators
(`PrepareBakeOperator`, `QemuPackerOperator`, `AzurePackerOperator`) with the real Packer, the real
Azure hook against the ARM emulator, the bakery's CLI.

"Before any build starts": a recording ``packer`` shim is first on PATH for every row, so each row
also says whether Packer may have run at all (only the rows whose check IS ``packer validate``),
and the local target's own preparation (the base image build) raises if a row ever reaches it.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import pytest
import recording_packer
import yaml
from bakery.templates import render
from faultkit import REPO

CATALOGUE = REPO / "include" / "catalogue.yaml"
REAL_PACKER = recording_packer.REAL_PACKER
DATE = datetime(2026, 11, 20, 2, 0, tzinfo=UTC)
RUN_ID = "scheduled__2026-11-20T02:00:00+00:00"

pytestmark = pytest.mark.needs_tools("packer")


class ReachedTheBuild(AssertionError):
    """The bad input got past every check, to the local target's preparation (the base image build)."""


class Ctx:
    """What a row needs: a private folder, monkeypatch, a recording packer, the ARM emulator on demand."""

    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stack: contextlib.ExitStack) -> None:
        self.tmp = tmp_path
        self.mp = monkeypatch
        self.stack = stack
        self._world = None
        self.values: dict[str, str] = {"repo": str(REPO), "tmp": str(tmp_path)}
        self.packer_log = tmp_path / "packer-invocations.jsonl"
        shim_dir = recording_packer.install(tmp_path / "shim", self.packer_log)
        monkeypatch.setenv("PATH", f"{shim_dir}{os.pathsep}{os.environ['PATH']}")
        monkeypatch.setenv("BAKERY_HOME", str(tmp_path / "bakery"))
        for name in list(os.environ):
            if name.startswith(("AIRFLOW_CONN_", "PKR_VAR_")) or name == "BAKERY_CATALOGUE":
                monkeypatch.delenv(name)

        def reached(*args, **kwargs):
            raise ReachedTheBuild("LocalTarget.prepare (the base image build) was reached")

        monkeypatch.setattr("bakery.targets.local.LocalTarget.prepare", reached)

    # --- what ran ------------------------------------------------------------------------------------
    def packer_commands(self) -> list[str]:
        return [inv["command"] for inv in recording_packer.invocations(self.packer_log)]

    # --- the catalogue -------------------------------------------------------------------------------
    def catalogue(self, mutate: Callable[[dict], None], name: str = "catalogue.yaml") -> Path:
        """A copy of the shipped catalogue changed by ``mutate``, in force ($BAKERY_CATALOGUE)."""
        data = yaml.safe_load(CATALOGUE.read_text())
        mutate(data)
        path = self.tmp / name
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        self.mp.setenv("BAKERY_CATALOGUE", str(path))
        self.values["catalogue"] = str(path)
        return path

    # --- Azure ----------------------------------------------------------------------------------------
    @property
    def world(self):
        if self._world is None:
            from tests.azure_emulator.dagrun import emulated_world

            self._world = self.stack.enter_context(emulated_world())
            self.values["endpoint"] = self._world.emu.endpoint.rstrip("/")
        return self._world


@pytest.fixture
def ctx(tmp_path, monkeypatch):
    with contextlib.ExitStack() as stack:
        yield Ctx(tmp_path, monkeypatch, stack)


def error_of(call: Callable[[], object], *types: type[BaseException]) -> str:
    """The message of the error ``call`` raises (of one of ``types``), as the task log shows it."""
    try:
        call()
    except types as exc:
        return f"{type(exc).__name__}: {exc}"
    raise AssertionError(f"no {', '.join(t.__name__ for t in types)} was raised")


# --- the ways in -----------------------------------------------------------------------------------
def dag_import_error(ctx: Ctx) -> str:
    """What Airflow shows for the DAG file (an import error) with the catalogue in force."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags" / "image_bakery.py"))
    assert not bag.dags, f"the DAG file parsed in spite of the bad catalogue: {sorted(bag.dags)}"
    (err,) = bag.import_errors.values()
    return err


def prepare_task(ctx: Ctx, image: str) -> str:
    """The prepare task (the real operator, the real hook) of ``image``: the error it fails with."""
    from bakery.operators.bake import PrepareBakeOperator

    op = PrepareBakeOperator(task_id="prepare", image=image, accelerator="auto")
    context = {"dag_run": SimpleNamespace(run_type="scheduled", logical_date=DATE, run_after=DATE, run_id=RUN_ID)}
    return error_of(lambda: op.execute(context), Exception)


def local_variables(ctx: Ctx, base: Path | None = None) -> dict:
    """Packer variables as the local prepare gives them (a stand-in base image file: validate only)."""
    if base is None:
        base = ctx.tmp / "base.qcow2"
        base.write_bytes(b"not really a disk: packer validate does not read it")
    digest = hashlib.sha256(base.read_bytes()).hexdigest() if base.exists() else "0" * 64
    work = ctx.tmp / "work"
    return {"base_image_path": str(base), "base_image_checksum": digest, "output_directory": str(work / "output"),
            "vm_name": "debian12-nginx-2026.1120.200000.qcow2", "accelerator": "tcg",
            "manifest_path": str(work / "manifest.json"), "image_version": "2026.1120.200000",
            "package_list_path": str(work / "packages.tsv")}


def rendered(ctx: Ctx, family: str) -> Path:
    """The family's Packer folder as prepare renders it (bakery.templates), in the row's folder."""
    return render(family, ctx.tmp / "templates" / family)


def broken_template(ctx: Ctx, old: str, new: str) -> Path:
    folder = rendered(ctx, "debian12-nginx")
    hcl = folder / "debian12-nginx.pkr.hcl"
    text = hcl.read_text()
    assert text.count(old) == 1
    hcl.write_text(text.replace(old, new))
    ctx.values["hcl"] = str(hcl)
    ctx.values["line"] = str(text[:text.index(old)].count("\n") + 1)  # the broken line's number in Packer's message
    return folder


def qemu_validate(ctx: Ctx, template: Path, variables: dict) -> str:
    from airflow.sdk.exceptions import AirflowFailException
    from bakery.operators.bake import QemuPackerOperator
    from bakery.preflight import PreflightError

    op = QemuPackerOperator(task_id="validate", command="validate", template_dir=str(template), variables=variables)
    return error_of(lambda: op.execute({}), AirflowFailException, PreflightError)


# --- the rows --------------------------------------------------------------------------------------
def syntax_error(ctx: Ctx) -> str:
    folder = broken_template(ctx, '  format           = "qcow2"\n', '  format           = = "qcow2"\n')
    return qemu_validate(ctx, folder, local_variables(ctx))


def undeclared_variable(ctx: Ctx) -> str:
    folder = broken_template(ctx, "memory           = var.memory", "memory           = var.memroy")
    return qemu_validate(ctx, folder, local_variables(ctx))


def catalogue_variable_not_in_template(ctx: Ctx) -> str:
    ctx.catalogue(lambda d: d["images"]["debian12-nginx"].update(variables={"disk_sise": "20G"}))
    return prepare_task(ctx, "debian12-nginx")


def base_image_vanished(ctx: Ctx) -> str:
    base = ctx.tmp / "base" / "debian12-0123456789abcdef.qcow2"
    base.parent.mkdir()
    base.write_bytes(b"x")
    variables = local_variables(ctx, base)
    base.unlink()  # gone between prepare and validate/build (a rebuild pruned the old recipe, or a person)
    ctx.values["base"] = str(base)
    return qemu_validate(ctx, rendered(ctx, "debian12-nginx"), variables)


def catalogue_error(mutate: Callable[[dict], None]) -> Callable[[Ctx], str]:
    def provoke(ctx: Ctx) -> str:
        ctx.catalogue(mutate)
        return dag_import_error(ctx)

    return provoke


def _set(image: str, *path_and_value):
    *path, value = path_and_value

    def mutate(data: dict) -> None:
        node = data["images"][image]
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return mutate


def _unalias(data: dict) -> None:
    """yaml anchors: rhel9-nginx and ubuntu2404-nginx share dicts; copy before changing one."""
    for entry in data["images"].values():
        for key in list(entry):
            entry[key] = copy.deepcopy(entry[key])


def _azure(image: str, *path_and_value):
    inner = _set(image, "azure", *path_and_value)

    def mutate(data: dict) -> None:
        _unalias(data)
        inner(data)

    return mutate


def param_error(dag_id: str, conf: dict) -> Callable[[Ctx], str]:
    """Airflow's own validation of the trigger form's conf against the DAG's Params, on the serialized
    DAG as the API server has it: what `create_dagrun` does (UI form, REST API, `airflow dags trigger`)
    before a run exists."""

    def provoke(ctx: Ctx) -> str:
        from airflow.dag_processing.dagbag import DagBag
        from airflow.sdk.exceptions import ParamValidationError
        from airflow.serialization.serialized_objects import DagSerialization

        bag = DagBag(dag_folder=str(REPO / "dags" / "image_bakery.py"))
        dag = DagSerialization.from_dict(DagSerialization.to_dict(bag.dags[dag_id]))
        return error_of(lambda: dag.params.deep_merge(conf).validate(), ParamValidationError)

    return provoke


def unknown_conf_key(dag_id: str, conf: dict) -> Callable[[Ctx], str]:
    """The prepare task of the DAG as Airflow parses it, in a run triggered with ``conf``: Airflow's Param
    validation lets a key that is no Param through (and merges it into the run's params); prepare refuses it."""

    def provoke(ctx: Ctx) -> str:
        from airflow.dag_processing.dagbag import DagBag
        from airflow.serialization.serialized_objects import DagSerialization

        bag = DagBag(dag_folder=str(REPO / "dags" / "image_bakery.py"))
        dag = DagSerialization.from_dict(DagSerialization.to_dict(bag.dags[dag_id]))
        dag.params.deep_merge(conf).validate()  # Airflow itself accepts it
        op = bag.dags[dag_id].get_task("prepare")
        run = SimpleNamespace(run_type="manual", logical_date=None, run_after=DATE, run_id="manual__typo", conf=conf)
        message = error_of(lambda: op.execute({"dag_run": run}), Exception)
        assert not (ctx.tmp / "bakery").exists(), "prepare went on: the bakery home was created"
        return message

    return provoke


def airflow_cli(*args: str) -> Callable[[Ctx], str]:
    def provoke(ctx: Ctx) -> str:
        env = {**os.environ, "PYTHONPATH": f"{REPO / 'plugins'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
        proc = subprocess.run(["airflow", *args], capture_output=True, text=True, env=env, timeout=300, check=False)
        assert proc.returncode != 0, proc.stdout[-2000:]
        assert not (ctx.tmp / "bakery").exists(), "a task ran: the bakery home was created"
        return proc.stdout + proc.stderr

    return provoke


def cli_show_unknown(ctx: Ctx) -> str:
    env = {**os.environ, "PYTHONPATH": str(REPO / "plugins")}
    proc = subprocess.run([sys.executable, "-m", "bakery.cli", "show", "debian12-ngnix"], capture_output=True,
                          text=True, env=env, timeout=120, check=False)
    assert proc.returncode == 2 and proc.stdout == ""
    ctx.values["catalogue"] = str(CATALOGUE)
    return proc.stderr


def operator_of_removed_image(ctx: Ctx) -> str:
    ctx.catalogue(lambda d: d["images"].pop("debian12-nginx"))
    return prepare_task(ctx, "debian12-nginx")


def version_packer_rejects(ctx: Ctx) -> str:
    """The Azure validate task (the real AzurePackerOperator, real Packer, the real template)."""
    from airflow.sdk.exceptions import AirflowFailException
    from bakery.operators.azure import AzurePackerOperator

    ctx.mp.setenv("AIRFLOW_CONN_AZURE_VALIDATE", json.dumps({
        "conn_type": "azure", "login": "00000000-0000-0000-0000-0000000000c3", "password": "not-used-by-validate",
        "extra": {"tenantId": "00000000-0000-0000-0000-0000000000b2",
                  "subscriptionId": "00000000-0000-0000-0000-0000000000a1"}}))
    variables = {"image_name": "rhel9-nginx", "image_version": "2026.1120.200000-rc1",
                 "dag_run_id": RUN_ID, "location": "westeurope", "vm_size": "Standard_D2s_v5",
                 "build_resource_group_name": "", "managed_image_resource_group_name": "rg-bakery-images",
                 "manifest_path": str(ctx.tmp / "manifest.json"), "package_list_path": str(ctx.tmp / "packages.tsv")}
    op = AzurePackerOperator(task_id="validate", command="validate", conn_id="azure_validate",
                             template_dir=str(rendered(ctx, "rhel9-nginx-azure")), variables=variables)
    return error_of(lambda: op.execute({}), AirflowFailException)


def version_azure_rejects(ctx: Ctx) -> str:
    """The Azure target refuses a version Azure Compute Gallery would, before any Azure call."""
    from bakery.catalogue import load_catalogue
    from bakery.record import BakeRecord
    from bakery.targets.azure import AzureTarget
    from bakery.versioning import VersionError

    spec = load_catalogue()["rhel9-nginx"]
    rec = BakeRecord(image="rhel9-nginx", version="2026.0120.200000", target="azure", template_digest="sha256:x")

    def no_azure():
        raise AssertionError("Azure was called")

    target = AzureTarget(spec, no_azure)
    return error_of(lambda: target.prepare(spec, rec, ctx.tmp, log=print), VersionError)


def missing_connection(ctx: Ctx) -> str:
    return prepare_task(ctx, "rhel9-nginx")  # the shipped catalogue: conn_id azure_bakery, not defined here


WRONG_SECRET = "wrong-secret-" + hashlib.sha256(os.urandom(16)).hexdigest()[:24]


def wrong_secret(ctx: Ctx) -> str:
    from tests.azure_emulator.dagrun import CONN_ID, IMAGE, catalogue_entry

    world = ctx.world
    tokens, requests = len(world.emu.identity.token_requests), len(world.emu.log)
    ctx.catalogue(lambda d: d["images"].__setitem__(IMAGE, catalogue_entry(world)))
    conn = world.connection()
    conn["password"] = WRONG_SECRET
    ctx.mp.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", json.dumps(conn))
    message = prepare_task(ctx, IMAGE)
    assert {r.status for r in world.emu.identity.token_requests[tokens:]} == {401}  # Entra ID refused it
    assert [r for r in world.emu.log[requests:] if r.path.startswith("/subscriptions/")] == []  # no ARM call got in
    assert world.client_secret not in message
    ctx.values["client_id"] = world.client_id
    return message


def tools_path(ctx: Ctx, *tools: str) -> None:
    """PATH = one folder with only ``tools`` (linked to the real ones)."""
    folder = ctx.tmp / "bin"
    folder.mkdir()
    for tool in tools:
        real = REAL_PACKER if tool == "packer" else shutil.which(tool)
        assert real, f"{tool} is needed for this test"
        (folder / tool).symlink_to(real)
    ctx.mp.setenv("PATH", str(folder))
    ctx.values["bin"] = str(folder)


def no_packer(ctx: Ctx) -> str:
    tools_path(ctx, "qemu-system-x86_64", "qemu-img")
    return prepare_task(ctx, "debian12-nginx")


def no_qemu(ctx: Ctx) -> str:
    tools_path(ctx, "packer", "qemu-img")
    return prepare_task(ctx, "debian12-nginx")


@dataclass(frozen=True)
class Bad:
    id: str
    scenario: str
    provoked: str
    provoke: Callable[[Ctx], str]
    expect: tuple[str, ...]  # fragments of the message; {name} = ctx.values[name]
    packer: str = "never"  # never | validate: what Packer may have run (the shim's record)


TABLE = [
    # --- Packer templates: the validate task, Packer's own message -----------------------------------
    Bad("template-syntax-error", "template syntax error",
        "QemuPackerOperator validate of a copy of debian12-nginx with `format = = \"qcow2\"`", syntax_error,
        ("AirflowFailException: packer validate of {tmp}/templates/debian12-nginx failed with exit code 1:",
         "Error: Invalid expression", "on {hcl} line {line}, in source \"qemu\" \"debian12\":",
         "{line}:   format           = = \"qcow2\"",
         "Expected the start of an expression, but found an invalid expression token."), packer="validate"),
    Bad("template-undeclared-variable", "template uses an unknown variable",
        "QemuPackerOperator validate of a copy of debian12-nginx using var.memroy", undeclared_variable,
        ("AirflowFailException: packer validate of {tmp}/templates/debian12-nginx failed with exit code 1:",
         "Error: Unsupported attribute", "on {hcl} line {line}:",
         "This object does not have an attribute named \"memroy\"."), packer="validate"),
    Bad("catalogue-variable-undeclared", "catalogue sets a variable the template does not declare",
        "catalogue variables: {disk_sise: 20G}; the prepare task", catalogue_variable_not_in_template,
        (("PreflightError: {catalogue}: image 'debian12-nginx', field 'variables.disk_sise': the template "
         "debian12-nginx ({repo}/include/packer/debian12-nginx) declares no variable 'disk_sise' (Packer would only "
         "warn and build without it)"), ("fix the name, or declare it in "
         "{repo}/include/packer/shared/qemu/variables.pkr.hcl.j2 (the variables of every qemu family)"),
         ("the template's variables: accelerator, apt_conf_b64, apt_sources_b64, base_image_checksum, base_image_path, cpu_model, cpus, disk_compression, "
         "disk_size,"))),
    # --- the local base image -----------------------------------------------------------------------------
    Bad("base-image-vanished", "local base image file vanished",
        "the base image prepare recorded is deleted, then the validate task runs", base_image_vanished,
        (("PreflightError: the base image {base} does not exist: this run's prepare task found it, it has been "
         "removed since"), "bash {repo}/scripts/build-base-image.sh", ("then clear this run's prepare task and the "
         "tasks after it"))),
    # --- the catalogue: what the Airflow UI shows for the DAG file --------------------------------------
    Bad("catalogue-unknown-target", "catalogue: unknown target", "target: gcp; DagBag of dags/image_bakery.py",
        catalogue_error(_set("debian12-nginx", "target", "gcp")),
        ("invalid image catalogue {catalogue}:", ("image 'debian12-nginx', field 'target': 'gcp' is not one of "
         "'local', 'azure'"))),
    Bad("catalogue-bad-cron", "catalogue: bad cron", "schedule: '0 25 * * *'; DagBag",
        catalogue_error(_set("debian12-nginx", "schedule", "0 25 * * *")),
        ("invalid image catalogue {catalogue}:", ("image 'debian12-nginx', field 'schedule': '0 25 * * *' is not a "
         "valid cron expression: five fields, UTC (minute 0-59, hour 0-23,"), ("e.g. '0 2 * * *' for 02:00 every night; "
         "or one of @once, @continuous, @hourly, @daily,"))),
    Bad("catalogue-bad-preset", "catalogue: bad cron", "schedule: '@nightly' (no such preset); DagBag",
        catalogue_error(_set("debian12-nginx", "schedule", "@nightly")),
        ("image 'debian12-nginx', field 'schedule': '@nightly' is not a valid cron expression",)),
    Bad("catalogue-bad-region", "catalogue: bad region", "azure.location: 'West Europe' (a display name); DagBag",
        catalogue_error(_azure("rhel9-nginx", "location", "West Europe")),
        ("invalid image catalogue {catalogue}:", ("image 'rhel9-nginx', field 'azure.location': 'West Europe' is not "
         "an Azure region's name, without spaces, such as westeurope (the Name column of "
         "`az account list-locations -o table`, not the DisplayName)"))),
    Bad("catalogue-region-not-in-targets", "catalogue: bad region",
        "azure.location swedencentral, not among azure.target_regions; DagBag",
        catalogue_error(_azure("rhel9-nginx", "location", "swedencentral")),
        (("image 'rhel9-nginx', field 'azure.target_regions': must include the location 'swedencentral' (a gallery "
         "image version is always stored in the region of its source image)"),)),
    Bad("catalogue-prune-keep-0", "catalogue: bad version policy", "prune.keep: 0; DagBag",
        catalogue_error(_set("debian12-nginx", "prune", "keep", 0)),
        ("invalid image catalogue {catalogue}:", ("image 'debian12-nginx', field 'prune.keep': 0 is less than the "
         "minimum of 1 (expected how many of the newest versions prune keeps: 1 to 100 (the newest always stays))"))),
    Bad("catalogue-prune-unknown-field", "catalogue: bad version policy", "prune: {kep: 3}; DagBag",
        catalogue_error(_set("debian12-nginx", "prune", {"kep": 3})),
        (("image 'debian12-nginx', field 'prune': unknown field(s) 'kep' (allowed: dry_run, keep); did you mean "
         "'kep' -> 'keep'?"),)),
    Bad("catalogue-open-cidr", "catalogue: smoke-test source 0.0.0.0/0",
        "azure.smoke_test.allowed_source_cidr: 0.0.0.0/0; DagBag",
        catalogue_error(_azure("rhel9-nginx", "smoke_test", "allowed_source_cidr", "0.0.0.0/0")),
        ("invalid image catalogue {catalogue}:", ("image 'rhel9-nginx', field 'azure.smoke_test.allowed_source_cidr': "
         "'0.0.0.0/0' would open the smoke-test VM to the whole Internet; give your runners' range, e.g. "
         "203.0.113.0/24"))),
    # --- the trigger form: Airflow's own Param validation --------------------------------------------------
    Bad("param-prune-keep-0", "trigger Param out of range", "conf {prune_keep: 0} against bake_debian12_nginx's Params",
        param_error("bake_debian12_nginx", {"prune_keep": 0}),
        ("ParamValidationError: Invalid input for param prune_keep: 0 is less than the minimum of 1",)),
    Bad("param-smoke-timeout-too-large", "trigger Param out of range", "conf {smoke_timeout_seconds: 86400}",
        param_error("bake_rhel9_nginx", {"smoke_timeout_seconds": 86400}),
        (("ParamValidationError: Invalid input for param smoke_timeout_seconds: 86400 is greater than the maximum "
         "of 7200"),)),
    Bad("param-cli-conf", "trigger Param out of range",
        "airflow dags test bake_debian12_nginx --conf '{\"prune_keep\": 0}'",
        airflow_cli("dags", "test", "bake_debian12_nginx", "2026-11-20T02:00:00+00:00", "--conf",
                    '{"prune_keep": 0}'),
        ("Invalid input for param prune_keep: 0 is less than the minimum of 1",)),
    Bad("param-wrong-type-int", "trigger Param of the wrong type", "conf {prune_keep: \"three\"}",
        param_error("bake_debian12_nginx", {"prune_keep": "three"}),
        ("ParamValidationError: Invalid input for param prune_keep: 'three' is not of type 'integer'",)),
    Bad("param-wrong-type-bool", "trigger Param of the wrong type", "conf {replace_existing: \"yes\"}",
        param_error("bake_rhel9_nginx", {"replace_existing": "yes"}),
        ("ParamValidationError: Invalid input for param replace_existing: 'yes' is not of type 'boolean'",)),
    Bad("conf-unknown-key", "trigger conf with a key that is no Param",
        "conf {prune_kep: 1} (a typo of prune_keep); the prepare task of bake_debian12_nginx",
        unknown_conf_key("bake_debian12_nginx", {"prune_kep": 1}),
        (("UnknownConfKeys: the run's conf has a key that is not a Param of bake_debian12_nginx: 'prune_kep' (did "
          "you mean 'prune_keep' for 'prune_kep'?). Nothing was baked: trigger the run again with the Params' own "
          "names."), ("Valid Params: accelerator (one of auto/kvm/tcg, default 'auto'); allow_current_inputs "
          "(boolean, default False); force_rebuild (boolean, default False); prune_dry_run (boolean, default "
          "False); prune_keep (integer, default 3); replace_existing (boolean, default False); "
          "smoke_timeout_seconds (integer, default 600)"))),
    # --- names -----------------------------------------------------------------------------------------
    Bad("unknown-image-cli", "unknown image", "python -m bakery.cli show debian12-ngnix", cli_show_unknown,
        (("bakery: no image 'debian12-ngnix' in the catalogue {catalogue} (its images: debian12-nginx, rhel9-nginx, "
         "ubuntu2404-nginx); did you mean 'debian12-nginx'?"),)),
    Bad("unknown-image-dag", "unknown image", "airflow dags test bake_nope (no such catalogue image)",
        airflow_cli("dags", "test", "bake_nope", "2026-11-20T02:00:00+00:00"),
        ("Dag 'bake_nope' could not be found; either it does not exist or it failed to parse.",)),
    Bad("unknown-image-operator", "unknown image",
        "the prepare task of bake_debian12_nginx after the image was removed from the catalogue",
        operator_of_removed_image,
        (("UnknownImageError: no image 'debian12-nginx' in the catalogue {catalogue} (its images: rhel9-nginx, "
         "ubuntu2404-nginx). Check the name, or add the image to the catalogue"),)),
    # --- versions ------------------------------------------------------------------------------------
    Bad("version-packer", "a version Azure would reject (template)",
        "the Azure validate task with image_version 2026.1120.200000-rc1", version_packer_rejects,
        ("AirflowFailException: packer validate of {tmp}/templates/rhel9-nginx-azure failed with exit code 1:",
         "Error: Invalid value for varfile variable",
         "The image_version must be Major.Minor.Patch: three non-negative integers below",
         "2^31 without leading zeros, e.g. 2026.1128.200000.",
         "checked by the validation rule at\n    {tmp}/templates/rhel9-nginx-azure/variables.pkr.hcl:110,3-13"),
        packer="validate"),
    Bad("version-target", "a version Azure would reject (Azure target)",
        "AzureTarget.prepare of a record with version 2026.0120.200000", version_azure_rejects,
        (("VersionError: image version '2026.0120.200000' is not of the form Major.Minor.Patch with plain non-negative "
         "integers (no leading zeros, no suffix), as Azure Compute Gallery requires"),)),
    # --- Azure connection -------------------------------------------------------------------------------
    Bad("azure-connection-missing", "missing Azure connection",
        "the prepare task of bake_rhel9_nginx, connection azure_bakery not defined", missing_connection,
        (("AzureConnectionMissing: the Airflow connection 'azure_bakery' is not defined (the image's catalogue field "
         "azure.conn_id names it): create it as a connection of type azure, e.g. `airflow connections add "
         "azure_bakery --conn-json"), "the environment variable AIRFLOW_CONN_AZURE_BAKERY on every worker",
         "see docs/azure.md, section 3")),
    Bad("azure-connection-wrong-secret", "wrong Azure connection (wrong secret)",
        "the prepare task against the ARM emulator with a wrong client secret", wrong_secret,
        (("AzureCredentialRefused: Azure connection 'azure_emu': the service principal {client_id} (tenant "
         "11111111-2222-3333-4444-555555555555, authority {endpoint}) was refused: Authentication failed: "
         "AADSTS7000215: Invalid client secret provided."),
         ("Check the Airflow connection 'azure_emu': its password must be the client secret's value (not the "
         "secret's id) and not expired, its login the application (client) id, extra.tenantId the tenant of that "
         "application"))),
    # --- the worker --------------------------------------------------------------------------------------
    Bad("no-packer", "no Packer on PATH", "PATH with QEMU and qemu-img only; the prepare task", no_packer,
        ("PreflightError: image 'debian12-nginx' (target local) cannot be baked on this worker:",
         ("packer is not on PATH (it runs the Packer templates (validate, build)): install the Debian package packer "
         "(apt-get install -y packer)"), "PATH of this worker: {bin}")),
    Bad("no-qemu", "no QEMU on PATH (local image)", "PATH with Packer and qemu-img; the prepare task",
        no_qemu,
        ("PreflightError: image 'debian12-nginx' (target local) cannot be baked on this worker:",
         ("qemu-system-x86_64 is not on PATH (it boots the build VM and the smoke-test VM of the local target): "
         "install the Debian package qemu-system-x86 (apt-get install -y qemu-system-x86)"))),
]


@pytest.mark.guarantee("bad-input")
@pytest.mark.parametrize("bad", [pytest.param(b, id=b.id) for b in TABLE])
def test_bad_input_fails_early_with_a_message_that_says_what_where_and_how(bad: Bad, ctx: Ctx, airflow_db):
    message = bad.provoke(ctx)
    print(f"\n[{bad.id}] {bad.provoked}\n{message}")
    for fragment in bad.expect:
        expected = fragment.format(**ctx.values)
        assert expected in message, f"{bad.id}: expected\n  {expected}\nin the message:\n{message}"
    assert WRONG_SECRET not in message
    commands = ctx.packer_commands()
    if bad.packer == "never":
        assert commands == [], f"{bad.id}: Packer ran ({commands}): the bad input was not caught before it"
    else:
        assert "build" not in commands and "validate" in commands, commands


def test_the_table_covers_every_bad_input_of_the_issue():
    scenarios = {b.scenario for b in TABLE}
    assert len({b.id for b in TABLE}) == len(TABLE)
    assert scenarios >= {
        "template syntax error", "template uses an unknown variable", "local base image file vanished",
        "catalogue: unknown target", "catalogue: bad cron", "catalogue: bad region", "catalogue: bad version policy",
        "catalogue: smoke-test source 0.0.0.0/0", "trigger Param out of range", "trigger Param of the wrong type",
        "trigger conf with a key that is no Param",
        "unknown image", "a version Azure would reject (template)", "a version Azure would reject (Azure target)",
        "missing Azure connection",
        "wrong Azure connection (wrong secret)", "no Packer on PATH", "no QEMU on PATH (local image)",
    }
