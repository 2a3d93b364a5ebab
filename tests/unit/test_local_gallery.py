"""The local gallery: atomic, idempotent publish; latest marker; prune policy."""

import json
import os
import subprocess
import threading
from pathlib import Path

import pytest

from bakery.record import BakeRecord
from bakery.targets.local import GalleryError, LocalTarget


def make_record(tmp_path, version, run="run-1", uuid="u-1", passed=True, payload=b"disk"):
    disk = tmp_path / "work" / version / "out.qcow2"
    disk.parent.mkdir(parents=True, exist_ok=True)
    disk.write_bytes(payload + version.encode())
    return BakeRecord(
        image="img", version=version, target="local", template_digest="sha256:t",
        base_digest="sha256:b", dag_run_id=run, run_type="scheduled", packer_run_uuid=uuid,
        artifact_id=str(disk), smoke={"passed": passed, "seconds": 12.5, "status": 200, "detail": "ok"},
    )


@pytest.fixture
def target(tmp_path):
    return LocalTarget(tmp_path / "gallery")


def visible(target):
    return [v.version for v in target.list_versions("img")]


def test_publish_writes_disk_and_metadata_and_latest(tmp_path, target):
    rec = make_record(tmp_path, "2026.1128.200000")
    out = target.publish(rec, print)
    meta = json.loads((target.gallery / "img" / "2026.1128.200000" / "metadata.json").read_text())
    assert out == str(target.gallery / "img" / "2026.1128.200000")
    for key, want in {"version": "2026.1128.200000", "template_digest": "sha256:t", "base_digest": "sha256:b",
                      "packer_run_uuid": "u-1", "dag_run_id": "run-1", "run_type": "scheduled"}.items():
        assert meta[key] == want
    assert meta["smoke_test"]["passed"] is True and meta["smoke_test"]["seconds"] == 12.5
    assert meta["size_bytes"] == len(b"disk2026.1128.200000") and meta["created"]
    assert (target.gallery / "img" / "2026.1128.200000" / "disk.qcow2").read_bytes() == b"disk2026.1128.200000"
    assert target.latest("img") == "2026.1128.200000"


