"""The guest's package fetch with a cold and a warm package cache, in one run (issue 11, part 3).

One guest is booted from the base image every local build starts from (QEMU, ``-snapshot``, the
base image's fw_cfg SSH key). Each round is what a build's provisioning does for packages, through
a **new** bakery package server (as each build starts its own) on one pool directory:

    rm -rf /var/lib/apt/lists/* ; apt-get clean      (the guest starts as a fresh build would)
    apt-get update                                     (timed in the guest)
    apt-get install --download-only <catalogue packages>

Rounds: cold (an empty pool: everything comes from the catalogue's mirrors), warm, then again with
a second empty pool: cold, warm; then, when the catalogue's mirrors name their keyring (``signed_by``),
warm twice more each way, alternately without it (apt-key, every key of ``trusted.gpg.d``) and with it.
Printed per round: the guest's ``apt-get update`` seconds, the install's seconds, and what the
package server fetched from the mirrors (bytes, requests) and served from the pool, and then the seconds of
the package cache alone (``apt-cache gencaches`` from the same lists: ``apt-get update`` removes and rebuilds
it every time, apt-private/private-update.cc), which bounds warm / cold from below whatever the fetch costs;
then each warm / cold ratio of ``apt-get update`` (goal <= 0.10), the bytes the warm rounds downloaded from the mirrors
(goal 0: a second bake downloads nothing) and the ratio of warm updates with signed_by / without. Also the package
server's answering time (summed from each request's arrival to its last byte), the part of the fetch a
cache can shorten: the rest of ``apt-get update`` is the guest's own work, the same warm or cold.
Measured in the guest under TCG (bookworm's apt 2.6): xz-decompressing and writing the 50 MB
Packages list of main, ``apt-key verify`` per InRelease (a shell script that dearmors every key of
``trusted.gpg.d`` before it runs gpgv; gpgv itself 0.3 s; ``signed-by``, which the shipped catalogue's
Debian mirrors now set, skips apt-key: a warm update 9.45 s instead of 11.6 s, 0.82 in one run) and the
package cache that ``apt-get update`` always throws away and rebuilds (7 to 9.5 s).
Keeping the guest's lists and caches between builds (the package server answering each unchanged
InRelease with 304) was tried and left out: lists ready in 11 s instead of 20 s at best, but 127 MB
to send back and forth, and Debian re-signs the -updates and -security InRelease several times a day,
so a nightly would take the slower path (restore, update, rebuild the cache, send) every night.

    source scripts/env.sh && python benchmarks/package_cache.py [image]
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "plugins")]

FW_CFG_KEY = "opt/bakery/authorized_keys"


def ssh(port: int, key: Path, command: str, timeout: float = 900) -> str:
    proc = subprocess.run(
        ["ssh", "-i", str(key), "-p", str(port), "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
         "-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR",
         "root@127.0.0.1", command],
        capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"guest: {command!r} -> {proc.returncode}: {proc.stderr[-2000:]}{proc.stdout[-2000:]}")
    return proc.stdout


def wait_ssh(vm, key: Path, deadline_s: float = 600) -> float:
    t0 = time.monotonic()
    while True:
        try:
            ssh(vm.port_for(22), key, "true", timeout=60)
            return time.monotonic() - t0
        except (RuntimeError, subprocess.TimeoutExpired):
            if not vm.is_running() or time.monotonic() - t0 > deadline_s:
                raise RuntimeError(f"no SSH into the guest:\n{vm.serial_tail()}") from None
            time.sleep(1)


def timed(port: int, key: Path, command: str) -> float:
    """``command``'s seconds as the guest's own clock measures them (no SSH set-up in it)."""
    out = ssh(port, key, f"s=$(date +%s.%N); {command} >/tmp/bench.out 2>&1 || {{ tail -20 /tmp/bench.out; exit 1; }}; "
                         "e=$(date +%s.%N); echo \"$s $e\"")
    start, end = (float(x) for x in out.split()[-2:])
    return end - start


def one_round(label: str, vm, key: Path, pool, spec, packages: str, mirrors=None) -> dict:
    from bakery.packages.inputs import Inputs, guest_apt_config
    from bakery.packages.server import PackageServer

    mirrors = spec.packages.mirrors if mirrors is None else mirrors
    urls = tuple(m.url for m in mirrors)
    inputs = Inputs("current", "bench", mirror_urls=urls)
    port = vm.port_for(22)
    with PackageServer(pool, mirrors=urls, log=lambda _: None,
                       index_max_age=spec.packages.index_max_age_hours * 3600) as srv:
        sources, conf = guest_apt_config(inputs, mirrors, srv.guest_url())
        ssh(port, key, "rm -rf /etc/apt/sources.list.d/* /var/lib/apt/lists/* /var/cache/apt/*.bin && apt-get clean"
                       f" && printf '%s' '{sources}' >/etc/apt/sources.list && printf '%s' '{conf}'"
                       " >/etc/apt/apt.conf.d/99bakery-build")
        update = timed(port, key, "apt-get -q update")
        install = timed(port, key, f"DEBIAN_FRONTEND=noninteractive apt-get -q -y install --download-only {packages}")
        counts = dict(srv.counts)
    # the package cache apt-get update ends with, from the same lists: apt removes and rebuilds it on every
    # update (apt-private/private-update.cc: RemoveCaches(), BuildCaches()), however the lists were fetched
    gencaches = timed(port, key, "rm -f /var/cache/apt/*.bin && apt-cache gencaches")
    row = {"round": label, "update_s": update, "install_s": install, "serve_s": srv.serve_seconds,
           "gencaches_s": gencaches, **counts}
    print(f"{label:>7}: apt-get update {update:6.1f} s (its package cache alone {gencaches:4.1f} s), install "
          f"--download-only {install:6.1f} s; the server answering "
          f"{srv.serve_seconds:6.2f} s; from the mirrors "
          f"{counts['bytes_upstream']:>11,} bytes in {counts['upstream']} fetches; from the pool: "
          f"{counts['cache_hits']} packages/by-hash indices, {counts['index_cache_hits']} by-name indices unasked, "
          f"{counts['revalidated']} revalidated (304)", flush=True)
    return row


def main() -> None:
    from bakery.catalogue import load_catalogue
    from bakery.packages.pool import PackagePool
    from bakery.qemu import QemuVM
    from bakery.sshkey import ephemeral_keypair

    image = sys.argv[1] if len(sys.argv) > 1 else "debian12-nginx"
    spec = load_catalogue()[image]
    if spec.target != "local" or not spec.packages.mirrors or spec.packages.family != "deb":
        raise SystemExit(f"{image}: this benchmark boots the local base image and needs deb mirrors")
    packages = str(spec.variables.get("packages", "nginx"))
    base = subprocess.run(["bash", str(REPO / "scripts" / "build-base-image.sh")], capture_output=True, text=True,
                          check=True).stdout.strip().splitlines()[-1]
    print(f"package cache of {image}: guest = base image {base}; packages {packages!r}; mirrors "
          f"{', '.join(m.url for m in spec.packages.mirrors)}; index_max_age_hours "
          f"{spec.packages.index_max_age_hours:g}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bakery-bench-pool-") as tmp, \
            ephemeral_keypair("bakery-bench-cache") as (private_key, public_key), \
            QemuVM(base, guest_port=22, fw_cfg={FW_CFG_KEY: public_key}, name="bench-package-cache") as vm:
        print(f"guest up (SSH) in {wait_ssh(vm, private_key):.1f} s", flush=True)
        for n in (1, 2):
            pool = PackagePool(Path(tmp) / f"pool{n}")
            rows.append(one_round(f"cold {n}", vm, private_key, pool, spec, packages))
            rows.append(one_round(f"warm {n}", vm, private_key, pool, spec, packages))
        keyed = []  # warm again, alternately without and with the catalogue's signed_by (on the last pool)
        if any(m.signed_by for m in spec.packages.mirrors):
            unsigned = tuple(replace(m, signed_by=None) for m in spec.packages.mirrors)
            for n in (1, 2):
                keyed.append((one_round(f"apt-key {n}", vm, private_key, pool, spec, packages, unsigned),
                              one_round(f"signed {n}", vm, private_key, pool, spec, packages)))
    ratios = [rows[i + 1]["update_s"] / rows[i]["update_s"] for i in (0, 2)]
    ratio = statistics.median(ratios)
    serve = [rows[i + 1]["serve_s"] / rows[i]["serve_s"] for i in (0, 2)]
    print(f"the package server's answering time (what a cache can shorten) warm / cold: "
          f"{', '.join(f'{r:.3f}' for r in serve)}; median {statistics.median(serve):.3f}")
    warm_bytes = [r["bytes_upstream"] for r in rows if r["round"].startswith("warm")]
    # a lower bound no package cache can pass while the guest runs apt-get update: the warm update's
    # package cache alone, against the cold update (the guest's list decompression comes on top)
    rebuilt = [rows[i + 1]["gencaches_s"] for i in (0, 2)]
    floor = [rebuilt[n] / rows[i]["update_s"] for n, i in enumerate((0, 2))]
    print(f"the package cache every apt-get update rebuilds, in the warm rounds: "
          f"{', '.join(f'{r:.1f}' for r in rebuilt)} s; against the cold "
          f"update: {', '.join(f'{r:.3f}' for r in floor)}; median {statistics.median(floor):.3f} (warm / cold "
          "cannot go below this with a fetch that took no time)")
    print(f"apt-get update warm / cold: {', '.join(f'{r:.3f}' for r in ratios)}; median {ratio:.3f} "
          f"(goal <= 0.10: {'met' if ratio <= 0.10 else 'NOT met'})")
    print(f"bytes the warm rounds (a second bake's packages) downloaded from the mirrors: {warm_bytes} "
          f"(goal 0: {'met' if not any(warm_bytes) else 'NOT met'})")
    if keyed:
        signed = [s["update_s"] / k["update_s"] for k, s in keyed]
        print(f"warm apt-get update with the mirrors' signed_by / without it (apt-key and every key of "
              f"trusted.gpg.d): {', '.join(f'{r:.3f}' for r in signed)}; median {statistics.median(signed):.3f}")
    else:
        print("the catalogue's mirrors have no signed_by: the comparison with apt-key was not run")


if __name__ == "__main__":
    main()
