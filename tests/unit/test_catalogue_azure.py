"""The catalogue's azure block: shipped entries, and clear errors (file, image, field) for bad ones."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from bakery.catalogue import (
    DEFAULT_CATALOGUE,
    CatalogueError,
    TargetRegion,
    load_catalogue,
    parse_catalogue,
)


def catalogue():
    return yaml.safe_load(DEFAULT_CATALOGUE.read_text())


def azure_entry():
    return copy.deepcopy(catalogue()["images"]["rhel9-nginx"])


def errors_of(entry, name="rhel9-nginx"):
    data = {"version": 1, "images": {name: entry}}
    with pytest.raises(CatalogueError) as ei:
        parse_catalogue(data, path=Path("include/catalogue.yaml"))
    return str(ei.value)


def test_shipped_azure_entries_are_valid():
    specs = load_catalogue()
    for name, folder in (("rhel9-nginx", "rhel9-nginx-azure"), ("ubuntu2404-nginx", "ubuntu2404-nginx-azure")):
        spec = specs[name]
        assert spec.target == "azure" and spec.template_dir.name == folder and spec.template_dir.is_dir()
        az = spec.azure
        assert az.conn_id and az.location and az.managed_image_resource_group
        assert az.gallery.image_definition == name
        assert az.smoke_test.mode in ("public", "private")
        assert az.smoke_test.allowed_source_cidr not in ("*", "0.0.0.0/0")
        assert az.location in [r.name for r in az.regions()]
        assert az.prune_min_age_hours >= 0
    assert specs["debian12-nginx"].azure is None


def test_defaults_of_an_azure_block():
    entry = azure_entry()
    for key in ("target_regions", "end_of_life_days", "exclude_from_latest", "prune", "vm_size"):
        entry["azure"].pop(key, None)
    entry["azure"]["smoke_test"].pop("mode")
    spec = parse_catalogue({"images": {"rhel9-nginx": entry}})["rhel9-nginx"]
    assert spec.azure.regions() == (TargetRegion(spec.azure.location, 1, "Standard_LRS"),)
    assert spec.azure.end_of_life_days is None and spec.azure.exclude_from_latest is False
    assert spec.azure.smoke_test.mode == "public" and spec.azure.prune_min_age_hours == 24
    assert spec.azure.allow_deletion_of_replicated_locations is True


@pytest.mark.guarantee("bad-input")
@pytest.mark.parametrize("cidr", ["0.0.0.0/0", "*", "Internet", "any", "::/0"])
def test_the_smoke_test_vm_is_never_open_to_the_internet(cidr):
    entry = azure_entry()
    entry["azure"]["smoke_test"]["allowed_source_cidr"] = cidr
    msg = errors_of(entry)
    assert "include/catalogue.yaml" in msg
    assert "image 'rhel9-nginx', field 'azure.smoke_test.allowed_source_cidr'" in msg
    assert "whole Internet" in msg


@pytest.mark.guarantee("bad-input")
def test_a_source_range_must_be_an_address_or_cidr():
    entry = azure_entry()
    entry["azure"]["smoke_test"]["allowed_source_cidr"] = "10.0.0.0/33"
    assert "'10.0.0.0/33' is not an IP address or CIDR range" in errors_of(entry)


@pytest.mark.guarantee("bad-input")
def test_target_regions_must_include_the_location_once():
    entry = azure_entry()
    entry["azure"]["location"] = "westeurope"
    entry["azure"]["target_regions"] = [{"name": "northeurope"}, {"name": "North Europe"}]
    msg = errors_of(entry)
    assert "field 'azure.target_regions.1.name': region 'North Europe' is listed twice" in msg
    assert "field 'azure.target_regions': must include the location 'westeurope'" in msg


@pytest.mark.guarantee("bad-input")
def test_field_errors_name_the_field_and_say_what_is_wrong_all_at_once():
    entry = azure_entry()
    az = entry["azure"]
    az["gallery"]["name"] = "my-gallery"  # galleries take no '-'
    az["target_regions"][0]["replicas"] = 0
    az["target_regions"][0]["storage_account_type"] = "Standard_GRS"
    az["smoke_test"]["mode"] = "vpn"
    az["managed_image_resource_group"] = "rg with spaces"
    az["subscription_id"] = "not-a-guid"
    az["end_of_life_days"] = 0
    az["prune"] = {"min_age_hours": -1, "keep": 3}
    az["colour"] = "blue"
    msg = errors_of(entry)
    expected = [
        "field 'azure.gallery.name': 'my-gallery' is not a gallery name",
        "field 'azure.target_regions.0.replicas': 0 is less than the minimum of 1",
        "field 'azure.target_regions.0.storage_account_type': 'Standard_GRS' is not one of 'Standard_LRS'",
        "field 'azure.smoke_test.mode': 'vpn' is not one of 'public', 'private'",
        "field 'azure.managed_image_resource_group': 'rg with spaces' is not a resource group name",
        "field 'azure.subscription_id': 'not-a-guid' is not a subscription id",
        "field 'azure.end_of_life_days': 0 is less than the minimum of 1",
        "field 'azure.prune.min_age_hours': -1 is less than the minimum of 0",
        "field 'azure.prune': unknown field(s) 'keep'",
        "field 'azure': unknown field(s) 'colour'",
    ]
    for line in expected:
        assert f"image 'rhel9-nginx', {line}" in msg, (line, msg)


@pytest.mark.guarantee("bad-input")
def test_required_azure_fields():
    entry = azure_entry()
    del entry["azure"]["gallery"]["image_definition"]
    del entry["azure"]["smoke_test"]["allowed_source_cidr"]
    msg = errors_of(entry)
    assert "field 'azure.gallery': 'image_definition' is a required property" in msg
    assert "field 'azure.smoke_test': 'allowed_source_cidr' is a required property" in msg


@pytest.mark.guarantee("bad-input")
def test_target_and_block_must_agree():
    entry = azure_entry()
    del entry["azure"]
    assert "field 'azure': target 'azure' needs an azure block" in errors_of(entry)
    local = copy.deepcopy(catalogue()["images"]["debian12-nginx"])
    local["azure"] = azure_entry()["azure"]
    assert "field 'azure': only images with target 'azure' take an azure block" in errors_of(local, "debian12-nginx")


@pytest.mark.guarantee("bad-input")
def test_an_azure_image_name_must_leave_room_for_the_version():
    msg = errors_of(azure_entry(), name="a" * 48)
    assert "an Azure image name must be at most 47 characters" in msg