def real_qcow2(path, mib=32):
    """A qcow2 as Packer leaves one (uncompressed clusters): text, zeros and random bytes."""
    raw = path.with_suffix(".raw")
    with open(raw, "wb") as fh:
        fh.write(b"nginx welcome page " * (mib * 2**20 // 4 // 19))
        fh.seek(mib * 2**20 // 2)
        fh.write(os.urandom(mib * 2**20 // 8))
        fh.truncate(mib * 2**20)
    subprocess.run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", str(raw), str(path)], check=True)
    raw.unlink()
    return path


@pytest.mark.needs_tools("qemu-img")
def test_a_qcow2_is_stored_with_zstd_compressed_clusters_self_contained_and_equal(tmp_path, target):
    rec = make_record(tmp_path, "2026.1128.200000")
    src = real_qcow2(Path(rec.artifact_id))
    lines = []
    target.publish(rec, lines.append)
    disk = target.gallery / "img" / rec.version / "disk.qcow2"
    info = json.loads(subprocess.run(["qemu-img", "info", "--output", "json", str(disk)], capture_output=True,
                                     text=True, check=True).stdout)
    assert info["format"] == "qcow2" and info["format-specific"]["data"]["compression-type"] == "zstd"
    assert "backing-filename" not in info, "a published version must boot on its own"
    same = subprocess.run(["qemu-img", "compare", "-q", str(src), str(disk)], capture_output=True, text=True, check=False)
    assert same.returncode == 0, same.stdout + same.stderr  # the guest sees the same bytes
    assert disk.stat().st_size < 0.5 * src.stat().st_size, (disk.stat().st_size, src.stat().st_size)
    assert target.metadata("img", rec.version)["size_bytes"] == disk.stat().st_size
    assert any(f"-> {disk.stat().st_size} bytes (qcow2, zstd-compressed clusters)" in ln for ln in lines), lines
    assert target.check_promotable("img", rec.version, print) == []  # qemu-img check of the stored disk


@pytest.mark.needs_tools("qemu-img")
def test_a_qcow2_qemu_img_cannot_read_fails_the_publish_with_its_message_and_leaves_nothing(tmp_path, target):
    rec = make_record(tmp_path, "2026.1128.200000", payload=b"QFI\xfb" + b"\0" * 60)  # a qcow2 header, no more
    with pytest.raises(GalleryError, match=r"qemu-img convert of .*out\.qcow2 to .*disk\.qcow2 failed \(exit 1\)"):
        target.publish(rec, print)
    assert visible(target) == [] and [p.name for p in (target.gallery / "img").iterdir()] == [".lock"]


def test_republish_same_run_is_a_noop_and_other_run_is_refused(tmp_path, target):
    rec = make_record(tmp_path, "2026.1128.200000")
    target.publish(rec, print)
    meta_before = (target.gallery / "img" / rec.version / "metadata.json").read_text()
    target.publish(rec, print)
    assert (target.gallery / "img" / rec.version / "metadata.json").read_text() == meta_before
    other = make_record(tmp_path, "2026.1128.200000", run="run-2", uuid="u-2", payload=b"other")
    with pytest.raises(GalleryError, match="already published .* by DAG run 'run-1'.*immutable"):
        target.publish(other, print)
    assert (target.gallery / "img" / rec.version / "disk.qcow2").read_bytes() == b"disk2026.1128.200000"


@pytest.mark.guarantee("smoke-test-fails")
def test_failed_smoke_test_is_never_published(tmp_path, target):
    with pytest.raises(GalleryError, match="smoke test did not pass"):
        target.publish(make_record(tmp_path, "2026.1128.200000", passed=False), print)
    assert visible(target) == []


def test_latest_is_highest_version_numerically_not_last_published(tmp_path, target):
    for v in ["2026.1128.200000", "2026.1128.1030001", "2026.305.200000"]:
        target.publish(make_record(tmp_path, v), print)
    assert visible(target) == ["2026.305.200000", "2026.1128.200000", "2026.1128.1030001"]
    assert target.latest("img") == "2026.1128.1030001"


@pytest.mark.guarantee("publish-killed-local")
def test_crash_during_publish_leaves_no_visible_version(tmp_path, target, monkeypatch):
    rec = make_record(tmp_path, "2026.1128.200000")
    real_rename = os.rename

    def dying_rename(src, dst):
        if ".staging-" in str(src):
            raise KeyboardInterrupt("worker died")
        return real_rename(src, dst)

    monkeypatch.setattr(os, "rename", dying_rename)
    with pytest.raises(KeyboardInterrupt):
        target.publish(rec, print)
    monkeypatch.setattr(os, "rename", real_rename)
    assert visible(target) == [] and target.latest("img") is None
    assert not [p for p in (target.gallery / "img").iterdir() if p.name.startswith(".staging")]
    target.publish(rec, print)  # the retry completes it
    assert visible(target) == ["2026.1128.200000"]


def test_concurrent_publishes_of_distinct_versions_all_land(tmp_path, target):
    recs = [make_record(tmp_path, f"2026.1128.{i}0") for i in range(1, 9)]
    threads = [threading.Thread(target=target.publish, args=(r, lambda m: None)) for r in recs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(visible(target)) == 8 and target.latest("img") == "2026.1128.80"


@pytest.mark.guarantee("prune-safety")
def test_prune_keeps_newest_protects_current_latest_and_pinned(tmp_path, target):
    versions = [f"2026.{d}.200000" for d in (1101, 1102, 1103, 1104, 1105, 1106)]
    for v in versions:
        target.publish(make_record(tmp_path, v), print)
    meta_path = target.gallery / "img" / versions[0] / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["pinned"] = True
    meta_path.write_text(json.dumps(meta))
    logs = []
    deleted = target.prune("img", 2, protect={versions[2]}, dry_run=True, log=logs.append)
    assert deleted == [versions[1], versions[3]]
    assert visible(target) == versions  # dry run deleted nothing
    assert any("would delete 2026.1102.200000" in m for m in logs)
    logs.clear()
    deleted = target.prune("img", 2, protect={versions[2]}, dry_run=False, log=logs.append)
    assert deleted == [versions[1], versions[3]]
    assert visible(target) == [versions[0], versions[2], versions[4], versions[5]]
    assert target.latest("img") == versions[5]
    assert sum("deleted" in m for m in logs) == 2
    assert not (target.gallery / "img" / versions[1]).exists()


@pytest.mark.guarantee("prune-safety")
def test_prune_never_deletes_the_highest_even_if_protect_is_older(tmp_path, target):
    for v in ["2026.1101.0", "2026.1102.0", "2026.1103.0"]:
        target.publish(make_record(tmp_path, v), print)
    assert target.prune("img", 1, protect={"2026.1101.0"}, dry_run=False, log=print) == ["2026.1102.0"]
    assert visible(target) == ["2026.1101.0", "2026.1103.0"]
    with pytest.raises(ValueError, match="keep must be at least 1"):
        target.prune("img", 0, protect=set(), dry_run=False, log=print)
