"""By-name index files (InRelease, Release, repomd.xml) through the pool: fetched once, then reused.

Everything else a build or an update check reads from a mirror is content-addressed (packages by URL
and content, index files by hash), so it never changes and is fetched once. The files a client
reads *by name* change when the mirror moves, so they need a freshness rule. One rule, the HTTP one:

* the mirror sent validators (``ETag``, ``Last-Modified``): every use revalidates (a conditional
  GET); ``304 Not Modified`` serves the pooled copy and downloads no body. A moved mirror is seen at
  once.
* it sent none (some proxies strip them): the pooled copy is served without asking while it is
  younger than ``max_age`` seconds; after that it is fetched again. ``max_age`` 0: always fetched.

The pending-update check (``updates.py``) always asks (``max_age`` 0): it decides whether to bake, so
it must see the mirror as it is, and it refreshes the pooled copy. A build's package server reuses a
copy younger than the catalogue's ``packages.index_max_age_hours``: in a nightly that is the copy
the check of the same run just read, so the build installs from the state the check judged; a
dated snapshot archive never changes (``math.inf``).

The body lives in the pool's blobs (gc drops it once unused for the grace period) and its entry
under ``names/`` (:meth:`PackagePool.remember_named`). No Airflow import here.
"""

from __future__ import annotations

import shutil
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from bakery.packages.pool import NamedFile, PackagePool

TIMEOUT = 60


@dataclass(frozen=True)
class IndexFetch:
    status: int  # 200 (path set) or the mirror's error status (body set)
    path: Path | None = None
    body: bytes = b""
    source: str = "mirror"  # mirror | revalidated (304) | cache (fresh, not asked)
    downloaded: int = 0  # body bytes that came from the mirror


def fetch_index(pool: PackagePool, url: str, *, max_age: float, user_agent: str = "image-bakery",
                timeout: float = TIMEOUT) -> IndexFetch:
    """The by-name file at ``url``, from the pool when the rule above allows, else from the mirror
    (and then kept). Mirror errors other than HTTP statuses (unreachable) raise ``urllib.error.URLError``."""
    entry = pool.named(url)
    now = time.time()
    validators = entry is not None and (entry.etag or entry.last_modified)
    if entry is not None and not validators and now - entry.fetched < max_age:
        return IndexFetch(200, pool.blob_path(entry.sha256), source="cache")
    headers = {"User-Agent": user_agent}
    if entry is not None and entry.etag:
        headers["If-None-Match"] = entry.etag
    if entry is not None and entry.last_modified:
        headers["If-Modified-Since"] = entry.last_modified
    req = urllib.request.Request(url, headers=headers)
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)  # noqa: S310 - the catalogue's mirrors
    except urllib.error.HTTPError as exc:
        if exc.code == 304 and entry is not None:
            pool.remember_named(url, NamedFile(entry.sha256, now, entry.etag, entry.last_modified))
            return IndexFetch(200, pool.blob_path(entry.sha256), source="revalidated")
        return IndexFetch(exc.code, body=exc.read() or b"")
    tmp = pool.new_tmp()
    try:
        with resp, open(tmp, "wb") as out:
            shutil.copyfileobj(resp, out, 1 << 20)
            etag, last_modified = resp.headers.get("ETag"), resp.headers.get("Last-Modified")
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    size = tmp.stat().st_size
    digest, _ = pool.put_file(tmp)
    pool.remember_named(url, NamedFile(digest, now, etag, last_modified))
    return IndexFetch(200, pool.blob_path(digest), source="mirror", downloaded=size)
