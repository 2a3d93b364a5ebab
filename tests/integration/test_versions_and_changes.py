"""What a version carries and what the next run decides from it, with the real local target, pool
and the loopback mirror of tests/pkgmirror (no VM):

* publish stores the manifest, a valid CycloneDX SBOM, the inputs, ``rebuilt_at`` for a backfill,
  commits the pool index, and logs the package diff to the previous version;
* ``replace_existing`` replaces a version atomically; without it another run's version is refused;
* prune keeps a backfill's rebuild for ``protect_days`` (saying why), and the pool keeps a pruned
  version's index for the retention period;
* check_changes: skip when nothing changed (mirror, template, base, variables), bake when the
  mirror has an update or any input changed, backfills always bake, an existing version is kept.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from bakery import bake
from bakery.catalogue import parse_catalogue
from bakery.packages.manifest import Manifest, Package
from bakery.packages.pool import PackagePool, PooledPackage, PoolIndex
from bakery.packages.sbom import validate_sbom
from bakery.record import BakeRecord
from bakery.targets.local import GalleryError, LocalTarget

from tests.pkgmirror import LoopbackMirror, make_deb

DAY1 = datetime(2026, 11, 1, 2, 0, tzinfo=timezone.utc)
DAY2 = datetime(2026, 11, 2, 2, 0, tzinfo=timezone.utc)
IMAGE = "debian12-nginx"


class Log(list):
    def __call__(self, line: str) -> None:
        self.append(line)

    def text(self) -> str:
        return "\n".join(self)


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("BAKERY_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("BAKERY_GALLERY", raising=False)
    monkeypatch.delenv("BAKERY_POOL", raising=False)
    return tmp_path / "home"


def manifest(canary: str, nginx: str = "1.22.1-9+deb12u11") -> Manifest:
    return Manifest("deb", (Package("bakery-canary", "all", canary), Package("nginx", "amd64", nginx),
                            Package("libc6", "amd64", "2.36-9+deb12u13", "glibc")), "debian", "12")


def record(home: Path, version: str, m: Manifest, *, run: str, run_type: str = "manual",
           inputs: str = "current@20261101T020000Z", template: str = "sha256:t") -> BakeRecord:
    wd = home / "work" / IMAGE / version
    wd.mkdir(parents=True, exist_ok=True)
    (wd / "disk.qcow2").write_bytes(b"disk " + version.encode())
    path = m.save(wd / "packages.json")
    kind, _, ref = inputs.partition("@")
    return BakeRecord(
        image=IMAGE, version=version, target="local", template_digest=template, base_digest="sha256:b",
        variables_digest=bake.variables_digest({}), dag_run_id=run, run_type=run_type, packer_run_uuid=f"u-{run}",
        artifact_id=str(wd / "disk.qcow2"), smoke={"passed": True, "seconds": 30.0, "status": 200, "detail": "ok"},
        inputs={"kind": kind, "ref": ref, "label": inputs},
        packages={"manifest": str(path), "digest": m.digest, "count": len(m), "family": "deb"},
    )


def test_publish_stores_manifest_sbom_inputs_and_logs_the_diff(home):
    target = LocalTarget()
    target.publish(record(home, "2026.1101.200001", manifest("1.0"), run="r1"), Log())
    log = Log()
    target.publish(record(home, "2026.1102.200001", manifest("2.0"), run="r2"), log)
    vdir = target.gallery / IMAGE / "2026.1102.200001"
    meta = json.loads((vdir / "metadata.json").read_text())
    assert meta["inputs"]["label"] == "current@20261101T020000Z"
    assert meta["manifest_digest"] == manifest("2.0").digest and meta["package_count"] == 3
    assert meta["rebuilt_at"] is None
    assert Manifest.load(vdir / "packages.json") == manifest("2.0")
    sbom = (vdir / "sbom.cdx.json").read_text()
    validate_sbom(sbom)
    assert "pkg:deb/debian/bakery-canary@2.0" in sbom
    assert "packages 2026.1101.200001 -> 2026.1102.200001: 0 added, 0 removed, 1 upgraded, 0 downgraded" in log.text()
    assert "^ bakery-canary 1.0 -> 2.0 (all)" in log.text()


def test_replace_existing_replaces_a_version_and_is_needed_to(home):
    target = LocalTarget()
    target.publish(record(home, "2026.1101.200000", manifest("1.0"), run="nightly"), Log())
    again = record(home, "2026.1101.200000", manifest("1.0"), run="backfill-1", run_type="backfill",
                   inputs="pool@2026.1101.200000")
    with pytest.raises(GalleryError, match="already published"):
        target.publish(again, Log())
    target.publish(again, Log(), replace_existing=True)
    meta = target.published(IMAGE, "2026.1101.200000")
    assert meta["dag_run_id"] == "backfill-1" and meta["rebuilt_at"] and meta["inputs"]["kind"] == "pool"
    assert not [p for p in (target.gallery / IMAGE).iterdir() if p.name.startswith((".staging", ".trash"))]


def test_prune_keeps_a_backfills_rebuild_for_protect_days_and_the_pool_keeps_pruned_indexes(home, tmp_path):
    target = LocalTarget()
    pool = PackagePool(home / "pool")
    blob = pool.new_tmp()
    blob.write_bytes(b"deb")
    digest, size = pool.put_file(blob)
    for day, run_type in ((1, "backfill"), (2, "manual"), (3, "manual"), (4, "manual")):
        version = f"2026.110{day}.200000"
        target.publish(record(home, version, manifest("1.0"), run=f"r{day}", run_type=run_type), Log())
        pool.commit_index(PoolIndex(IMAGE, version, "x", None, {}, "", [PooledPackage("p", "1", "all", digest, size, "p.deb")]))
    spec = parse_catalogue({"images": {IMAGE: {"target": "local", "template": "debian12-nginx"}}})[IMAGE]
    log = Log()
    deleted = bake.prune(spec, 1, False, log, target, pool=pool)
    assert deleted == ["2026.1102.200000", "2026.1103.200000"]
    assert "keeping 2026.1101.200000 (rebuilt by a backfill at" in log.text()
    assert "backfill.protect_days=7" in log.text()
    assert pool.index(IMAGE, "2026.1102.200000").pruned_at and pool.index(IMAGE, "2026.1101.200000").pruned_at is None
    # after the protection ends it goes like any other
    later = datetime.now(timezone.utc) + timedelta(days=8)
    assert target.prune(IMAGE, 1, protect=set(), dry_run=True, log=Log(), now=later) == ["2026.1101.200000"]


@pytest.fixture
def canary(tmp_path) -> dict[str, Path]:
    return {v: make_deb("bakery-canary", v, tmp_path / "debs") for v in ("1.0", "2.0")}


def test_check_changes_skips_only_when_nothing_changed(home, tmp_path, canary):
    target = LocalTarget()
    with LoopbackMirror(tmp_path / "mirror") as mirror:
        mirror.publish([canary["1.0"]], when=DAY1)
        spec = parse_catalogue({"images": {IMAGE: {"target": "local", "template": "debian12-nginx", "packages": {
            "mirrors": [{"url": mirror.url, "suites": ["bookworm"], "trusted": True}]}}}})[IMAGE]
        latest = record(home, "2026.1101.200001", Manifest("deb", (Package("bakery-canary", "all", "1.0"),)), run="r1")
        target.publish(latest, Log())

        def check(version="2026.1102.200001", run_type="manual", template="sha256:t", **kw):
            rec = record(home, version, manifest("x"), run="new", run_type=run_type, template=template)
            return bake.check_changes(spec, {"record": rec.to_dict()}, log=Log(), target=target, **kw)

        same = check()
        assert same["build"] is False and same["compared_with"] == "2026.1101.200001"
        assert "nothing changed since 2026.1101.200001" in same["reasons"][0]
        assert check(force_rebuild=True)["build"] is True
        changed = check(template="sha256:other")
        assert changed["build"] is True and "template changed since 2026.1101.200001" in changed["reasons"][0]
        assert check(run_type="backfill", version="2026.1001.200000")["build"] is True
        existing = check(run_type="backfill", version="2026.1101.200001")
        assert existing["build"] is False and existing["existing"] is True
        assert "already in the gallery" in existing["reasons"][0] and "replace_existing" in existing["reasons"][0]
        assert check(run_type="backfill", version="2026.1101.200001", replace_existing=True)["build"] is True

        mirror.publish([canary["2.0"]], when=DAY2)  # the mirror moves
        moved = check()
        assert moved["build"] is True
        assert "1 package update(s) pending" in moved["reasons"][0] and "bakery-canary 1.0 -> 2.0" in moved["reasons"][0]
