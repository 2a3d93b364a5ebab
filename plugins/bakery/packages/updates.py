"""Pending package updates of a published version, from the mirrors' current indices (no VM).

**deb** (Debian, Ubuntu): for each mirror and suite the (In)Release file, asked of the mirror every
time (revalidated when it sends validators: :mod:`bakery.packages.indexcache`; the pooled copy this
refreshes is what the build of the same run reuses); from it the SHA256 of
``<component>/binary-<arch>/Packages.xz`` (or ``.gz``, or plain), fetched by hash when the archive
offers it and kept in the pool by content (an unchanged index is never downloaded twice). Only the
stanzas of packages in the manifest are read; versions are compared with ``python-debian`` the way
apt does.

**rpm** (the RHEL family): each mirror ``url`` is a repository base URL (the folder that holds
``repodata/``, e.g. ``https://repo.almalinux.org/almalinux/9/BaseOS/x86_64/os``). Its
``repodata/repomd.xml``, asked for the same way, names the ``primary`` metadata file and its
checksum; that file is kept in the pool by its sha256 like the Debian indices (fetched once per content), decompressed as
it is read (``.gz``, ``.xz``, ``.bz2``: the standard library; a ``.zst`` one is an error naming the
file: Python 3.11 has no zstd decompressor and the bakery ships no zstd library) and parsed as a
stream (``iterparse``, every package element dropped once read: AppStream's primary.xml is large).
Versions are compared as rpm does (epoch, then version, then release: ``manifest.compare_versions``).
Packages built for a **module stream** (their release says ``.module+el9...`` / ``.module_el9...``)
are candidates only for an installed package that is itself modular: dnf hides the streams an image
has not enabled, so the default nginx 1.20 is not "updated" by the nginx:1.24 stream's builds.

The candidate of a package is its highest version over all mirrors (and suites); it is pending when
the candidate is newer than the installed version: what ``apt-get full-upgrade`` / ``dnf upgrade``
would take. Packages are matched by name and architecture.

(Signatures are not checked here: this is a cheap "is there anything new" probe; the build itself
installs through apt / dnf, which verify them.) No Airflow import here.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import lzma
import re
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from bakery.packages.indexcache import fetch_index
from bakery.packages.inputs import Mirror
from bakery.packages.manifest import Change, Manifest, compare_versions
from bakery.packages.pool import PackagePool, PoolError

TIMEOUT = 60
_INDEX_NAMES = (("Packages.xz", lzma.decompress), ("Packages.gz", gzip.decompress), ("Packages", bytes))

# rpm-md (createrepo) namespaces
_REPO_NS = "{http://linux.duke.edu/metadata/repo}"
_COMMON_NS = "{http://linux.duke.edu/metadata/common}"
_XML_BASE = "{http://www.w3.org/XML/1998/namespace}base"
_PACKAGE, _NAME, _ARCH, _VERSION = (f"{_COMMON_NS}{t}" for t in ("package", "name", "arch", "version"))
# a build for a module stream: RHEL/Rocky ".module+el9.4.0+21..." , AlmaLinux ".module_el9.4.0+..."
_MODULAR = re.compile(r"\.module[+_]")
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_OPENERS: dict[str, Callable[..., IO[bytes]]] = {".gz": gzip.open, ".xz": lzma.open, ".bz2": bz2.open, ".xml": open}
_MAGIC = ((b"\x1f\x8b", ".gz"), (b"\xfd7zXZ\x00", ".xz"), (b"BZh", ".bz2"), (b"<?xml", ".xml"), (b"<", ".xml"))


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


def _request(url: str) -> urllib.request.Request:
    return urllib.request.Request(url, headers={"User-Agent": "image-bakery-update-check"})


def _get(url: str) -> bytes | None:
    try:
        with urllib.request.urlopen(_request(url), timeout=TIMEOUT) as resp:  # the catalogue's mirrors
            return resp.read()
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise UpdateCheckError(f"{url}: HTTP {exc.code}") from None
    except urllib.error.URLError as exc:
        raise UpdateCheckError(f"{url}: {exc.reason}") from None


# ---- deb ----------------------------------------------------------------------------------------
def _get_named(url: str, pool: PackagePool) -> bytes | None:
    """A by-name index file, asked of the mirror every time (revalidated when the pooled copy has
    validators: a 304 downloads nothing); the pooled copy is refreshed, so the build that follows in
    the same run reuses exactly what this check read (bakery.packages.indexcache)."""
    try:
        got = fetch_index(pool, url, max_age=0, user_agent="image-bakery-update-check", timeout=TIMEOUT)
    except urllib.error.URLError as exc:
        raise UpdateCheckError(f"{url}: {exc.reason}") from None
    if got.status == 404:
        return None
    if got.path is None:
        raise UpdateCheckError(f"{url}: HTTP {got.status}")
    return got.path.read_bytes()


def _release(mirror: Mirror, suite: str, pool: PackagePool):
    from debian.deb822 import Release

    base = f"{mirror.url.rstrip('/')}/dists/{suite}"
    for name in ("InRelease", "Release"):
        body = _get_named(f"{base}/{name}", pool)
        if body is not None:
            return Release(body.decode("utf-8", "replace")), f"{base}/{name}"
    raise UpdateCheckError(f"{base}: neither InRelease nor Release exists (is the suite {suite!r} right?)")


def _packages_index(mirror: Mirror, suite: str, component: str, arch: str, pool: PackagePool) -> tuple[bytes, str]:
    release, where = _release(mirror, suite, pool)
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


def _deb_candidates(mirrors: Sequence[Mirror], names: set[str], arch: str, pool: PackagePool,
                    check: UpdateCheck) -> dict[tuple[str, str], list[str]]:
    candidates: dict[tuple[str, str], str] = {}
    for n, mirror in enumerate(mirrors):
        if not mirror.suites:
            raise UpdateCheckError(f"packages.mirrors[{n}] ({mirror.url}) names no suites: a Debian-style archive "
                                   "is read suite by suite (e.g. suites: [bookworm, bookworm-updates])")
        for suite in mirror.suites:
            for component in mirror.components:
                text, where = _packages_index(mirror, suite, component, arch, pool)
                check.indices.append(where)
                for key, version in _versions(text, names).items():
                    old = candidates.get(key)
                    if old is None or compare_versions("deb", version, old) > 0:
                        candidates[key] = version
    return {k: [v] for k, v in candidates.items()}


# ---- rpm ----------------------------------------------------------------------------------------
def _evr(epoch: str | None, ver: str, rel: str | None) -> str:
    """primary.xml's ``<version epoch ver rel>`` spelled like the manifest (``E:V-R``, no ``0:``)."""
    vr = f"{ver}-{rel}" if rel else ver
    return vr if (epoch or "0") == "0" else f"{epoch}:{vr}"


