"""Prune at scale: an image with 1,000 gallery image versions pruned to 10 on Azure (the ARM emulator),
against a serial baseline in the same run.

The emulator behaves like Azure where it matters for prune: each version delete is a long-running
operation of ``DELETE_S`` emulated seconds (about a minute, as Azure takes), and version deletes are
throttled by a token bucket (``BUCKET`` at once, refilled ``REFILL_PER_MIN`` a minute): past it ARM
answers 429 with ``Retry-After``. Its clock runs ``scale`` times faster than real time, so a minute of
Azure is ``60 / scale`` real seconds (reads are not throttled here: Azure's read limits are far higher).

Both runs use the real Azure target (``AzureTarget.prune``) through the real SDK: the serial baseline
with ``azure.prune.concurrency: 1``, then the same gallery again with the catalogue's default
(``CONCURRENCY``). Printed: wall time of each and their ratio, the peak number of deletes in flight
(from the emulator's own operations), the 429s ARM answered, and that exactly the 10 newest are left.

    python benchmarks/prune_scale.py [versions] [scale]
"""

from __future__ import annotations

import dataclasses
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "plugins")]

DELETE_S = 60.0  # emulated seconds per version delete
BUCKET, REFILL_PER_MIN = 24, 12  # version deletes: token bucket (emulated minutes)
KEEP = 10
VERSIONS_PATH = r"/galleries/[^/]+/images/[^/]+/versions/[^/]+$"


def seed(world, target, n: int) -> list[str]:
    """``n`` published versions (Succeeded, published two days ago) from one source image."""
    from tests.azure_emulator.world import GALLERY, GALLERY_RG, IMAGES_RG

    source = world.make_managed_image("seed", "1.0.0", IMAGES_RG)  # not one of the bakery's: prune keeps it
    versions = [f"2026.{1 + i // 1000}.{i % 1000}" for i in range(n)]
    body = {"location": world.location, "tags": {"smoke_test": "passed"},
            "properties": {"storageProfile": {"source": {"id": source}},
                           "publishingProfile": {"targetRegions": [{"name": world.location}]}}}
    az = world.clients()
    try:
        def put(v: str) -> None:
            az.compute.gallery_image_versions.begin_create_or_update(GALLERY_RG, GALLERY, target.cfg.gallery.image_definition,
                                                                     v, body, polling=False)
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(put, versions))
    finally:
        az.close()
    old = (datetime.now(UTC) - timedelta(days=2)).isoformat()
    with world.emu.arm.lock:  # as if published two days ago and replicated
        for res in world.emu.state.all():
            if res.type.lower().endswith("galleries/images/versions"):
                res.op = None
                res.properties["provisioningState"] = "Succeeded"
                res.properties["publishingProfile"]["publishedDate"] = old
    return versions


def peak_in_flight(arm, since: float) -> int:
    """The most version deletes ARM had running at once (its operations' start and end times)."""
    events = []
    for op in list(arm.ops.values()):
        if op.method == "DELETE" and "/versions/" in op.resource_id and op.started >= since:
            events += [(op.started, 1), (op.ended if op.ended is not None else float("inf"), -1)]
    peak = now = 0
    for _, delta in sorted(events, key=lambda e: (e[0], e[1])):
        now += delta
        peak = max(peak, now)
    return peak


def run(world, spec, n: int, concurrency: int) -> dict:
    from bakery.targets.azure import AzureTarget

    cfg = dataclasses.replace(spec.azure, prune_concurrency=concurrency, prune_min_age_hours=24)
    target = AzureTarget(dataclasses.replace(spec, azure=cfg), world.clients, progress_interval=0.05)
    try:
        versions = seed(world, target, n)
        throttled_before = sum(1 for m, _, s in world.emu.faults.injected if m == "DELETE" and s == 429)
        since = world.emu.arm.clock()
        lines: list[str] = []
        t0 = time.monotonic()
        deleted = target.prune(spec.name, KEEP, protect=set(), dry_run=False, log=lines.append)
        wall = time.monotonic() - t0
        left = [v.version for v in target.list_versions(spec.name)]
    finally:
        target.close()
    assert left == versions[-KEEP:], f"left {left[:3]}... ({len(left)}), expected the {KEEP} newest"
    return {"wall": wall, "deleted": len(deleted), "peak": peak_in_flight(world.emu.arm, since),
            "throttled": sum(1 for m, _, s in world.emu.faults.injected if m == "DELETE" and s == 429) - throttled_before}


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    scale = float(sys.argv[2]) if len(sys.argv) > 2 else 60.0
    from bakery.catalogue import AzureSpec, parse_catalogue

    from tests.azure_emulator.dagrun import IMAGE, catalogue_entry
    from tests.azure_emulator.server import ArmEmulator
    from tests.azure_emulator.world import AzureWorld

    print(f"{n} versions, prune to keep {KEEP}; a version delete takes {DELETE_S:.0f} emulated s; version deletes "
          f"throttled at {BUCKET} at once + {REFILL_PER_MIN}/min (429 + Retry-After); emulator clock {scale:g}x real")
    results = {}
    for label, concurrency in (("serial", 1), ("default", AzureSpec.prune_concurrency)):
        # Retry-After of the delete's status: 1 real second (the SDK reads it as an integer)
        emu = ArmEmulator(page_size=100, retry_after=1, time_scale=scale, require_issued_tokens=True,
                          background_seconds=None)
        try:
            emu.faults.slow_lro(DELETE_S, method="DELETE", path=VERSIONS_PATH)
            emu.faults.throttle(bucket=BUCKET, refill_per_second=REFILL_PER_MIN / 60, method="DELETE",
                                path=VERSIONS_PATH)
            world = AzureWorld(emu)
            world.create_infrastructure()
            spec = parse_catalogue({"version": 1, "images": {IMAGE: catalogue_entry(world)}})[IMAGE]
            r = results[label] = run(world, spec, n, concurrency)
        finally:
            emu.stop()
        print(f"{label:8s} (concurrency {concurrency:2d}): {r['deleted']} deleted in {r['wall']:.1f} s real "
              f"({r['wall'] * scale / 3600:.1f} h at Azure's speed), peak {r['peak']} deletes in flight, "
              f"{r['throttled']} answered 429")
    ratio = results["default"]["wall"] / results["serial"]["wall"]
    print(f"default / serial wall time: {ratio:.3f} (goal <= 0.125: {'met' if ratio <= 0.125 else 'NOT met'}); "
          f"peak in flight {results['default']['peak']} <= {AzureSpec.prune_concurrency}: "
          f"{'yes' if results['default']['peak'] <= AzureSpec.prune_concurrency else 'NO'}; "
          f"429s handled without failing: {results['default']['throttled']}")


if __name__ == "__main__":
    main()
