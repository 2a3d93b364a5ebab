"""The dependency closure of a few Debian 12 packages, resolved from the real bookworm indices.

`debian_closure(["nginx"], cache)` reads `Packages.xz` of bookworm, bookworm-updates and
bookworm-security from the live mirror, follows Depends + Pre-Depends (first existing alternative,
virtual packages through Provides, highest version across suites wins) and downloads every .deb of
the closure into `cache`, each checked against the SHA256 of the index. Indices and .debs that are
already cached with the right hash are not downloaded again; only the three small Release files
are fetched on every call (they say which index is current), and without any network a complete
cache of an earlier run is used as is.
"""

from __future__ import annotations

import hashlib
import lzma
import os
import re
import tempfile
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import requests
from debian.deb822 import PkgRelation
from debian.debian_support import version_compare

DEFAULT_SUITES: tuple[tuple[str, str], ...] = (
    ("bookworm", "main"),
    ("bookworm-updates", "main"),
    ("bookworm-security", "main"),
)
_FIELDS = {"Package", "Version", "Depends", "Pre-Depends", "Provides", "Filename", "Size", "SHA256"}
_TIMEOUT = 60


class ClosureError(RuntimeError):
    """The closure cannot be resolved or downloaded (network, missing package, bad hash)."""


@dataclass(frozen=True)
class IndexEntry:
    """One binary package of an index: what resolving and downloading need."""

    package: str
    version: str
    depends: str
    pre_depends: str
    provides: str
    filename: str  # relative to base_url, e.g. pool/main/n/nginx/nginx_1.22.1-9_amd64.deb
    size: int
    sha256: str
    base_url: str  # the archive root it comes from (mirror or security)

    @property
    def url(self) -> str:
        return f"{self.base_url}/{self.filename}"


