"""Gallery storage: bytes per local version and the boot of the stored disk, the old layout against
the one ``publish`` stores now, in one run.

* **old layout**: Packer's output as it is, which ``publish`` used to copy byte for byte: a qcow2
  with uncompressed clusters. Packer's qemu builder makes it with ``qemu-img convert -O qcow2``
  (its compaction step), so the benchmark makes it the same way from the input disk.
* **stored layout**: what ``publish`` writes now (``bakery.targets.local.store_disk``): the same qcow2
  with zstd-compressed clusters, self-contained (no backing file), made from the old layout.

The input is one baked disk of the image (an argument, or by default the newest version of the image
in the local gallery, whichever layout it has). Then, alternating old/stored for ``rounds`` rounds,
each disk is booted the way the smoke test boots (the bake_overhead benchmark's ``boot_to_http``:
the smoke test's QEMU options, ``-snapshot``, polled with the smoke test's HTTP check) and timed to
the catalogue's expected answer. Goals (issue 11): stored bytes <= 0.4x the old layout's, the stored
disk's boot to HTTP within 10 % of the old layout's (medians, same run).

    source scripts/env.sh && python benchmarks/gallery_storage.py [image] [disk.qcow2] [rounds]
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "plugins"), str(REPO / "benchmarks")]


def newest_published(image: str) -> Path:
    from bakery.targets.local import LocalTarget

    target = LocalTarget()
    versions = target.list_versions(image)
    if not versions:
        raise SystemExit(f"no version of {image} in {target.gallery}: bake one first (scripts/bake.sh) or name a disk")
    return target.gallery / image / versions[-1].version / "disk.qcow2"


def main() -> None:
    from bake_overhead import boot_to_http
    from bakery.accel import detect_accelerator
    from bakery.catalogue import load_catalogue
    from bakery.targets.local import LocalTarget, store_disk

    image = sys.argv[1] if len(sys.argv) > 1 else "debian12-nginx"
    source = Path(sys.argv[2]) if len(sys.argv) > 2 and sys.argv[2] else newest_published(image)
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    spec = load_catalogue()[image]
    target = LocalTarget()
    accelerator = detect_accelerator()
    with tempfile.TemporaryDirectory(prefix="bakery-storage-") as tmp_s:
        tmp = Path(tmp_s)
        old, stored = tmp / "old.qcow2", tmp / "stored.qcow2"
        t0 = time.monotonic()
        subprocess.run(["qemu-img", "convert", "-q", "-O", "qcow2", str(source), str(old)], check=True)
        made_old = time.monotonic() - t0
        t0 = time.monotonic()
        how = store_disk(old, stored)
        made_stored = time.monotonic() - t0
        sizes = {"old": old.stat().st_size, "stored": stored.stat().st_size}
        print(f"{image}: from {source} (accelerator {accelerator})", flush=True)
        print(f"old layout (Packer's output, copied as it was): {sizes['old']} bytes ({sizes['old'] / 2**20:.0f} MiB; "
              f"made in {made_old:.1f} s)", flush=True)
        print(f"stored layout ({how}): {sizes['stored']} bytes ({sizes['stored'] / 2**20:.0f} MiB; "
              f"store_disk took {made_stored:.1f} s)", flush=True)
        ratio = sizes["stored"] / sizes["old"]
        print(f"bytes per version: stored / old = {ratio:.3f} (goal <= 0.4: {'met' if ratio <= 0.4 else 'NOT met'})",
              flush=True)
        boots: dict[str, list[float]] = {"old": [], "stored": []}
        for n in range(1, rounds + 1):
            for name, disk in (("old", old), ("stored", stored)):
                seconds = boot_to_http(disk, spec.smoke_test, target.vm_memory_mb, target.vm_cpus, accelerator, tmp)
                boots[name].append(seconds)
                print(f"round {n}: {name} disk boot to HTTP {seconds:.1f} s", flush=True)
        med = {k: statistics.median(v) for k, v in boots.items()}
        boot_ratio = med["stored"] / med["old"]
        print(f"boot to HTTP, medians of {rounds}: stored {med['stored']:.1f} s / old {med['old']:.1f} s = "
              f"{boot_ratio:.3f} (goal within 10 %: {'met' if abs(boot_ratio - 1) <= 0.10 else 'NOT met'})", flush=True)


if __name__ == "__main__":
    main()
