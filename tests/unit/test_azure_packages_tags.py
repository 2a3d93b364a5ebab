"""Azure: the gallery version's package / input tags, the backfill protection of prune
(bakery.targets.azure: version_tags, plan_prune) and the catalogue's azure.sbom block. Pure: no Azure."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta

import pytest
import yaml
from bakery.catalogue import DEFAULT_CATALOGUE, BlobStoreRef, CatalogueError, parse_catalogue
from bakery.record import BakeRecord
from bakery.targets.azure import TAG_VALUE_MAX, AzureTarget, VersionFacts, plan_prune

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
OLD = NOW - timedelta(days=30)


def entry(**azure) -> dict:
    data = yaml.safe_load(DEFAULT_CATALOGUE.read_text())
    e = copy.deepcopy(data["images"]["rhel9-nginx"])
    e["azure"].update(azure)
    return e


def spec(**azure):
    return parse_catalogue({"version": 1, "images": {"rhel9-nginx": entry(**azure)}})["rhel9-nginx"]


def record(**kw) -> BakeRecord:
    base = {"image": "rhel9-nginx", "version": "2026.1124.200000", "target": "azure",
            "template_digest": "sha256:" + "a" * 64, "dag_run_id": "scheduled__2026-11-24T03:00:00+00:00",
            "run_type": "scheduled", "packer_run_uuid": "u-1", "smoke": {"passed": True, "seconds": 3.5}}
    base.update(kw)
    return BakeRecord(**base)


# --- tags -------------------------------------------------------------------------------------------------
def test_tags_carry_what_check_changes_compares_the_manifest_digest_and_the_inputs():
    target = AzureTarget(spec(), now=lambda: NOW)
    rec = record(base_digest="sha256:" + "b" * 64, variables_digest="sha256:" + "c" * 64,
                 packages={"manifest": "/w/packages.json", "digest": "sha256:" + "d" * 64, "count": 19, "family": "rpm"},
                 inputs={"kind": "current", "ref": "20261124T030211Z", "label": "current@20261124T030211Z"})
    tags = target.version_tags(rec)
    assert tags["template_digest"] == rec.template_digest
    assert tags["base_digest"] == rec.base_digest
    assert tags["variables_digest"] == rec.variables_digest
    assert tags["manifest_digest"] == "sha256:" + "d" * 64
    assert tags["inputs"] == "current@20261124T030211Z"
    assert "rebuilt_at" not in tags  # not a backfill


def test_a_backfill_is_tagged_rebuilt_at_now():
    tags = AzureTarget(spec(), now=lambda: NOW).version_tags(record(run_type="backfill"))
    assert tags["rebuilt_at"] == "2026-11-28T12:00:00+00:00"
    assert datetime.fromisoformat(tags["rebuilt_at"]) == NOW


def test_absent_values_are_no_tags_and_every_value_fits_azures_limit():
    rec = record(dag_run_id="manual__" + "x" * 300, base_digest=None, variables_digest=None, packages=None, inputs=None)
    tags = AzureTarget(spec(), now=lambda: NOW).version_tags(rec)
    assert not {"base_digest", "variables_digest", "manifest_digest", "inputs"} & set(tags)
    assert max(len(v) for v in tags.values()) == TAG_VALUE_MAX == 256


# --- prune: a backfill's rebuild is protected for protect_days after rebuilt_at ---------------------------
def v(name: str, **kw) -> VersionFacts:
    kw.setdefault("published", OLD)
    return VersionFacts(name=name, **kw)


def plan(versions, keep=1, days=7.0):
    return plan_prune(versions, keep, now=NOW, min_age_hours=24, backfill_protect_days=days)


def test_a_recent_rebuild_is_kept_with_its_reason_an_old_one_is_not():
    recent = (NOW - timedelta(days=6, hours=23)).isoformat()
    p = plan([v("1.0.0", rebuilt_at=recent), v("1.1.0", rebuilt_at=(NOW - timedelta(days=7, hours=1)).isoformat()),
              v("1.2.0"), v("2.0.0")])
    assert [d.name for d in p.delete] == ["1.1.0", "1.2.0"]
    why = p.keep["1.0.0"]
    assert why.startswith("rebuilt by a backfill at 2026-11-21T13:00:00+00:00: protected for 7 days")
    assert "backfill.protect_days" in why and "until 2026-11-28T13:00:00+00:00" in why


def test_protect_days_zero_turns_the_protection_off():
    p = plan([v("1.0.0", rebuilt_at=NOW.isoformat()), v("2.0.0")], days=0)
    assert [d.name for d in p.delete] == ["1.0.0"]


def test_an_unreadable_rebuilt_at_keeps_the_version_and_says_so():
    p = plan([v("1.0.0", rebuilt_at="last tuesday"), v("2.0.0")])
    assert p.delete == []
    assert "rebuilt_at='last tuesday' is not an ISO time" in p.keep["1.0.0"]


@pytest.mark.parametrize("stamp", ["2026-11-27T12:00:00Z", "2026-11-27T12:00:00+00:00", "2026-11-27T13:00:00+01:00"])
def test_rebuilt_at_forms_azure_and_people_write(stamp):
    assert "rebuilt by a backfill" in plan([v("1.0.0", rebuilt_at=stamp), v("2.0.0")]).keep["1.0.0"]


# --- catalogue: azure.sbom -----------------------------------------------------------------------------------
def test_the_sbom_block_becomes_a_blob_store_ref_and_is_optional():
    assert spec().azure.sbom is None
    assert spec(sbom={"conn_id": "wasb_sboms", "container": "image-sboms"}).azure.sbom == BlobStoreRef(
        "wasb_sboms", "image-sboms")


@pytest.mark.parametrize("sbom, message", [
    ({"conn_id": "wasb_sboms", "container": "Image_SBOMs"},
     "field 'azure.sbom.container': 'Image_SBOMs' is not a blob container name"),
    ({"conn_id": "wasb_sboms", "container": "a--b"}, "field 'azure.sbom.container'"),
    ({"conn_id": "wasb_sboms", "container": "ab"}, "field 'azure.sbom.container'"),
    ({"container": "image-sboms"}, "field 'azure.sbom': 'conn_id' is a required property"),
    ({"conn_id": "wasb sboms", "container": "image-sboms"}, "field 'azure.sbom.conn_id'"),
    ({"conn_id": "w", "container": "image-sboms", "prefix": "x"}, "unknown field(s) 'prefix'"),
])
def test_a_bad_sbom_block_names_the_field(sbom, message):
    with pytest.raises(CatalogueError) as err:
        spec(sbom=sbom)
    assert message in str(err.value)
    assert "image 'rhel9-nginx'" in str(err.value)