def sha256_of(path: Path) -> str:
    """Hex SHA256 of a file."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _download(session: requests.Session, url: str, dest: Path, sha256: str) -> Path:
    """Fetch url into dest (atomically, via a temp file) unless dest already has that SHA256."""
    if dest.is_file() and sha256_of(dest) == sha256:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.")
    try:
        with os.fdopen(fd, "wb") as out, session.get(url, stream=True, timeout=_TIMEOUT) as resp:
            resp.raise_for_status()
            for chunk in resp.iter_content(1 << 20):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != sha256:
            raise ClosureError(f"{url}: SHA256 {digest.hexdigest()} != {sha256} of the index")
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)  # concurrent runs sharing the cache only ever see complete files
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dest


def _release_sha256(release: str, name: str) -> tuple[str, bool]:
    """(SHA256 of the index file `name` listed in a Release file, whether the suite is by-hash)."""
    by_hash = re.search(r"^Acquire-By-Hash:\s*yes\s*$", release, re.M) is not None
    sha_section = release.split("\nSHA256:", 1)[-1]
    match = re.search(rf"^ ([0-9a-f]{{64}})\s+\d+\s+{re.escape(name)}$", sha_section, re.M)
    if match is None:
        raise ClosureError(f"{name} is not listed in the Release file")
    return match.group(1), by_hash


def parse_packages(text: str, base_url: str) -> list[IndexEntry]:
    """The stanzas of a Packages file, with only the fields the closure needs.

    A plain split on blank lines rather than deb822's generic parser: bookworm main has ~63k
    stanzas and this reads them in about a second.
    """
    entries = []
    for stanza in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in stanza.split("\n"):
            if not line or line[0] in " \t":  # continuation lines (Description) are not needed
                continue
            key, _, value = line.partition(":")
            if key in _FIELDS:
                fields[key] = value.strip()
        if "Package" not in fields:
            continue
        entries.append(IndexEntry(
            package=fields["Package"], version=fields["Version"],
            depends=fields.get("Depends", ""), pre_depends=fields.get("Pre-Depends", ""),
            provides=fields.get("Provides", ""), filename=fields["Filename"],
            size=int(fields["Size"]), sha256=fields["SHA256"], base_url=base_url,
        ))
    return entries


def load_index(session: requests.Session, base_url: str, suite: str, component: str, arch: str,
               cache_dir: Path) -> list[IndexEntry]:
    """Fetch (or reuse from cache_dir) the Packages.xz of one suite, verified against its Release.

    Offline (no connection at all) the cached index of an earlier run is used, with a warning,
    so that reruns with a complete cache need no network.
    """
    dists = f"{base_url}/dists/{suite}"
    cached = cache_dir / f"{suite}_{component}_binary-{arch}_Packages.xz"
    try:
        resp = session.get(f"{dists}/Release", timeout=_TIMEOUT)
    except (requests.ConnectionError, requests.Timeout) as exc:
        if not cached.is_file():
            raise
        warnings.warn(f"{dists}/Release unreachable ({exc}); using the cached {cached.name}", stacklevel=2)
        path = cached
    else:
        resp.raise_for_status()
        name = f"{component}/binary-{arch}/Packages.xz"
        sha256, by_hash = _release_sha256(resp.text, name)
        url = f"{dists}/{component}/binary-{arch}/by-hash/SHA256/{sha256}" if by_hash else f"{dists}/{name}"
        path = _download(session, url, cached, sha256)
    return parse_packages(lzma.decompress(path.read_bytes()).decode("utf-8"), base_url)


class Universe:
    """All packages of the indices: the highest version of each name, and who provides what."""

    def __init__(self, entries: list[IndexEntry]):
        self.packages: dict[str, IndexEntry] = {}
        self.providers: dict[str, list[str]] = {}
        for entry in entries:
            known = self.packages.get(entry.package)
            if known is None or version_compare(entry.version, known.version) > 0:
                self.packages[entry.package] = entry
            for rel in filter(None, (p.strip() for p in entry.provides.split(","))):
                virtual = rel.split("(", 1)[0].strip()
                names = self.providers.setdefault(virtual, [])
                if entry.package not in names:
                    names.append(entry.package)

    def exists(self, name: str) -> bool:
        return name in self.packages or name in self.providers

    def pick(self, name: str, chosen: dict[str, IndexEntry]) -> IndexEntry:
        """The real package for a name: itself, else a provider (one already chosen first)."""
        if name in self.packages:
            return self.packages[name]
        providers = self.providers.get(name, [])
        if not providers:
            raise ClosureError(f"no package is or provides {name!r}")
        return self.packages[next((p for p in providers if p in chosen), providers[0])]

    def closure(self, roots: list[str]) -> list[IndexEntry]:
        """Depends + Pre-Depends closure of roots; the first alternative that exists is taken."""
        chosen: dict[str, IndexEntry] = {}
        todo = list(roots)
        while todo:
            name = todo.pop()
            entry = self.pick(name, chosen)
            if entry.package in chosen:
                continue
            chosen[entry.package] = entry
            relations = [rel for field in (entry.pre_depends, entry.depends) if field
                         for rel in PkgRelation.parse_relations(field)]
            for alternatives in relations:
                alt = next((a for a in alternatives if self.exists(a["name"])), None)
                if alt is None:
                    raise ClosureError(f"{entry.package} {entry.version}: nothing satisfies "
                                       f"{' | '.join(a['name'] for a in alternatives)}")
                self._check_version(entry, alt)
                todo.append(alt["name"])
        return sorted(chosen.values(), key=lambda e: e.package)

    def _check_version(self, entry: IndexEntry, alt: dict) -> None:
        """Fail early when the candidate of a versioned dependency does not satisfy it."""
        target = self.packages.get(alt["name"])
        if alt["version"] is None or target is None:
            return
        op, wanted = alt["version"]
        cmp = version_compare(target.version, wanted)
        ok = {"<<": cmp < 0, "<=": cmp <= 0, "=": cmp == 0, ">=": cmp >= 0, ">>": cmp > 0}[op]
        if not ok:
            raise ClosureError(f"{entry.package} needs {alt['name']} ({op} {wanted}), "
                               f"the indices have {target.version}")


def debian_closure(
    packages: list[str],
    cache_dir: Path,
    *,
    mirror: str = "http://deb.debian.org/debian",
    security: str = "http://deb.debian.org/debian-security",
    suites: tuple[tuple[str, str], ...] = DEFAULT_SUITES,
    arch: str = "amd64",
) -> list[Path]:
    """Download the Depends/Pre-Depends closure of `packages` into cache_dir; return the .deb paths.

    Suites whose name ends in "-security" come from `security`, the others from `mirror`.
    Raises ClosureError (with the URL and cause) when the network or the indices fail.
    """
    cache_dir = Path(cache_dir)
    with requests.Session() as session:
        try:
            entries: list[IndexEntry] = []
            for suite, component in suites:
                base = security if suite.endswith("-security") else mirror
                entries += load_index(session, base, suite, component, arch, cache_dir / "indices")
            wanted = Universe(entries).closure(list(packages))
            with ThreadPoolExecutor(max_workers=8) as pool:
                return list(pool.map(
                    lambda e: _download(session, e.url, cache_dir / Path(e.filename).name, e.sha256), wanted))
        except requests.RequestException as exc:
            raise ClosureError(f"cannot fetch the Debian closure of {packages} from {mirror} / {security} "
                               f"(network to the Debian mirror needed): {exc}") from exc
