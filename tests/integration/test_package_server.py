"""The bakery's package server and pool with the host's REAL apt (no VM): what a build guest does,
on a private apt tree, against the loopback "live mirror" of tests/pkgmirror.

* record: apt updates and installs through the server; every .deb lands in the pool once, by
  content, and the next install of the same packages is served from the pool (the mirror sees no
  .deb request);
* replay: a version's pool index served as a flat repository offers exactly that version's
  packages, although the mirror has moved on;
* the pending-update check reads the mirror's indices and finds the new canary, and nothing when
  the mirror is unchanged;
* gc drops expired indexes and unreferenced packages, and reports the bytes freed.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from bakery.packages.inputs import Inputs, Mirror, guest_apt_config
from bakery.packages.manifest import Manifest, Package
from bakery.packages.pool import PackagePool, PooledPackage, PoolIndex
from bakery.packages.server import PackageServer
from bakery.packages.updates import pending_updates

from tests.pkgmirror import ClosureError, LoopbackMirror, deb_cache_dir, debian_closure, make_deb
from tests.pkgmirror.apt import PrivateApt

DAY1 = datetime(2026, 11, 1, 2, 0, tzinfo=timezone.utc)
DAY2 = datetime(2026, 11, 2, 2, 0, tzinfo=timezone.utc)
WANT = ("nginx", "bakery-canary")


@pytest.fixture(scope="module")
def closure() -> list[Path]:
    try:
        return debian_closure(["nginx"], deb_cache_dir())
    except ClosureError as exc:
        pytest.fail(f"the nginx closure could not be fetched (network to deb.debian.org needed): {exc}")


@pytest.fixture(scope="module")
def canary(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("canary")
    return {v: make_deb("bakery-canary", v, out) for v in ("1.0", "2.0")}


@pytest.fixture
def mirror(tmp_path, closure, canary):
    with LoopbackMirror(tmp_path / "mirror") as m:
        m.publish([*closure, canary["1.0"]], when=DAY1)
        yield m


def via_server(tmp_path: Path, name: str, server: PackageServer, inputs: Inputs, mirrors: list[Mirror]) -> PrivateApt:
    sources, _ = guest_apt_config(inputs, mirrors, server.url())
    return PrivateApt(tmp_path / name, sources=sources)


def test_record_pools_every_package_once_and_serves_the_next_install_from_the_pool(tmp_path, mirror):
    pool = PackagePool(tmp_path / "pool")
    mirrors = [Mirror(mirror.url, ("bookworm",), trusted=True)]
    inputs = Inputs("current", "x", mirror_urls=(mirror.url,))
    with PackageServer(pool, mirrors=[mirror.url]) as srv:
        apt = via_server(tmp_path, "apt1", srv, inputs, mirrors)
        apt.ok("apt-get", "update")
        apt.ok("apt-get", "install", "-y", "--download-only", *WANT)
        first = dict(srv.fetched)
    downloaded = apt.archives
    assert len(first) == len(downloaded) >= 20
    assert {s.name for s in first.values()} >= {"nginx", "nginx-common", "bakery-canary"}
    assert [s.version for s in first.values() if s.name == "bakery-canary"] == ["1.0"]
    for s in first.values():  # each one in the pool, by its content
        assert pool.blob_path(s.sha256).stat().st_size == s.size
    assert srv.counts["cache_hits"] == 0
    debs_from_mirror = len(mirror.deb_requests())
    assert debs_from_mirror == len(first)

    mirror.reset_requests()
    with PackageServer(pool, mirrors=[mirror.url]) as srv2:
        apt2 = via_server(tmp_path, "apt2", srv2, inputs, mirrors)
        apt2.ok("apt-get", "update")
        apt2.ok("apt-get", "install", "-y", "--download-only", *WANT)
    assert set(srv2.fetched) == set(first)
    assert srv2.counts["cache_hits"] >= len(first)
    assert mirror.deb_requests() == [], "the second install fetched packages from the mirror again"
    assert pool.size() == sum(s.size for s in first.values())  # stored once


def record_install(tmp_path: Path, name: str, pool: PackagePool, mirror: LoopbackMirror, *, max_age: float = 0.0,
                   want: tuple[str, ...] = WANT) -> tuple[PackageServer, PrivateApt]:
    """What a build guest does in record mode: apt-get update + install, through a new package server."""
    mirrors = [Mirror(mirror.url, ("bookworm",), trusted=True)]
    with PackageServer(pool, mirrors=[mirror.url], index_max_age=max_age) as srv:
        apt = via_server(tmp_path, name, srv, Inputs("current", "x", mirror_urls=(mirror.url,)), mirrors)
        apt.ok("apt-get", "update")
        apt.ok("apt-get", "install", "-y", "--download-only", *want)
    return srv, apt


def test_a_second_build_downloads_nothing_and_still_sees_a_moved_mirror(tmp_path, mirror, closure, canary):
    """The mirror sends Last-Modified: the by-name Release is revalidated on every build (304: no
    body), so the second build downloads no byte, and a build after the mirror moved sees it at once."""
    pool = PackagePool(tmp_path / "pool")
    first, _ = record_install(tmp_path, "apt1", pool, mirror, max_age=3600)
    assert first.counts["bytes_upstream"] > 0 and first.counts["revalidated"] == 0

    mirror.reset_requests()
    second, _ = record_install(tmp_path, "apt2", pool, mirror, max_age=3600)
    assert second.counts["bytes_upstream"] == 0, second.summary()
    assert second.counts["revalidated"] >= 1, second.summary()
    statuses = {(path.rsplit("/", 1)[-1], status) for _, path, status in mirror.requests}
    assert ("Release", 304) in statuses, statuses
    assert all(status in (304, 404) for _, _, status in mirror.requests), mirror.requests  # no body came back

    mirror.publish([*closure, canary["2.0"]], when=DAY2)
    third, apt3 = record_install(tmp_path, "apt3", pool, mirror, max_age=3600, want=("bakery-canary",))
    assert apt3.policy("bakery-canary") == ("2.0", ["2.0"])
    assert [s.version for s in third.fetched.values()] == ["2.0"]


@pytest.fixture
def mirror_without_validators(tmp_path, closure, canary):
    """A mirror (or a proxy in front of it) that sends no Last-Modified or ETag, as this machine's does."""
    with LoopbackMirror(tmp_path / "mirror-nv", validators=False) as m:
        m.publish([*closure, canary["1.0"]], when=DAY1)
        yield m


