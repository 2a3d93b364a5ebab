from datetime import datetime, timedelta, timezone

import pytest

from bakery.versioning import VersionError, parse_version, version_for_run, version_key

UTC = timezone.utc


def test_scheduled_run_uses_logical_date():
    v = version_for_run(run_type="scheduled", logical_date=datetime(2026, 11, 28, 2, 0, tzinfo=UTC), run_after=datetime(2026, 11, 29, 2, 0, tzinfo=UTC))
    assert v == "2026.1128.200000"


def test_backfill_of_a_past_date_gets_that_dates_version():
    nightly = version_for_run(run_type="scheduled", logical_date=datetime(2026, 3, 5, 2, 0, tzinfo=UTC), run_after=None)
    backfill = version_for_run(run_type="backfill", logical_date=datetime(2026, 3, 5, 2, 0, tzinfo=UTC), run_after=datetime(2026, 11, 28, 9, 0, tzinfo=UTC))
    assert backfill == nightly == "2026.305.200000"


def test_manual_run_without_logical_date_uses_run_after_and_differs_from_scheduled():
    t = datetime(2026, 11, 28, 2, 0, tzinfo=UTC)
    manual = version_for_run(run_type="manual", logical_date=None, run_after=t)
    scheduled = version_for_run(run_type="scheduled", logical_date=t, run_after=t)
    assert manual == "2026.1128.200001"
    assert manual != scheduled
    parse_version(manual)


def test_midnight_and_end_of_year_are_valid_azure_versions():
    assert version_for_run(run_type="scheduled", logical_date=datetime(2026, 1, 1, tzinfo=UTC), run_after=None) == "2026.101.0"
    v = version_for_run(run_type="manual", logical_date=None, run_after=datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC))
    assert v == "2026.1231.2359591"
    assert max(parse_version(v)) < 2**31


def test_non_utc_times_are_converted():
    cet = timezone(timedelta(hours=1))
    assert version_for_run(run_type="scheduled", logical_date=datetime(2026, 11, 28, 3, 0, tzinfo=cet), run_after=None) == "2026.1128.200000"


def test_versions_order_by_time_across_run_kinds():
    base = datetime(2026, 11, 27, 23, 0, tzinfo=UTC)
    runs = [
        ("scheduled", base, None),
        ("manual", None, base + timedelta(hours=1, seconds=1)),
        ("scheduled", base + timedelta(hours=3), None),
        ("manual", None, base + timedelta(hours=3, minutes=30)),
        ("backfill", base + timedelta(days=31), None),
        ("scheduled", base + timedelta(days=400), None),
    ]
    versions = [version_for_run(run_type=k, logical_date=ld, run_after=ra) for k, ld, ra in runs]
    assert sorted(versions, key=version_key) == versions
    assert len(set(versions)) == len(versions)
    # string order would be wrong: numeric order is what Azure and our gallery use
    assert sorted(["2026.1128.200000", "2026.1128.1030001"], key=version_key) == ["2026.1128.200000", "2026.1128.1030001"]


def test_each_second_of_a_day_gets_a_distinct_increasing_version():
    start = datetime(2026, 6, 1, tzinfo=UTC)
    keys = [version_key(version_for_run(run_type="scheduled", logical_date=start + timedelta(seconds=s), run_after=None)) for s in range(0, 86400, 7)]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)


@pytest.mark.parametrize("bad", ["1.2", "1.2.3.4", "01.2.3", "1.2.3-beta", "v1.2.3", "1.2.2147483648", "", "a.b.c"])
def test_versions_azure_would_reject_are_refused(bad):
    with pytest.raises(VersionError, match="Major.Minor.Patch|exceeds"):
        parse_version(bad)


def test_missing_times_are_a_clear_error():
    with pytest.raises(VersionError, match="neither a logical date nor a run_after"):
        version_for_run(run_type="manual", logical_date=None, run_after=None)
    with pytest.raises(VersionError, match="must have a logical date"):
        version_for_run(run_type="scheduled", logical_date=None, run_after=datetime(2026, 1, 1, tzinfo=UTC))
    with pytest.raises(VersionError, match="no time zone"):
        version_for_run(run_type="manual", logical_date=datetime(2026, 1, 1), run_after=None)