def is_modular(version: str) -> bool:
    """A build for a module stream (dnf offers it only when the image enabled that stream)."""
    return bool(_MODULAR.search(version.rpartition("-")[2]))


def _repomd(mirror: Mirror, n: int, pool: PackagePool) -> tuple[str, str, str, str]:
    """(primary URL, checksum type, checksum, repomd URL) from the repository's repomd.xml, asked for fresh."""
    base = mirror.url.rstrip("/")
    where = f"{base}/repodata/repomd.xml"
    body = _get_named(where, pool)
    if body is None:
        raise UpdateCheckError(
            f"{where}: not found: packages.mirrors[{n}].url of an rpm image must be a repository base URL, the "
            "folder that holds repodata/ (e.g. https://repo.almalinux.org/almalinux/9/BaseOS/x86_64/os)")
    try:
        root = ET.fromstring(body)  # expat >= 2.4 refuses entity-expansion attacks
    except ET.ParseError as exc:
        raise UpdateCheckError(f"{where}: not an rpm-md repomd.xml ({exc})") from None
    for data in root.iter(f"{_REPO_NS}data"):
        if data.get("type") != "primary":
            continue
        location = data.find(f"{_REPO_NS}location")
        checksum = data.find(f"{_REPO_NS}checksum")
        href = location.get("href") if location is not None else None
        if not href or checksum is None or not (checksum.text or "").strip():
            raise UpdateCheckError(f"{where}: its primary entry has no location href or no checksum")
        url_base = (location.get(_XML_BASE) or f"{base}/").rstrip("/") + "/"
        return (urllib.parse.urljoin(url_base, href), (checksum.get("type") or "sha256").lower(),
                checksum.text.strip().lower(), where)
    raise UpdateCheckError(f"{where} lists no primary metadata (<data type=\"primary\">)")