def test_without_validators_release_is_reused_for_max_age_then_fetched_again(tmp_path, mirror_without_validators,
                                                                              closure, canary):
    mirror = mirror_without_validators
    pool = PackagePool(tmp_path / "pool")
    first, _ = record_install(tmp_path, "apt1", pool, mirror, max_age=3600)
    assert first.counts["bytes_upstream"] > 0 and first.counts["index_cache_hits"] == 0

    mirror.reset_requests()
    second, _ = record_install(tmp_path, "apt2", pool, mirror, max_age=3600)
    assert second.counts["bytes_upstream"] == 0 and second.counts["index_cache_hits"] >= 1, second.summary()
    assert not [r for r in mirror.requests if r[1].endswith("/Release")], mirror.requests  # not even asked

    # the mirror moves: inside max_age a build alone still gets the pooled Release (and the by-hash
    # index it names): the old state
    mirror.publish([*closure, canary["2.0"]], when=DAY2)
    _, stale = record_install(tmp_path, "apt3", pool, mirror, max_age=3600, want=("bakery-canary",))
    assert stale.policy("bakery-canary") == ("1.0", ["1.0"])
    # the update check (check_changes, before a build of the same run) always asks: it sees the move
    # and refreshes the pooled copy, so the build that follows installs what the check judged
    installed = Manifest("deb", (Package("bakery-canary", "all", "1.0"),))
    mirrors = [Mirror(mirror.url, ("bookworm",), trusted=True)]
    moved = pending_updates(installed, mirrors, pool, log=lambda _: None)
    assert [(c.name, c.new) for c in moved.pending] == [("bakery-canary", "2.0")]
    _, fresh = record_install(tmp_path, "apt4", pool, mirror, max_age=3600, want=("bakery-canary",))
    assert fresh.policy("bakery-canary") == ("2.0", ["2.0"])
    # max_age 0: a build always fetches
    mirror.publish([*closure, canary["1.0"]], when=DAY2 + timedelta(hours=1))
    _, zero = record_install(tmp_path, "apt5", pool, mirror, max_age=0, want=("bakery-canary",))
    assert zero.policy("bakery-canary") == ("1.0", ["1.0"])


