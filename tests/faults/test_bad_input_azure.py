"""Issue #8, bad input on Azure: a gallery image definition, or catalogue variables, that do not fit what
the template builds. Azure would say so only at publish (a V2 image into a V1 definition), on the first
VM (a purchase plan missing), or at the build VM (a plan that is not the base image's), after an hour
of build and smoke test. The prepare task (the real operator, the real hook, the ARM emulator with the
Marketplace's "Virtual Machine Images" API) must refuse the bake first, with the exact message.

Each row: how the definition or the catalogue differs from the shipped setup, and the fragments of the
message (what, where, how to fix). "Before any build": the emulator got no write at all.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest
import yaml

from tests.azure_emulator.dagrun import CONN_ID, IMAGE, catalogue_entry, emulated_world
from tests.azure_emulator.world import AzureWorld

DATE = datetime(2026, 11, 20, 3, 0, tzinfo=UTC)
DEFINITION = "gallery image definition bakery_gallery/rhel9-nginx (catalogue field azure.gallery.image_definition)"
CANNOT_CHANGE = ("a definition's OS type, OS state, Hyper-V generation and purchase plan cannot be changed: create "
                 "one that fits (docs/azure.md) and point the catalogue at it")
ALMA_PLAN = "name '9-gen2', product 'almalinux-x86_64', publisher 'almalinux'"

ROWS = [
    # id, definition properties (over the shipped setup), catalogue variables, fragments
    ("hyper-v-generation", {"hyperVGeneration": "V1"}, {},
     (f"{DEFINITION} is Hyper-V generation V1, but the template's base image "
      "almalinux:almalinux-x86_64:9-gen2:9.5.202411260 is V2 (so is the image the build captures): " + CANNOT_CHANGE
      + ", or choose a base of that generation (catalogue variables base_image_sku)",)),
    ("os-state", {"osState": "Specialized"}, {},
     (f"{DEFINITION} is Specialized, but the azure-arm build captures a Generalized image: {CANNOT_CHANGE}",)),
    ("definition-without-plan", {"purchasePlan": None}, {},
     (f"{DEFINITION} has purchase plan none, but the template builds from a base with plan {ALMA_PLAN} (template "
      "variables plan_name/plan_product/plan_publisher): VMs from its versions would need that plan. "
      + CANNOT_CHANGE,)),
    ("plan-not-the-bases", {}, {"plan_name": "9-gen1"},
     (f"{DEFINITION} has purchase plan {ALMA_PLAN}, but the template builds from a base with plan name '9-gen1'",
      ("the template's purchase plan is name '9-gen1', product 'almalinux-x86_64', publisher 'almalinux' (template "
       "variables plan_name/plan_product/plan_publisher), but its base image "
       f"almalinux:almalinux-x86_64:9-gen2:9.5.202411260 has plan {ALMA_PLAN}: Azure refuses the build VM "
       "(VMMarketplaceInvalidInput); set the catalogue's variables plan_* to the base's plan (`az vm image show "
       "--urn <urn> --query plan`)"))),
    ("base-not-in-marketplace", {}, {"base_image_sku": "9-gen3"},
     (("the template's base image almalinux:almalinux-x86_64:9-gen3:latest is not in the Azure Marketplace of eastus2 "
       "(template variables base_image_publisher/offer/sku/version, catalogue field azure.location): list the offers "
       "with `az vm image list --all -l <location> -p <publisher> -f <offer>` and fix the catalogue's variables"),)),
]


@pytest.fixture
def bare_world() -> Iterator[AzureWorld]:
    with emulated_world(infrastructure=False) as w:
        yield w


def prepare(world: AzureWorld, tmp_path, monkeypatch, variables: dict) -> dict:
    """The prepare task of IMAGE (the real operator and hook), with the catalogue pointed at ``world``."""
    from bakery.operators.bake import PrepareBakeOperator

    entry = catalogue_entry(world)
    entry["variables"] = variables
    catalogue = tmp_path / "catalogue.yaml"
    catalogue.write_text(yaml.safe_dump({"version": 1, "images": {IMAGE: entry}}))
    for name in list(os.environ):
        if name.startswith(("AIRFLOW_CONN_", "PKR_VAR_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("BAKERY_CATALOGUE", str(catalogue))
    monkeypatch.setenv("BAKERY_HOME", str(tmp_path / "bakery"))
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", world.connection_json())
    op = PrepareBakeOperator(task_id="prepare", image=IMAGE, accelerator="auto")
    run = SimpleNamespace(run_type="scheduled", logical_date=DATE, run_after=DATE, run_id="scheduled__x")
    return op.execute({"dag_run": run})


@pytest.mark.guarantee("bad-input")
@pytest.mark.parametrize("definition, variables, fragments",
                         [pytest.param(d, v, f, id=i) for i, d, v, f in ROWS])
def test_a_definition_or_variables_that_do_not_fit_the_template_fail_prepare(
        bare_world, tmp_path, monkeypatch, airflow_db, definition, variables, fragments):
    world = bare_world
    world.create_infrastructure(**definition)
    writes = len(world.emu.log)
    with pytest.raises(Exception) as err:
        prepare(world, tmp_path, monkeypatch, variables)
    message = f"{type(err.value).__name__}: {err.value}"
    print(message)
    assert message.startswith("AzureTargetError: the Azure resources of image 'rhel9-nginx' are not ready:\n  - ")
    for fragment in fragments:
        assert fragment in message, f"expected\n  {fragment}\nin\n{message}"
    assert [(r.method, r.path) for r in world.emu.log[writes:]
            if r.method != "GET" and r.path.startswith("/subscriptions/")] == []  # no ARM write: nothing made
    assert world.client_secret not in message


@pytest.mark.guarantee("bad-input")
def test_the_definition_docs_azure_md_creates_fits_and_prepare_records_the_plan(
        bare_world, tmp_path, monkeypatch, airflow_db):
    world = bare_world
    world.create_infrastructure()
    out = prepare(world, tmp_path, monkeypatch, {})
    assert out["record"]["extra"]["purchase_plan"] == {
        "name": "9-gen2", "product": "almalinux-x86_64", "publisher": "almalinux"}
    assert world.emu.count("GET", r"/artifacttypes/vmimage/offers/almalinux-x86_64/skus/9-gen2/versions/") == 1
