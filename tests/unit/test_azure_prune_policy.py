"""The Azure prune policy (bakery.targets.azure.plan_prune): pure, no Azure."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from bakery.targets.azure import (
    SmokeNames,
    VersionFacts,
    managed_image_name,
    plan_prune,
)

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
OLD = NOW - timedelta(days=30)


def v(name: str, **kw) -> VersionFacts:
    kw.setdefault("published", OLD)
    return VersionFacts(name=name, **kw)


def plan(versions, keep=2, protect=(), min_age_hours=24.0):
    return plan_prune(versions, keep, protect=protect, min_age_hours=min_age_hours, now=NOW)


@pytest.mark.guarantee("prune-safety")
def test_keeps_the_n_newest_by_number_not_by_text_or_list_order():
    versions = [v("2026.1128.1030001"), v("2026.1128.200000"), v("2026.928.200000"), v("2026.1001.200000")]
    p = plan(versions, keep=2)
    # numerically: 2026.928 < 2026.1001 < 2026.1128.200000 < 2026.1128.1030001
    assert [d.name for d in p.delete] == ["2026.928.200000", "2026.1001.200000"]
    assert p.keep == {"2026.1128.200000": "one of the 2 newest", "2026.1128.1030001": "the highest version"}


@pytest.mark.guarantee("prune-safety")
def test_never_the_highest_nor_a_protected_one_even_with_keep_1():
    versions = [v("1.0.0"), v("2.0.0"), v("3.0.0")]
    p = plan(versions, keep=1, protect={"1.0.0"})
    assert [d.name for d in p.delete] == ["2.0.0"]
    assert p.keep["1.0.0"] == "published by this run"
    assert p.keep["3.0.0"] == "the highest version"


@pytest.mark.guarantee("prune-safety")
@pytest.mark.parametrize("facts, reason", [
    ({"pinned": True}, "pinned (tag pinned=true)"),
    ({"published": NOW - timedelta(hours=23)}, "younger than 24 h"),
    ({"published": None}, "publish date is unknown"),
    ({"state": "Creating"}, "provisioning state Creating"),
    ({"state": "Updating"}, "provisioning state Updating"),
    ({"state": "Deleting"}, "provisioning state Deleting"),
    ({"allow_deletion_of_replicated_locations": False, "regions": 3},
     "safetyProfile.allowDeletionOfReplicatedLocations is false and it is replicated to 3 regions"),
    ({"block_deletion_before_end_of_life": True, "end_of_life": NOW + timedelta(days=1)},
     "safetyProfile.blockDeletionBeforeEndOfLife"),
])
def test_protected_versions_stay_and_say_why(facts, reason):
    p = plan([v("1.0.0", **facts), v("2.0.0"), v("3.0.0")], keep=1)
    assert [d.name for d in p.delete] == ["2.0.0"]
    assert reason in p.keep["1.0.0"]


@pytest.mark.guarantee("prune-safety")
@pytest.mark.parametrize("facts", [
    {"allow_deletion_of_replicated_locations": False, "regions": 1},  # one region: Azure allows it
    {"allow_deletion_of_replicated_locations": True, "regions": 4},
    {"block_deletion_before_end_of_life": True, "end_of_life": NOW - timedelta(days=1)},  # past its EOL
    {"published": NOW - timedelta(hours=25)},
    {"state": "Failed"},
    {"pinned": False},
])
def test_unprotected_old_versions_go(facts):
    p = plan([v("1.0.0", **facts), v("2.0.0"), v("3.0.0")], keep=2)
    assert [d.name for d in p.delete] == ["1.0.0"]


@pytest.mark.guarantee("prune-safety")
def test_min_age_zero_and_few_versions():
    assert plan([v("1.0.0", published=NOW)], keep=1, min_age_hours=0).delete == []
    assert plan([], keep=3).delete == []
    p = plan([v("1.0.0", published=NOW), v("2.0.0", published=NOW)], keep=1, min_age_hours=0)
    assert [d.name for d in p.delete] == ["1.0.0"]


@pytest.mark.guarantee("prune-safety")
def test_keep_must_be_positive():
    with pytest.raises(ValueError, match="keep must be at least 1"):
        plan([v("1.0.0")], keep=0)


def test_names_are_deterministic_and_fit_azure_limits():
    assert managed_image_name("rhel9-nginx", "2026.1128.200000") == "rhel9-nginx-2026-1128-200000"
    short = SmokeNames.of("rhel9-nginx", "2026.1128.200000")
    assert short.vm == "smoke-rhel9-nginx-2026-1128-200000-vm"
    assert SmokeNames.of("rhel9-nginx", "2026.1128.200000") == short
    long = SmokeNames.of("a" * 47, "2026.1128.1030001")
    assert len(long.vm) <= 64 and len(long.os_disk) <= 80
    assert long != SmokeNames.of("a" * 47, "2026.1128.1030011")  # still unique per version


# --- Azure's `latest` (excludeFromLatest) ---------------------------------------------------------------
@pytest.mark.guarantee("prune-safety")
def test_never_the_version_azures_latest_resolves_to_when_newer_ones_are_excluded():
    # 4.0.0 and 5.0.0 are excluded from latest (say, candidates): a VM made from the image definition
    # without a version gets 2.0.0. keep=2 alone would delete it.
    versions = [v("1.0.0"), v("2.0.0"), v("3.0.0", state="Failed"), v("4.0.0", exclude_from_latest=True),
                v("5.0.0", exclude_from_latest=True)]
    p = plan(versions, keep=2)
    assert [d.name for d in p.delete] == ["1.0.0", "3.0.0"]  # a Failed version is no one's latest
    assert p.keep["2.0.0"] == ("Azure's `latest` resolves to it: the highest version not excluded from latest "
                               "(4.0.0, 5.0.0 are excludeFromLatest)")
    assert p.keep["4.0.0"] == "one of the 2 newest" and p.keep["5.0.0"] == "the highest version"


@pytest.mark.guarantee("prune-safety")
def test_latest_is_the_highest_version_when_nothing_is_excluded_and_none_when_everything_is():
    from bakery.targets.azure import latest_of

    assert latest_of([v("1.0.0"), v("10.0.0"), v("9.0.0")]) == "10.0.0"  # numerically
    assert latest_of([v("1.0.0", exclude_from_latest=True)]) is None
    p = plan([v("1.0.0", exclude_from_latest=True), v("2.0.0", exclude_from_latest=True),
              v("3.0.0", exclude_from_latest=True)], keep=1)
    assert [d.name for d in p.delete] == ["1.0.0", "2.0.0"]  # no latest to keep: the usual rules