def test_gc_drops_a_by_name_index_file_once_unused_for_the_grace_period(tmp_path, mirror):
    pool = PackagePool(tmp_path / "pool")
    record_install(tmp_path, "apt1", pool, mirror, want=("bakery-canary",))
    release = f"{mirror.url}/dists/bookworm/Release"
    entry = pool.named(release)
    assert entry is not None
    import os
    old = (datetime.now(timezone.utc) - timedelta(days=2)).timestamp()
    for blob in (pool.root / "blobs").rglob("*"):
        if blob.is_file():
            os.utime(blob, (old, old))
    pool.gc(retention_days=90, grace_hours=24)
    assert pool.named(release) is None and not pool.has_blob(entry.sha256)
    assert not list((pool.root / "names").rglob("*/*")), "the entry of a dropped blob was left behind"


def test_replay_offers_exactly_the_versions_packages_though_the_mirror_moved(tmp_path, mirror, closure, canary):
    pool = PackagePool(tmp_path / "pool")
    mirrors = [Mirror(mirror.url, ("bookworm",), trusted=True)]
    with PackageServer(pool, mirrors=[mirror.url]) as srv:
        apt = via_server(tmp_path, "apt1", srv, Inputs("current", "x", mirror_urls=(mirror.url,)), mirrors)
        apt.ok("apt-get", "update")
        apt.ok("apt-get", "install", "-y", "--download-only", *WANT)
        served = list(srv.fetched.values())
    index = PoolIndex(image="img", version="2026.1101.200000", created="2026-11-01T02:00:00+00:00",
                      base_digest="sha256:" + "0" * 64, inputs={}, install="nginx bakery-canary",
                      packages=[PooledPackage(s.name, s.version, s.arch, s.sha256, s.size, s.filename) for s in served])
    pool.commit_index(index)

    mirror.publish([*closure, canary["2.0"]], when=DAY2)  # the live mirror now has only 2.0
    mirror.reset_requests()
    with PackageServer(pool, replay=pool.index("img", "2026.1101.200000")) as srv:
        apt = via_server(tmp_path, "replay", srv, Inputs("pool", "2026.1101.200000"), mirrors)
        apt.ok("apt-get", "update")
        assert apt.policy("bakery-canary") == ("1.0", ["1.0"])
        apt.ok("apt-get", "install", "-y", "--download-only", *WANT)
        replayed = dict(srv.fetched)
    assert set(replayed) == {s.sha256 for s in served}, "the replay installed other packages than the version's"
    assert mirror.requests == [], "the replay asked the live mirror for something"
    # a package the index does not hold is not offered
    assert srv.respond("/r/pool/" + "f" * 64 + "/x.deb")[0] == 404


def test_pending_updates_finds_the_new_canary_and_nothing_when_unchanged(tmp_path, mirror, closure, canary):
    pool = PackagePool(tmp_path / "pool")
    mirrors = [Mirror(mirror.url, ("bookworm",), trusted=True)]
    installed = Manifest("deb", (Package("bakery-canary", "all", "1.0"), Package("not-on-mirror", "amd64", "1")))
    same = pending_updates(installed, mirrors, pool, log=lambda _: None)
    assert same.pending == [] and same.not_found == ["not-on-mirror"]
    mirror.publish([*closure, canary["2.0"]], when=DAY2)
    moved = pending_updates(installed, mirrors, pool, log=lambda _: None)
    assert [(c.name, c.old, c.new) for c in moved.pending] == [("bakery-canary", "1.0", "2.0")]
    # the index was fetched by hash into the pool: an unchanged mirror is not downloaded twice
    before = len([r for r in mirror.requests if "by-hash" in r[1]])
    pending_updates(installed, mirrors, pool, log=lambda _: None)
    assert len([r for r in mirror.requests if "by-hash" in r[1]]) == before


