"""What an Azure template builds from (bakery.targets.azure.infra.build_source): the base image and the
purchase plan, as Packer resolves the variables (catalogue ``variables`` over the template's defaults).
Pure: no Azure. Also the managed image states the target accepts."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from bakery.catalogue import load_catalogue
from bakery.targets.azure import PurchasePlan, build_source, image_ready, template_defaults

ALMALINUX = PurchasePlan(name="9-gen2", product="almalinux-x86_64", publisher="almalinux")

VARIABLES = '''
variable "plan_name" {
  type        = string
  default     = "9-gen2"
  description = "x"
}

variable "plan_product" {
  type    = string
  default = "almalinux-x86_64"

  validation {
    condition     = var.plan_product != "x"
    error_message = "default = \\"not-this\\""
  }
}

variable "plan_publisher" {
  type    = string
  default = "${var.plan_product}-inc"
}

variable "base_image_sku" {
  type = string
}
'''


def test_template_defaults_reads_string_literals_only():
    defaults = template_defaults({"variables.pkr.hcl": VARIABLES})
    assert defaults == {"plan_name": "9-gen2", "plan_product": "almalinux-x86_64",
                        "plan_publisher": None,  # an expression: Packer decides, not this reader
                        "base_image_sku": None}  # declared, no default


@pytest.mark.parametrize("image, plan, base", [
    ("rhel9-nginx", ALMALINUX, ("almalinux", "almalinux-x86_64", "9-gen2", "latest")),
    ("ubuntu2404-nginx", None, ("Canonical", "ubuntu-24_04-lts", "server", "latest")),
])
def test_the_shipped_templates_build_from_these_bases_and_plans(image, plan, base):
    source = build_source(load_catalogue()[image])
    assert source.plan_known and source.plan == plan and source.base == base


def test_catalogue_variables_override_the_templates_defaults():
    spec = load_catalogue()["rhel9-nginx"]
    spec = replace(spec, variables={"plan_name": "9-gen1", "base_image_sku": "9-gen1", "base_image_version": "9.5.1"})
    source = build_source(spec)
    assert source.plan == PurchasePlan("9-gen1", "almalinux-x86_64", "almalinux")
    assert source.base == ("almalinux", "almalinux-x86_64", "9-gen1", "9.5.1")
    no_plan = build_source(replace(spec, variables={"plan_name": "", "plan_product": "", "plan_publisher": ""}))
    assert no_plan.plan_known and no_plan.plan is None  # all empty: azure-arm ignores plan_info


def test_a_plan_the_reader_cannot_resolve_is_unknown_and_says_why(tmp_path: Path):
    (tmp_path / "variables.pkr.hcl").write_text(VARIABLES)
    spec = replace(load_catalogue()["rhel9-nginx"], template_dir=tmp_path, variables={})
    source = build_source(spec)
    assert not source.plan_known and source.plan is None
    assert "the default of variable 'plan_publisher'" in source.why_unknown
    assert source.base is None and "declares no variable 'base_image_publisher'" in source.why_unknown


def test_plans_compare_like_arm_case_insensitively():
    assert ALMALINUX.same(PurchasePlan.of({"name": "9-GEN2", "product": "AlmaLinux-x86_64", "publisher": "AlmaLinux"}))
    assert not ALMALINUX.same(PurchasePlan.of({"name": "9-gen1", "product": "almalinux-x86_64",
                                               "publisher": "almalinux"}))
    assert PurchasePlan.of({"name": "", "product": None}) is None and PurchasePlan.of(None) is None


@pytest.mark.parametrize("state, ready", [
    ("Succeeded", True), ("succeeded", True), ("SUCCEEDED", True), ("Created", True), ("created", True),
    ("Creating", False), ("Failed", False), ("", False), (None, False),
])
def test_a_managed_image_is_ready_when_succeeded_or_created_in_any_case(state, ready):
    assert image_ready(state) is ready
