"""Row 5 of issue #4: prune racing publish on one local gallery (separate processes).

Four publisher processes (three publishing new versions interleaved, one backfilling older
ones), each followed by its own prune that protects the version it just published (as the DAG
does), and two pruner processes pruning to ``keep=1`` in a loop; meanwhile a reader in the test,
without the lock as any consumer, follows ``latest`` continuously.

Guarantees: every publish succeeds (prune never deletes or cleans up a version being published);
``latest`` always names an existing, complete version (checksum); a pinned version and the
highest survive; at the end the gallery is consistent (no stale entries).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from bakery.record import BakeRecord
from bakery.targets.local import LocalTarget
from faultkit import python_script

IMAGE = "img"
PINNED = "2026.901.200000"
CHUNK = 2**20


def payload(version: str) -> bytes:
    return hashlib.sha256(version.encode()).digest() * (CHUNK // 32)


def digest(version: str) -> str:
    return hashlib.sha256(payload(version)).hexdigest()


WORKER = """
import hashlib, json, sys, time, traceback
from pathlib import Path
from bakery.record import BakeRecord
from bakery.targets.local import LocalTarget

role, gallery, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
target = LocalTarget(gallery)
result = {"published": [], "pruned": [], "errors": [], "rounds": 0}

def payload(version):
    return hashlib.sha256(version.encode()).digest() * (2**20 // 32)

try:
    if role == "publisher":
        for v in json.loads(sys.argv[4]):
            disk = out.parent / f"src-{v}.qcow2"
            disk.write_bytes(payload(v))
            rec = BakeRecord(image="img", version=v, target="local", template_digest="sha256:t", dag_run_id=f"run-{v}",
                             packer_run_uuid=f"u-{v}", artifact_id=str(disk),
                             smoke={"passed": True, "seconds": 1.0, "status": 200, "detail": "ok"})
            try:
                target.publish(rec, lambda m: None)
                result["published"].append(v)
                result["pruned"] += target.prune("img", 2, protect={v}, dry_run=False, log=lambda m: None)
            except Exception:
                result["errors"].append(traceback.format_exc())
    else:
        stop = out.parent / "stop"
        while not stop.exists():
            try:
                result["pruned"] += target.prune("img", 1, protect=set(), dry_run=False, log=lambda m: None)
                result["rounds"] += 1
            except Exception:
                result["errors"].append(traceback.format_exc())
            time.sleep(0.002)
finally:
    out.write_text(json.dumps(result))
"""


class LatestReader(threading.Thread):
    """Follows ``latest`` like a consumer (no lock) and records every moment it was not good."""

    def __init__(self, gallery: Path):
        super().__init__(daemon=True)
        self.link = gallery / IMAGE / "latest"
        self.samples = 0
        self.violations: list[str] = []
        self.stop = threading.Event()

    def check(self, version: str) -> str | None:
        d = self.link.parent / version
        try:
            meta = json.loads((d / "metadata.json").read_text())
            data = (d / "disk.qcow2").read_bytes()
        except OSError as e:
            return f"latest -> {version}: {e}"
        if meta["version"] != version or meta["size_bytes"] != len(data) or hashlib.sha256(data).hexdigest() != digest(version):
            return f"latest -> {version}: incomplete or wrong content"
        return None

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                before = os.readlink(self.link)
            except OSError as e:
                self.violations.append(f"latest unreadable: {e}")
                continue
            problem = self.check(before)
            after = os.readlink(self.link)
            # latest only moves up (to the highest); unchanged around the check means it named
            # that version the whole time
            if problem and after == before:
                self.violations.append(problem)
            self.samples += 1


@pytest.mark.guarantee("prune-safety")
def test_prune_racing_publishes_keeps_the_gallery_consistent(tmp_path):
    gallery = tmp_path / "gallery"
    target = LocalTarget(gallery)
    src = tmp_path / "pinned.qcow2"
    src.write_bytes(payload(PINNED))
    target.publish(BakeRecord(image=IMAGE, version=PINNED, target="local", template_digest="sha256:t",
                              dag_run_id="run-pinned", packer_run_uuid="u-pinned", artifact_id=str(src),
                              smoke={"passed": True, "seconds": 1.0, "status": 200, "detail": "ok"}), print)
    meta_path = gallery / IMAGE / PINNED / "metadata.json"
    meta_path.write_text(json.dumps({**json.loads(meta_path.read_text()), "pinned": True}))

    new = [f"2026.11{d:02d}.200000" for d in range(1, 25)]
    backfill = [f"2026.10{d:02d}.200000" for d in range(12, 0, -1)]
    plans = [new[0::3], new[1::3], new[2::3], backfill]
    script = python_script(tmp_path / "worker.py", WORKER)
    reader = LatestReader(gallery)
    procs = []
    reader.start()
    try:
        for i, plan in enumerate(plans):
            d = tmp_path / f"pub{i}"
            d.mkdir()
            procs.append(("publisher", d / "result.json", subprocess.Popen(
                [sys.executable, str(script), "publisher", str(gallery), str(d / "result.json"), json.dumps(plan)])))
        for i in range(2):
            d = tmp_path / f"pruner{i}"
            d.mkdir()
            procs.append(("pruner", d / "result.json", subprocess.Popen(
                [sys.executable, str(script), "pruner", str(gallery), str(d / "result.json")])))
        for role, _, p in procs:
            if role == "publisher":
                assert p.wait(300) == 0
        for i in range(2):
            (tmp_path / f"pruner{i}" / "stop").touch()
        for _, _, p in procs:
            assert p.wait(60) == 0
    finally:
        reader.stop.set()
        reader.join(10)
        for _, _, p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    results = [(role, json.loads(out.read_text())) for role, out, _ in procs]
    errors = [e for _, r in results for e in r["errors"]]
    assert errors == [], errors[0]
    published = sorted(v for role, r in results if role == "publisher" for v in r["published"])
    assert published == sorted(new + backfill), "a publish did not complete"
    assert sum(r["rounds"] for role, r in results if role == "pruner") > 10, "the pruners did not race"
    pruned = [v for _, r in results for v in r["pruned"]]
    assert PINNED not in pruned and new[-1] not in pruned

    assert reader.samples > 50 and reader.violations == [], reader.violations[:5]
    visible = [v.version for v in target.list_versions(IMAGE)]
    assert PINNED in visible and visible[-1] == new[-1]
    assert target.latest(IMAGE) == new[-1]
    for v in visible:  # every visible version is complete
        assert hashlib.sha256((gallery / IMAGE / v / "disk.qcow2").read_bytes()).hexdigest() == digest(v)
    entries = sorted(p.name for p in (gallery / IMAGE).iterdir())
    assert entries == sorted([*visible, "latest", ".lock"]), entries
    assert set(visible) | set(pruned) == set(published) | {PINNED}  # nothing vanished unaccounted
    assert not set(visible) & set(pruned)
    # one last prune to one version leaves the pinned one and the highest (= latest)
    target.prune(IMAGE, 1, protect=set(), dry_run=False, log=print)
    assert [v.version for v in target.list_versions(IMAGE)] == [PINNED, new[-1]] and target.latest(IMAGE) == new[-1]