def test_gc_drops_expired_indexes_and_unreferenced_packages(tmp_path):
    pool = PackagePool(tmp_path / "pool")

    def blob(content: bytes) -> tuple[str, int]:
        tmp = pool.new_tmp()
        tmp.write_bytes(content)
        return pool.put_file(tmp)

    shared, only_old, loose = blob(b"a" * 1000), blob(b"b" * 2000), blob(b"c" * 4000)
    now = datetime(2026, 12, 1, tzinfo=timezone.utc)

    def index(version: str, *blobs: tuple[str, int]) -> None:
        pool.commit_index(PoolIndex("img", version, now.isoformat(), None, {}, "", [
            PooledPackage(f"p{i}", "1", "all", d, n, f"p{i}.deb") for i, (d, n) in enumerate(blobs)]))

    index("1.1.1", shared, only_old)
    index("1.1.2", shared)
    pool.mark_pruned("img", "1.1.1", now - timedelta(days=91))  # past a 90-day retention
    import os
    for d, _ in (shared, only_old, loose):  # all older than the grace period
        old = (now - timedelta(days=2)).timestamp()
        os.utime(pool.blob_path(d), (old, old))

    dry = pool.gc(retention_days=90, now=now, dry_run=True)
    assert dry.indexes_removed == ["img/1.1.1"] and dry.blobs_removed == 2
    assert pool.index("img", "1.1.1") is not None and pool.has_blob(only_old[0])

    report = pool.gc(retention_days=90, now=now)
    assert report.indexes_removed == ["img/1.1.1"]
    assert report.blobs_removed == 2 and report.bytes_freed >= 6000
    assert pool.has_blob(shared[0]) and not pool.has_blob(only_old[0]) and not pool.has_blob(loose[0])
    assert pool.index("img", "1.1.2") is not None
    # a pruned index inside its retention stays usable
    pool.mark_pruned("img", "1.1.2", now - timedelta(days=10))
    assert pool.index("img", "1.1.2").usable(90, now) and not pool.index("img", "1.1.2").usable(5, now)


def test_a_backfill_without_pool_reads_the_dated_snapshot_archive(tmp_path, mirror, closure, canary):
    """snapshot@<date>: the package server fetches from the archive's state of the run's date."""
    from bakery.packages.inputs import resolve_inputs

    mirror.publish([*closure, canary["2.0"]], when=DAY2)  # the live mirror serves 2.0 now
    pool = PackagePool(tmp_path / "pool")
    mirrors = [Mirror(mirror.url, ("bookworm",), trusted=True, snapshot=mirror.snapshot_template)]
    when = DAY1 + timedelta(hours=12)  # a date between the two states
    inputs = resolve_inputs(image="img", version="2026.1101.1400000", run_type="backfill", logical_date=when,
                            now=DAY2 + timedelta(days=1), mirrors=mirrors, pool=pool, retention_days=90)
    assert inputs.label == "snapshot@20261101T140000Z" and inputs.mirror_urls == (mirror.snapshot_url(when),)
    with PackageServer(pool, mirrors=inputs.mirror_urls) as srv:
        sources, conf = guest_apt_config(inputs, mirrors, srv.url())
        assert 'Check-Valid-Until "false"' in conf
        apt = PrivateApt(tmp_path / "apt", sources=sources)
        apt.ok("apt-get", "update")
        assert apt.policy("bakery-canary") == ("1.0", ["1.0"])
        apt.ok("apt-get", "install", "-y", "--download-only", "bakery-canary")
    assert [s.version for s in srv.fetched.values() if s.name == "bakery-canary"] == ["1.0"]


def test_the_pool_keeps_the_base_image_itself_not_its_stable_symlink(tmp_path):
    """The base image's stable path is a symlink to the recipe's file; the pool must hold the file
    (a hard link), which outlives the symlink being moved or the file being pruned from the cache."""
    base_dir = tmp_path / "base"
    base_dir.mkdir()
    real = base_dir / "debian12-0123456789abcdef.qcow2"
    real.write_bytes(b"qcow2 stand-in")
    (base_dir / "debian12.qcow2").symlink_to(real.name)
    pool = PackagePool(tmp_path / "pool")
    kept = pool.keep_base(base_dir / "debian12.qcow2", "sha256:" + "a" * 64)
    assert kept == pool.base_path("sha256:" + "a" * 64)
    assert not kept.is_symlink() and kept.stat().st_ino == real.stat().st_ino
    real.unlink()  # the base cache prunes its file: the pool's copy stays
    (base_dir / "debian12.qcow2").unlink()
    assert kept.read_bytes() == b"qcow2 stand-in"
