"""Package pool deduplication: what three consecutive versions cost in the pool.

Three "nightlies" install `nginx bakery-canary` with the host's real apt (on a private apt tree, no
VM) through the bakery's package server in record mode, from the loopback mirror of the tests
(the real bookworm packages nginx needs, and a canary package that gets a new version every day:
the shape of a nightly where one package was updated). Each night's packages become that
version's pool index, exactly as a build's do.

    python benchmarks/pool_dedup.py [nights]

Prints, per night, the packages and bytes of its index and what the pool grew by; then the pool
size against the sum of the versions' packages (the dedup ratio) and against one version's.
"""

from __future__ import annotations

import sys
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "plugins")]

from bakery.packages.inputs import Inputs, Mirror, guest_apt_config  # noqa: E402
from bakery.packages.pool import PackagePool, PooledPackage, PoolIndex  # noqa: E402
from bakery.packages.server import PackageServer  # noqa: E402

from tests.pkgmirror import LoopbackMirror, deb_cache_dir, debian_closure, make_deb  # noqa: E402
from tests.pkgmirror.apt import PrivateApt  # noqa: E402


def main() -> int:
    nights = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    closure = debian_closure(["nginx"], deb_cache_dir())
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        pool = PackagePool(root / "pool")
        start = datetime.now(timezone.utc) - timedelta(days=nights)
        sizes: list[int] = []
        print(f"{nights} consecutive versions through the package server (record mode), real apt, no VM:")
        with LoopbackMirror(root / "mirror") as mirror:
            mirrors = [Mirror(mirror.url, ("bookworm",), trusted=True)]
            for night in range(1, nights + 1):
                canary = make_deb("bakery-canary", f"{night}.0", root / "debs")
                mirror.publish([*closure, canary], when=start + timedelta(days=night))
                before = pool.size()
                with PackageServer(pool, mirrors=[mirror.url]) as srv:
                    sources, _ = guest_apt_config(Inputs("current", "x", mirror_urls=(mirror.url,)), mirrors, srv.url())
                    apt = PrivateApt(root / f"apt{night}", sources=sources)
                    apt.ok("apt-get", "update")
                    apt.ok("apt-get", "install", "-y", "--download-only", "nginx", "bakery-canary")
                    served = list(srv.fetched.values())
                version = f"2026.{1100 + night}.200000"
                index = PoolIndex("bench", version, "x", None, {}, "nginx bakery-canary",
                                  [PooledPackage(s.name, s.version, s.arch, s.sha256, s.size, s.filename) for s in served])
                pool.commit_index(index)
                size = sum(p.size for p in index.packages)
                sizes.append(size)
                print(f"  {version}: {len(index.packages)} packages, {size / 1e6:.2f} MB; pool grew by "
                      f"{(pool.size() - before) / 1e6:.2f} MB ({srv.counts['cache_hits']} served from the pool)")
        total = pool.size()
        print(f"pool size               {total / 1e6:.2f} MB")
        print(f"sum of the versions     {sum(sizes) / 1e6:.2f} MB   pool/sum = {total / sum(sizes):.3f} "
              f"(dedup factor {sum(sizes) / total:.2f}x)")
        print(f"one version's packages  {sizes[-1] / 1e6:.2f} MB   pool/one version = {total / sizes[-1]:.3f} "
              f"(goal < 1.3)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
