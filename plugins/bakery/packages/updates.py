"""Pending package updates of a published version, from the mirrors' current indices (no VM).

For each mirror and suite: the (In)Release file, fresh; from it the SHA256 of
``<component>/binary-<arch>/Packages.xz`` (or ``.gz``, or plain), fetched by hash when the archive
offers it and kept in the pool by content (an unchanged index is never downloaded twice). Only the
stanzas of packages in the manifest are read; the candidate of a package is its highest version
over all suites, compared with ``python-debian`` the way apt does. A package is pending when its
candidate is newer than the installed version: what ``apt-get full-upgrade`` would take.

(Signatures are not checked here: this is a cheap "is there anything new" probe; the build itself
installs through apt, which verifies them.) No Airflow import here.
"""

from __future__ import annotations

import gzip
import lzma
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Callable, Sequence

from bakery.packages.inputs import Mirror
from bakery.packages.manifest import Change, Manifest, compare_versions
from bakery.packages.pool import PackagePool

TIMEOUT = 60
_INDEX_NAMES = (("Packages.xz", lzma.decompress), ("Packages.gz", gzip.decompress), ("Packages", bytes))


class UpdateCheckError(RuntimeError):
    pass


@dataclass
class UpdateCheck:
    pending: list[Change] = field(default_factory=list)
    indices: list[str] = field(default_factory=list)  # what was read, for the log and the XCom
    not_found: list[str] = field(default_factory=list)  # installed packages no mirror lists

    def lines(self, limit: int = 20) -> list[str]:
        out = [f"{c.name} {c.old} -> {c.new} ({c.arch})" for c in self.pending[:limit]]
        if len(self.pending) > limit:
            out.append(f"... and {len(self.pending) - limit} more")
        return out


def _get(url: str) -> bytes | None:
    req = urllib.request.Request(url, headers={"User-Agent": "image-bakery-update-check"})
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT) as resp:  # noqa: S310 - the catalogue's mirrors
            return resp.read()
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise UpdateCheckError(f"{url}: HTTP {exc.code}") from None
    except urllib.error.URLError as exc:
        raise UpdateCheckError(f"{url}: {exc.reason}") from None


def _release(mirror: Mirror, suite: str):
    from debian.deb822 import Release

    base = f"{mirror.url.rstrip('/')}/dists/{suite}"
    for name in ("InRelease", "Release"):
        body = _get(f"{base}/{name}")
        if body is not None:
            return Release(body.decode("utf-8", "replace")), f"{base}/{name}"
    raise UpdateCheckError(f"{base}: neither InRelease nor Release exists (is the suite {suite!r} right?)")


def _packages_index(mirror: Mirror, suite: str, component: str, arch: str, pool: PackagePool) -> tuple[bytes, str]:
    release, where = _release(mirror, suite)
    listed = {e["name"]: e for e in release.get("SHA256", [])}
    by_hash = str(release.get("Acquire-By-Hash", "")).lower() == "yes"
    base = f"{mirror.url.rstrip('/')}/dists/{suite}"
    for name, decompress in _INDEX_NAMES:
        rel = f"{component}/binary-{arch}/{name}"
        entry = listed.get(rel)
        if entry is None:
            continue
        digest = entry["sha256"]
        if pool.has_blob(digest):
            raw = pool.blob_path(digest).read_bytes()
        else:
            url = f"{base}/{component}/binary-{arch}/by-hash/SHA256/{digest}" if by_hash else f"{base}/{rel}"
            raw = _get(url)
            if raw is None:
                raise UpdateCheckError(f"{url}: listed in {where} but not found")
            tmp = pool.new_tmp()
            tmp.write_bytes(raw)
            pool.put_file(tmp, expect_sha256=digest)
        return decompress(raw), f"{base}/{rel}"
    raise UpdateCheckError(f"{where} lists no {component}/binary-{arch}/Packages index")


def _versions(index: bytes, names: set[str]) -> dict[tuple[str, str], str]:
    """(name, arch) -> version for the stanzas of ``names`` (a fast scan: only those are parsed)."""
    out: dict[tuple[str, str], str] = {}
    for stanza in index.split(b"\n\n"):
        if not stanza.startswith(b"Package: "):
            stanza = stanza.lstrip(b"\n")
            if not stanza.startswith(b"Package: "):
                continue
        end = stanza.find(b"\n")
        name = stanza[9:end if end > 0 else None].decode().strip()
        if name not in names:
            continue
        fields = {}
        for line in stanza.split(b"\n"):
            key, sep, value = line.partition(b": ")
            if sep and key in (b"Version", b"Architecture"):
                fields[key] = value.decode().strip()
        if b"Version" in fields:
            out[(name, fields.get(b"Architecture", ""))] = fields[b"Version"]
    return out


def pending_updates(manifest: Manifest, mirrors: Sequence[Mirror], pool: PackagePool, *, arch: str = "amd64",
                    log: Callable[[str], None] = print) -> UpdateCheck:
    if manifest.family != "deb":
        raise UpdateCheckError(f"pending-update checks read Debian archives; this manifest is {manifest.family}")
    if not mirrors:
        raise UpdateCheckError("the catalogue lists no package mirrors for this image")
    names = manifest.names()
    candidates: dict[tuple[str, str], str] = {}
    check = UpdateCheck()
    for mirror in mirrors:
        for suite in mirror.suites:
            for component in mirror.components:
                text, where = _packages_index(mirror, suite, component, arch, pool)
                check.indices.append(where)
                for key, version in _versions(text, names).items():
                    old = candidates.get(key)
                    if old is None or compare_versions("deb", version, old) > 0:
                        candidates[key] = version
    for p in manifest.packages:
        cand = candidates.get((p.name, p.arch))
        if cand is None:
            check.not_found.append(p.name)
        elif compare_versions("deb", cand, p.version) > 0:
            check.pending.append(Change(p.name, p.arch, p.version, cand))
    log(f"update check: {len(manifest)} installed packages against {len(check.indices)} indices: "
        f"{len(check.pending)} with a newer version, {len(check.not_found)} not on the mirrors")
    return check
