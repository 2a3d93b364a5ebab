"""The bakery's own package archive: a content-addressed pool with one index per version.

Layout (``$BAKERY_HOME/pool``)::

    blobs/sha256/<aa>/<hex>            a .deb (or an index file fetched by hash), stored once
    blobs/sha256/<aa>/<hex>.control    the .deb's control stanza (what a Packages index lists)
    urls/<aa>/<sha256 of the URL>      "<hex>": which blob an upstream pool URL gave (the cache)
    names/<aa>/<sha256 of the URL>     JSON: which blob a by-name index file (InRelease, Release,
                                       repomd.xml) gave, when, and its HTTP validators (indexcache.py)
    base/<hex>.qcow2                   base images that kept indexes refer to (hard links)
    indexes/<image>/<version>.json     what a published version installed, exactly
    tmp/                               blobs being written

A blob is written to ``tmp/``, hashed, then linked into place: it is complete or absent. An index
is committed when its version is published (``commit_index``); prune marks it (``mark_pruned``)
and it is kept for the retention period after that, so that a pruned version can be rebuilt by a
backfill; :meth:`PackagePool.gc` drops expired indexes and the blobs nothing refers to any more
(blobs younger than the grace period stay: an in-flight build may be about to use them).
No Airflow import here.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

INDEX_FORMAT = "bakery-pool-index/1"


class PoolError(RuntimeError):
    pass


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _iso(when: datetime) -> str:
    return when.astimezone(timezone.utc).isoformat(timespec="seconds")


def _parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def deb_control(path: Path) -> str:
    """The control stanza of a .deb (python-debian reads the ar/tar members, no dpkg needed)."""
    from debian.debfile import DebFile

    with DebFile(str(path)) as deb:
        return str(deb.debcontrol()).strip() + "\n"


def control_fields(stanza: str) -> dict[str, str]:
    from debian.deb822 import Deb822

    return dict(Deb822(stanza))


@dataclass
class PooledPackage:
    name: str
    version: str
    arch: str
    sha256: str
    size: int
    filename: str  # the upstream file name, e.g. nginx_1.22.1-9+deb12u9_amd64.deb

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class PoolIndex:
    image: str
    version: str
    created: str
    base_digest: str | None
    inputs: dict[str, Any]
    install: str  # what the template was asked to install (the catalogue's package list)
    packages: list[PooledPackage]
    manifest_digest: str | None = None
    pruned_at: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": INDEX_FORMAT,
            "image": self.image,
            "version": self.version,
            "created": self.created,
            "base_digest": self.base_digest,
            "inputs": self.inputs,
            "install": self.install,
            "manifest_digest": self.manifest_digest,
            "pruned_at": self.pruned_at,
            "packages": [p.to_dict() for p in sorted(self.packages, key=lambda p: (p.name, p.arch))],
            "extra": self.extra,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PoolIndex:
        if data.get("format") != INDEX_FORMAT:
            raise PoolError(f"not a pool index (format {data.get('format')!r})")
        return cls(
            image=data["image"], version=data["version"], created=data["created"],
            base_digest=data.get("base_digest"), inputs=data.get("inputs") or {}, install=data.get("install", ""),
            packages=[PooledPackage(**p) for p in data["packages"]], manifest_digest=data.get("manifest_digest"),
            pruned_at=data.get("pruned_at"), extra=data.get("extra") or {},
        )

    def save(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1, sort_keys=True) + "\n")
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: Path) -> PoolIndex:
        return cls.from_dict(json.loads(path.read_text()))

    def expires(self, retention_days: float) -> datetime | None:
        """When a pruned version's index may go (None: its version is still published)."""
        return _parse_iso(self.pruned_at) + timedelta(days=retention_days) if self.pruned_at else None

    def usable(self, retention_days: float, now: datetime | None = None) -> bool:
        until = self.expires(retention_days)
        return until is None or (now or _now()) < until


@dataclass
class GcReport:
    indexes_removed: list[str] = field(default_factory=list)
    blobs_removed: int = 0
    base_images_removed: int = 0
    bytes_freed: int = 0
    dry_run: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class NamedFile:
    """A by-name index file as last fetched: its blob, when, and the validators the mirror sent."""

    sha256: str
    fetched: float  # time.time() of the last fetch or successful revalidation
    etag: str | None = None
    last_modified: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"sha256": self.sha256, "fetched": self.fetched, "etag": self.etag, "last_modified": self.last_modified}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NamedFile:
        return cls(sha256=data["sha256"], fetched=float(data["fetched"]), etag=data.get("etag"),
                   last_modified=data.get("last_modified"))