def _fetch_by_checksum(url: str, algorithm: str, digest: str, where: str, pool: PackagePool) -> Path:
    """The file at ``url`` from the pool (by content), downloading it only if the pool does not have it;
    verified against the checksum ``where`` (repomd.xml) lists."""
    algo = {"sha": "sha1"}.get(algorithm, algorithm)
    if algo not in hashlib.algorithms_guaranteed:
        raise UpdateCheckError(f"{where}: unknown checksum type {algorithm!r} for {url}")
    if algo == "sha256":
        if pool.has_blob(digest):
            return pool.blob_path(digest)
    elif cached := pool.cached_url(f"{algo}:{digest}"):  # the pool stores by sha256: remember the mapping
        return pool.blob_path(cached)
    tmp = pool.new_tmp()
    h = hashlib.new(algo)
    try:
        with urllib.request.urlopen(_request(url), timeout=TIMEOUT) as resp, open(tmp, "wb") as out:
            while block := resp.read(1 << 20):
                h.update(block)
                out.write(block)
    except urllib.error.HTTPError as exc:
        tmp.unlink(missing_ok=True)
        why = "listed there but not found" if exc.code == 404 else f"HTTP {exc.code}"
        raise UpdateCheckError(f"{url}: {why} (named by {where}; a mirror in the middle of a sync? the next "
                               "run reads it again)") from None
    except (urllib.error.URLError, OSError) as exc:
        tmp.unlink(missing_ok=True)
        raise UpdateCheckError(f"{url}: {getattr(exc, 'reason', exc)}") from None
    if h.hexdigest() != digest:
        tmp.unlink(missing_ok=True)
        raise UpdateCheckError(f"{url}: its {algo} is {h.hexdigest()}, but {where} lists {digest} (a mirror in the "
                               "middle of a sync? the next run reads it again)")
    try:
        sha256, _ = pool.put_file(tmp, expect_sha256=digest if algo == "sha256" else None)
    except PoolError as exc:
        raise UpdateCheckError(f"{url}: {exc}") from None
    if algo != "sha256":
        pool.remember_url(f"{algo}:{digest}", sha256)
    return pool.blob_path(sha256)


def _zstd_error(url: str, where: str) -> UpdateCheckError:
    return UpdateCheckError(
        f"{url}: the repository's primary metadata is zstd-compressed, which the pending-update check cannot "
        f"read (Python 3.11's standard library decompresses gzip, xz and bzip2 only, and the bakery ships no "
        f"zstd library). Named by {where}. Point packages.mirrors at a mirror that publishes gzip or xz "
        "metadata, or remove the image's mirrors (the nightly then always bakes)")


def _open_primary(path: Path, url: str, where: str) -> IO[bytes]:
    suffix = next((s for s in _OPENERS if url.endswith(s)), None)
    if suffix is None:  # an unusual name: go by the content
        with open(path, "rb") as fh:
            head = fh.read(8)
        if head.startswith(_ZSTD_MAGIC):
            raise _zstd_error(url, where)
        suffix = next((s for magic, s in _MAGIC if head.startswith(magic)), None)
        if suffix is None:
            raise UpdateCheckError(f"{url}: unknown compression of the primary metadata (named by {where})")
    return _OPENERS[suffix](path, "rb")


