"""tests/pkgmirror proven with the host's REAL apt (on a private apt tree; the host's apt is untouched).

The mirror serves the real bookworm closure of nginx plus a `bakery-canary` package: 1.0 on day 1,
2.0 (and no 1.0) on day 2. apt must update from it, pick the right candidate, and resolve and
download `nginx bakery-canary` on an EMPTY dpkg status (which proves the closure is complete);
the dated snapshot URLs must show the state of their time.

Needs network to deb.debian.org the first time (the .debs are then cached, see deb_cache_dir());
without it the tests FAIL with the reason, they never skip.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
import urllib.error
import urllib.request
from datetime import datetime, timezone
from email.utils import format_datetime
from pathlib import Path

import pytest

from tests.pkgmirror import ClosureError, LoopbackMirror, deb_cache_dir, debian_closure, make_deb
from tests.pkgmirror.apt import PrivateApt
from tests.pkgmirror.closure import sha256_of

DAY1 = datetime(2025, 1, 1, 2, 0, tzinfo=timezone.utc)
DAY2 = datetime(2025, 1, 2, 2, 0, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def nginx_closure() -> list[Path]:
    """The real bookworm .debs of `apt-get install nginx`, from the shared test cache."""
    start = time.monotonic()
    try:
        debs = debian_closure(["nginx"], deb_cache_dir())
    except ClosureError as exc:
        pytest.fail(f"the Debian package closure could not be fetched (network to deb.debian.org needed): {exc}")
    print(f"\nnginx closure: {len(debs)} .debs, {sum(d.stat().st_size for d in debs)} bytes, "
          f"{time.monotonic() - start:.1f}s")
    return debs


@pytest.fixture(scope="module")
def canary(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("canary")
    return {v: make_deb("bakery-canary", v, out, description=f"bakery canary {v}") for v in ("1.0", "2.0")}


@pytest.fixture
def mirror(tmp_path) -> LoopbackMirror:
    with LoopbackMirror(tmp_path / "mirror") as m:
        yield m


def _get(url: str, method: str = "GET", headers: dict | None = None) -> tuple[int, dict, bytes]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method=method, headers=headers or {})) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def test_closure_is_real_verified_and_cached(nginx_closure):
    names = {p.name.split("_")[0] for p in nginx_closure}
    assert {"nginx", "nginx-common", "libc6", "libssl3", "libpcre2-8-0", "zlib1g"} <= names
    mtimes = {p: p.stat().st_mtime_ns for p in nginx_closure}
    start = time.monotonic()
    again = debian_closure(["nginx"], deb_cache_dir())
    print(f"\ncached closure: {time.monotonic() - start:.1f}s")
    assert again == nginx_closure
    assert {p: p.stat().st_mtime_ns for p in again} == mtimes, "a cached .deb was downloaded again"


def test_make_deb_is_a_real_package(canary, tmp_path):
    fields = subprocess.run(["dpkg-deb", "-f", str(canary["1.0"])], capture_output=True, text=True, check=True).stdout
    assert "Package: bakery-canary\n" in fields and "Version: 1.0\n" in fields and "Architecture: all\n" in fields
    subprocess.run(["dpkg-deb", "-x", str(canary["2.0"]), str(tmp_path)], check=True)
    assert (tmp_path / "usr/share/bakery-canary/VERSION").read_text() == "2.0\n"
    contents = subprocess.run(["dpkg-deb", "-c", str(canary["1.0"])], capture_output=True, text=True).stdout
    assert "root/root" in contents


def test_live_mirror_moves_from_day1_to_day2(mirror, nginx_closure, canary, tmp_path):
    mirror.publish([*nginx_closure, canary["1.0"]], when=DAY1)
    apt = PrivateApt(tmp_path / "apt", mirror.url)

    start = time.monotonic()
    apt.ok("apt-get", "update")
    print(f"\napt-get update: {time.monotonic() - start:.1f}s")
    assert apt.policy("bakery-canary") == ("1.0", ["1.0"])
    assert any("/by-hash/SHA256/" in p for _, p, s in mirror.requests if s == 200), "apt did not use by-hash"

    mirror.reset_requests()
    apt.ok("apt-get", "install", "--download-only", "-y", "nginx", "bakery-canary")
    downloaded = apt.archives
    assert "bakery-canary_1.0_all.deb" in downloaded
    assert any(n.startswith("nginx_") for n in downloaded) and any(n.startswith("libc6_") for n in downloaded)
    assert set(downloaded) <= {p.name for p in [*nginx_closure, canary["1.0"]]}
    assert sorted(p.rsplit("/", 1)[1] for p in mirror.deb_requests()) == downloaded
    assert all(status == 200 for _, path, status in mirror.requests if path.endswith(".deb"))
    assert "/debian/pool/main/b/bakery-canary/bakery-canary_1.0_all.deb" in mirror.deb_requests()

    mirror.publish([*nginx_closure, canary["2.0"]], when=DAY2)
    apt.ok("apt-get", "update")
    assert apt.policy("bakery-canary") == ("2.0", ["2.0"])  # 1.0 is gone from the live mirror
    assert _get(f"{mirror.url}/pool/main/b/bakery-canary/bakery-canary_1.0_all.deb")[0] == 404
    assert _get(f"{mirror.url}/pool/main/b/bakery-canary/bakery-canary_2.0_all.deb")[0] == 200


def test_snapshots_show_the_state_of_their_time(mirror, nginx_closure, canary, tmp_path):
    mirror.publish([*nginx_closure, canary["1.0"]], when=DAY1)
    mirror.publish([*nginx_closure, canary["2.0"]], when=DAY2)
    assert mirror.snapshot_url(DAY1) == mirror.snapshot_template.format(timestamp="20250101T020000Z")

    for name, at, expected in [("between", datetime(2025, 1, 1, 12, tzinfo=timezone.utc), "1.0"),
                               ("at-day1", DAY1, "1.0"),
                               ("after", datetime(2025, 1, 3, tzinfo=timezone.utc), "2.0")]:
        apt = PrivateApt(tmp_path / name, mirror.snapshot_url(at))
        apt.ok("apt-get", "update")
        assert apt.policy("bakery-canary") == (expected, [expected]), name

    before = PrivateApt(tmp_path / "before", mirror.snapshot_url(datetime(2024, 12, 31, tzinfo=timezone.utc)))
    proc = before.run("apt-get", "update")
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "404" in proc.stderr, proc.stderr
    assert ("GET", "/archive/debian/20241231T000000Z/dists/bookworm/Release", 404) in mirror.requests

    between = mirror.snapshot_url(datetime(2025, 1, 1, 12, tzinfo=timezone.utc))
    assert _get(f"{between}/pool/main/b/bakery-canary/bakery-canary_1.0_all.deb")[0] == 200
    assert _get(f"{between}/pool/main/b/bakery-canary/bakery-canary_2.0_all.deb")[0] == 404


def test_http_details(mirror, canary):
    assert _get(f"{mirror.url}/dists/bookworm/Release")[0] == 404  # nothing published yet
    day1 = mirror.publish([canary["1.0"]], when=DAY1)
    status, headers, release = _get(f"{mirror.url}/dists/bookworm/Release")
    assert status == 200 and int(headers["Content-Length"]) == len(release)
    assert headers["Last-Modified"] == format_datetime(DAY1, usegmt=True)
    text = release.decode()
    for line in ("Suite: bookworm", "Codename: bookworm", "Architectures: amd64", "Components: main",
                 "Acquire-By-Hash: yes", "Date: Wed, 01 Jan 2025 02:00:00 UTC"):
        assert line in text.splitlines()
    listed = dict((name, sha) for sha, _, name in re.findall(r"^ ([0-9a-f]{64}) +(\d+) (\S+)$", text, re.M))
    assert set(listed) == {f"main/binary-amd64/Packages{ext}" for ext in ("", ".gz", ".xz")}
    assert re.findall(r"^ [0-9a-f]{32} +\d+ \S+$", text, re.M), "no MD5Sum list"
    for name in ("InRelease", "Release.gpg"):
        assert _get(f"{mirror.url}/dists/bookworm/{name}")[0] == 404

    status, headers, body = _get(f"{mirror.url}/dists/bookworm/main/binary-amd64/Packages", "HEAD")
    packages = (day1.path / "dists/bookworm/main/binary-amd64/Packages").read_bytes()
    assert status == 200 and body == b"" and int(headers["Content-Length"]) == len(packages)
    stanza = packages.decode()
    assert "Package: bakery-canary\nVersion: 1.0\n" in stanza
    assert f"SHA256: {sha256_of(canary['1.0'])}\n" in stanza
    assert "Filename: pool/main/b/bakery-canary/bakery-canary_1.0_all.deb\n" in stanza
    assert _get(f"{mirror.url}/dists/bookworm/Release",
                headers={"If-Modified-Since": format_datetime(DAY1, usegmt=True)})[0] == 304

    day1_xz = listed["main/binary-amd64/Packages.xz"]
    mirror.publish([canary["2.0"]], when=DAY2)
    by_hash = f"{mirror.url}/dists/bookworm/main/binary-amd64/by-hash/SHA256/{day1_xz}"
    assert _get(by_hash)[0] == 200, "by-hash files of the previous state must stay"
    assert (mirror.root / "current").resolve() == mirror.states[-1].path
    assert mirror.states[-1].packages == ("bakery-canary=2.0",)
    assert _get(f"{mirror.url}/../../etc/passwd")[0] == 404
    assert _get(f"http://127.0.0.1:{mirror.port}/elsewhere")[0] == 404
    with pytest.raises(ValueError):
        mirror.publish([canary["1.0"]], when=DAY1)  # not after the current state