class PackagePool:
    def __init__(self, root: Path):
        self.root = Path(root)

    # ---- layout -----------------------------------------------------------------------------
    def blob_path(self, sha256: str) -> Path:
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise PoolError(f"not a sha256 hex digest: {sha256!r}")
        return self.root / "blobs" / "sha256" / sha256[:2] / sha256

    def has_blob(self, sha256: str) -> bool:
        return self.blob_path(sha256).is_file()

    def index_path(self, image: str, version: str) -> Path:
        return self.root / "indexes" / image / f"{version}.json"

    def base_path(self, digest: str) -> Path:
        return self.root / "base" / f"{digest.removeprefix('sha256:')}.qcow2"

    @contextlib.contextmanager
    def _lock(self, shared: bool) -> Iterator[None]:
        """Writers take it shared, gc exclusive: gc never deletes what a writer is linking in."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    # ---- blobs ------------------------------------------------------------------------------
    def new_tmp(self) -> Path:
        d = self.root / "tmp"
        d.mkdir(parents=True, exist_ok=True)
        return d / f"{os.getpid()}-{uuid.uuid4().hex}"

    def put_file(self, tmp: Path, *, expect_sha256: str | None = None, deb: bool = False) -> tuple[str, int]:
        """Move ``tmp`` (a finished download) into the pool; return (sha256, size)."""
        h = hashlib.sha256()
        with open(tmp, "rb") as fh:
            while block := fh.read(1 << 20):
                h.update(block)
        digest = h.hexdigest()
        if expect_sha256 and digest != expect_sha256:
            tmp.unlink(missing_ok=True)
            raise PoolError(f"content hash mismatch: expected {expect_sha256}, got {digest}")
        size = tmp.stat().st_size
        final = self.blob_path(digest)
        with self._lock(shared=True):
            final.parent.mkdir(parents=True, exist_ok=True)
            if deb and not final.with_name(digest + ".control").is_file():
                control = deb_control(tmp)
                ctl_tmp = self.new_tmp()
                ctl_tmp.write_text(control)
                ctl_tmp.replace(final.with_name(digest + ".control"))
            if final.is_file():
                tmp.unlink(missing_ok=True)
                os.utime(final)  # recently used: the age-based gc keeps it
            else:
                os.chmod(tmp, 0o644)
                tmp.replace(final)
        return digest, size

    def control(self, sha256: str) -> str:
        return self.blob_path(sha256).with_name(sha256 + ".control").read_text()

    # ---- the URL cache (a pool file fetched once is served from here after) ------------------
    def _url_key(self, url: str) -> Path:
        h = hashlib.sha256(url.encode()).hexdigest()
        return self.root / "urls" / h[:2] / h

    def cached_url(self, url: str) -> str | None:
        """The blob an upstream URL gave before, if it is still in the pool."""
        try:
            digest = self._url_key(url).read_text().strip()
        except FileNotFoundError:
            return None
        if self.has_blob(digest):
            os.utime(self.blob_path(digest))
            return digest
        return None

    def remember_url(self, url: str, sha256: str) -> None:
        key = self._url_key(url)
        key.parent.mkdir(parents=True, exist_ok=True)
        tmp = key.with_name(f".{key.name}.{uuid.uuid4().hex[:8]}")
        tmp.write_text(sha256 + "\n")
        tmp.replace(key)

    # ---- by-name index files (InRelease, Release, repomd.xml: bakery.packages.indexcache) -----
    def _name_key(self, url: str) -> Path:
        h = hashlib.sha256(url.encode()).hexdigest()
        return self.root / "names" / h[:2] / h

    def named(self, url: str) -> NamedFile | None:
        """What the by-name file at ``url`` was when last fetched, if its blob is still in the pool."""
        try:
            entry = NamedFile.from_dict(json.loads(self._name_key(url).read_text()))
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            return None
        if not self.has_blob(entry.sha256):
            return None
        os.utime(self.blob_path(entry.sha256))  # recently used: the age-based gc keeps it
        return entry

    def remember_named(self, url: str, entry: NamedFile) -> None:
        key = self._name_key(url)
        key.parent.mkdir(parents=True, exist_ok=True)
        tmp = key.with_name(f".{key.name}.{uuid.uuid4().hex[:8]}")
        tmp.write_text(json.dumps(entry.to_dict()))
        tmp.replace(key)

    # ---- base images ------------------------------------------------------------------------
    def keep_base(self, image_path: Path, digest: str) -> Path:
        """Keep the base image an index refers to (a hard link: no copy, survives the base cache's
        own pruning); a copy when the pool is on another file system."""
        dest = self.base_path(digest)
        if dest.is_file() and not dest.is_symlink():
            return dest
        src = Path(image_path).resolve(strict=True)  # the file itself: the stable path is a symlink
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}")
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)
        tmp.replace(dest)
        return dest

    # ---- indexes ----------------------------------------------------------------------------
    def index(self, image: str, version: str) -> PoolIndex | None:
        path = self.index_path(image, version)
        return PoolIndex.load(path) if path.is_file() else None

    def indexes(self, image: str | None = None) -> list[PoolIndex]:
        base = self.root / "indexes"
        if not base.is_dir():
            return []
        paths = (base / image).glob("*.json") if image else base.glob("*/*.json")
        return [PoolIndex.load(p) for p in sorted(paths)]

    def commit_index(self, index: PoolIndex, base_image: Path | None = None) -> Path:
        """Make ``index`` the version's index (its packages must all be in the pool)."""
        missing = [p.filename for p in index.packages if not self.has_blob(p.sha256)]
        if missing:
            raise PoolError(f"index of {index.image} {index.version} refers to packages not in the pool: {missing[:5]}")
        if base_image is not None and index.base_digest:
            self.keep_base(base_image, index.base_digest)
        with self._lock(shared=True):
            return index.save(self.index_path(index.image, index.version))

    def mark_pruned(self, image: str, version: str, when: datetime | None = None) -> bool:
        idx = self.index(image, version)
        if idx is None or idx.pruned_at:
            return False
        idx.pruned_at = _iso(when or _now())
        idx.save(self.index_path(image, version))
        return True

    def unmark_pruned(self, image: str, version: str) -> None:
        idx = self.index(image, version)
        if idx is not None and idx.pruned_at:
            idx.pruned_at = None
            idx.save(self.index_path(image, version))

    # ---- garbage collection -----------------------------------------------------------------
    def gc(self, *, retention_days: dict[str, float] | float, grace_hours: float = 24.0,
           dry_run: bool = False, now: datetime | None = None) -> GcReport:
        """Drop indexes whose pruned version is past its retention, then every blob, URL entry and
        base image no kept index refers to and not used for ``grace_hours``.

        ``retention_days``: one number, or per image (images not named keep their indexes).
        """
        now = now or _now()
        report = GcReport(dry_run=dry_run)
        with self._lock(shared=False):
            kept: list[PoolIndex] = []
            for path in sorted((self.root / "indexes").glob("*/*.json")) if (self.root / "indexes").is_dir() else []:
                idx = PoolIndex.load(path)
                days = retention_days if isinstance(retention_days, (int, float)) else retention_days.get(idx.image)
                if days is not None and not idx.usable(days, now):
                    report.indexes_removed.append(f"{idx.image}/{idx.version}")
                    report.bytes_freed += path.stat().st_size
                    if not dry_run:
                        path.unlink()
                    continue
                kept.append(idx)
            wanted = {p.sha256 for idx in kept for p in idx.packages}
            bases = {(idx.base_digest or "").removeprefix("sha256:") for idx in kept}
            cutoff = now.timestamp() - grace_hours * 3600
            blob_root = self.root / "blobs" / "sha256"
            for blob in sorted(blob_root.glob("*/*")) if blob_root.is_dir() else []:
                if blob.name.endswith(".control"):
                    continue
                if blob.name in wanted or blob.stat().st_mtime > cutoff:
                    continue
                report.blobs_removed += 1
                report.bytes_freed += blob.stat().st_size
                if not dry_run:
                    blob.unlink()
                    blob.with_name(blob.name + ".control").unlink(missing_ok=True)
            for base in sorted((self.root / "base").glob("*.qcow2")) if (self.root / "base").is_dir() else []:
                if base.stem in bases or base.stat().st_mtime > cutoff:
                    continue
                report.base_images_removed += 1
                # a hard link frees its blocks only with the last link; count what this one holds
                report.bytes_freed += base.stat().st_size if base.stat().st_nlink == 1 else 0
                if not dry_run:
                    base.unlink()
            if not dry_run:
                self._drop_dangling_urls()
                self._drop_stale_tmp(cutoff)
        return report

    def _drop_dangling_urls(self) -> None:
        urls = self.root / "urls"
        for key in urls.glob("*/*") if urls.is_dir() else []:
            with contextlib.suppress(OSError):
                if not self.has_blob(key.read_text().strip()):
                    key.unlink()
        names = self.root / "names"
        for key in names.glob("*/*") if names.is_dir() else []:
            with contextlib.suppress(OSError):
                try:
                    digest = json.loads(key.read_text())["sha256"]
                except (ValueError, KeyError, TypeError):
                    digest = ""  # unreadable: drop it
                if not digest or not self.has_blob(digest):
                    key.unlink()

    def _drop_stale_tmp(self, cutoff: float) -> None:
        tmp = self.root / "tmp"
        for p in tmp.iterdir() if tmp.is_dir() else []:
            with contextlib.suppress(OSError):
                if p.stat().st_mtime < cutoff:
                    p.unlink()

    def size(self, *, packages_only: bool = True) -> int:
        """Bytes of the blobs in the pool: the packages (those with a control stanza: what the dedup
        figure compares), or everything (with the index files fetched by hash)."""
        blob_root = self.root / "blobs" / "sha256"
        if not blob_root.is_dir():
            return 0
        blobs = [p for p in blob_root.glob("*/*") if not p.name.endswith(".control")]
        if packages_only:
            blobs = [p for p in blobs if p.with_name(p.name + ".control").is_file()]
        return sum(p.stat().st_size for p in blobs)


def pool_root() -> Path:
    from bakery.paths import bakery_home

    return Path(os.environ.get("BAKERY_POOL") or bakery_home() / "pool")


def default_pool() -> PackagePool:
    return PackagePool(pool_root())