def _primary_versions(stream: IO[bytes], names: set[str]):
    """(name, arch, E:V-R) of every ``<package type="rpm">`` of ``names``, read as a stream: each package
    element is dropped as soon as it is read, so memory stays flat however large the file."""
    root = None
    for event, elem in ET.iterparse(stream, events=("start", "end")):  # expat: see _repomd
        if root is None:
            root = elem
            continue
        if event != "end" or elem.tag != _PACKAGE:
            continue
        if elem.get("type", "rpm") == "rpm":
            name = elem.findtext(_NAME)
            if name in names:
                v = elem.find(_VERSION)
                if v is not None and v.get("ver"):
                    yield name, (elem.findtext(_ARCH) or "").strip(), _evr(v.get("epoch"), v.get("ver"), v.get("rel"))
        root.clear()  # the package (and everything read so far) goes


def _rpm_candidates(mirrors: Sequence[Mirror], names: set[str], pool: PackagePool,
                    check: UpdateCheck) -> dict[tuple[str, str], list[str]]:
    found: dict[tuple[str, str], list[str]] = {}
    for n, mirror in enumerate(mirrors):
        url, algorithm, digest, where = _repomd(mirror, n, pool)
        if url.endswith(".zst"):
            raise _zstd_error(url, where)  # before downloading it
        path = _fetch_by_checksum(url, algorithm, digest, where, pool)
        try:
            with _open_primary(path, url, where) as stream:
                for name, arch, evr in _primary_versions(stream, names):
                    found.setdefault((name, arch), []).append(evr)
        except (OSError, EOFError, lzma.LZMAError, ET.ParseError) as exc:
            raise UpdateCheckError(f"{url}: cannot read the primary metadata (named by {where}): {exc}") from None
        check.indices.append(url)
    return found


def _highest(family: str, versions: Sequence[str]) -> str | None:
    best = None
    for v in versions:
        if best is None or compare_versions(family, v, best) > 0:
            best = v
    return best


def pending_updates(manifest: Manifest, mirrors: Sequence[Mirror], pool: PackagePool, *, arch: str = "amd64",
                    family: str | None = None, log: Callable[[str], None] = print) -> UpdateCheck:
    """What the mirrors offer newer than the manifest's packages (``family``: the catalogue's
    ``packages.family``, which must be the manifest's)."""
    if family is not None and family != manifest.family:
        raise UpdateCheckError(f"the catalogue's packages.family is {family!r}, but the version's package manifest "
                               f"is {manifest.family!r}: fix packages.family (deb for Debian/Ubuntu, rpm for the "
                               "RHEL family)")
    if not mirrors:
        raise UpdateCheckError("the catalogue lists no package mirrors for this image")
    names = manifest.names()
    check = UpdateCheck()
    if manifest.family == "deb":
        found = _deb_candidates(mirrors, names, arch, pool, check)
    elif manifest.family == "rpm":
        found = _rpm_candidates(mirrors, names, pool, check)
    else:  # pragma: no cover - Manifest refuses other families
        raise UpdateCheckError(f"no pending-update check for package family {manifest.family!r}")
    for p in manifest.packages:
        offered = found.get((p.name, p.arch))
        if not offered:
            check.not_found.append(p.name)
            continue
        if manifest.family == "rpm" and not is_modular(p.version):
            offered = [v for v in offered if not is_modular(v)]  # streams the image has not enabled
        cand = _highest(manifest.family, offered)
        if cand is not None and compare_versions(manifest.family, cand, p.version) > 0:
            check.pending.append(Change(p.name, p.arch, p.version, cand))
    log(f"update check: {len(manifest)} installed {manifest.family} packages against {len(check.indices)} indices: "
        f"{len(check.pending)} with a newer version, {len(check.not_found)} not on the mirrors")
    return check
