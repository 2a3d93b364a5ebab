"""The package server a build guest installs from: on loopback, for the length of one build.

Two modes, one per build:

* **record** (inputs ``current@`` or ``snapshot@``): a path-preserving proxy to the image's mirrors.
  ``/u/<n>/<path>`` is ``<mirror n>/<path>``. Signed indices (InRelease, Release) pass through
  untouched, so the guest's apt verifies them with its own keyring; they are kept in the pool and
  reused by the rule of :mod:`bakery.packages.indexcache` (revalidated, or fresh for
  ``index_max_age`` seconds when the mirror sends no validators); every ``.deb`` the guest fetches
  lands in the pool (stored once by content) and is remembered, and the next request of the same
  URL is served from the pool without touching the mirror (the cache); index files fetched
  ``by-hash`` are content-addressed too and cached the same way.
* **replay** (inputs ``pool@<version>``): a flat, exactly-that-version repository built from the
  version's pool index: ``/r/Release``, ``/r/Packages`` and ``/r/pool/<sha256>/<file>.deb``. Nothing
  else exists, so apt can install nothing but that version's packages.

Either way :attr:`PackageServer.fetched` lists every ``.deb`` served (sha256, size, name, version,
arch): what the version's new index is made of. The guest reaches host loopback through QEMU's
user network as 10.0.2.2, hence :meth:`guest_url`. No Airflow import here.
"""

from __future__ import annotations

import gzip
import hashlib
import http.server
import shutil
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import format_datetime
from pathlib import Path
from typing import Callable, Sequence

from bakery.packages.indexcache import fetch_index
from bakery.packages.pool import PackagePool, PoolError, PoolIndex, control_fields

GUEST_HOST = "10.0.2.2"  # the host's loopback as seen from a QEMU user-network guest
PACKAGE_SUFFIXES = (".deb", ".udeb")
UPSTREAM_TIMEOUT = 60


@dataclass(frozen=True)
class Served:
    sha256: str
    size: int
    name: str
    version: str
    arch: str
    filename: str


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _HttpServer
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt: str, *args) -> None:  # the bakery's log, not stderr
        self.server.owner.log_request(fmt % args)

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def do_GET(self) -> None:
        self._serve(head=False)

    def _serve(self, head: bool) -> None:
        started = time.monotonic()
        try:
            self._answer(head)
        finally:
            self.server.owner.busy(time.monotonic() - started)

    def _answer(self, head: bool) -> None:
        try:
            status, body, ctype = self.server.owner.respond(self.path)
        except Exception as exc:  # noqa: BLE001 - the guest gets a 502 and our log the reason
            self.server.owner.log(f"package server: {self.path}: {exc}")
            status, body, ctype = 502, f"bakery package server: {exc}\n".encode(), "text/plain"
        self.send_response(status)
        if isinstance(body, Path):
            size = body.stat().st_size
        else:
            size = len(body)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(size))
        self.end_headers()
        if head:
            return
        if isinstance(body, Path):
            with open(body, "rb") as fh:
                shutil.copyfileobj(fh, self.wfile, 1 << 20)
        else:
            self.wfile.write(body)


class _HttpServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    owner: PackageServer


class PackageServer:
    """``with PackageServer(pool, mirrors=[...]) as srv:`` (record) or ``replay=index`` (replay)."""

    def __init__(self, pool: PackagePool, *, mirrors: Sequence[str] = (), replay: PoolIndex | None = None,
                 log: Callable[[str], None] = print, bind: str = "127.0.0.1", index_max_age: float = 0.0):
        if bool(mirrors) == bool(replay):
            raise ValueError("a package server either records from mirrors or replays one index")
        self.pool = pool
        self.mirrors = [m.rstrip("/") for m in mirrors]
        self.replay = replay
        self.log = log
        self.bind = bind
        self.fetched: dict[str, Served] = {}  # sha256 -> what was served
        self.index_max_age = index_max_age
        self.serve_seconds = 0.0  # summed over requests: from a request's arrival to its last byte sent
        self.counts = {"requests": 0, "cache_hits": 0, "index_cache_hits": 0, "revalidated": 0, "upstream": 0,
                       "bytes_upstream": 0, "not_found": 0}
        self._lock = threading.Lock()
        self._httpd: _HttpServer | None = None
        self._thread: threading.Thread | None = None
        if replay is not None:
            self._replay_files = self._replay_repo(replay)

    # ---- lifecycle --------------------------------------------------------------------------
    def __enter__(self) -> PackageServer:
        self._httpd = _HttpServer((self.bind, 0), _Handler)
        self._httpd.owner = self
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="bakery-package-server", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    @property
    def port(self) -> int:
        assert self._httpd is not None, "the server is not started"
        return self._httpd.server_address[1]

    def url(self, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}"

    def guest_url(self) -> str:
        return self.url(GUEST_HOST)

    def busy(self, seconds: float) -> None:
        with self._lock:
            self.serve_seconds += seconds

    def log_request(self, line: str) -> None:
        pass  # per-request lines would drown the build log; counts are reported at the end

    def summary(self) -> str:
        c = self.counts
        return (f"package server: {c['requests']} requests, {len(self.fetched)} packages served, "
                f"{c['cache_hits']} from the pool cache, {c['index_cache_hits']} by-name indices from the pool "
                f"unasked and {c['revalidated']} revalidated (304), {c['upstream']} upstream fetches "
                f"({c['bytes_upstream']:,} bytes), {c['not_found']} not found")

    # ---- routing ----------------------------------------------------------------------------
    def respond(self, path: str) -> tuple[int, bytes | Path, str]:
        path = urllib.parse.unquote(path.split("?", 1)[0])  # apt sends "+" as %2b
        with self._lock:
            self.counts["requests"] += 1
        if path.startswith("/u/") and not self.replay:
            head, _, rest = path[3:].partition("/")
            if not head.isdigit() or int(head) >= len(self.mirrors) or ".." in rest.split("/"):
                return self._not_found()
            return self._proxy(int(head), rest)
        if path.startswith("/r/") and self.replay:
            rel = "/".join(part for part in path[3:].split("/") if part not in ("", "."))  # apt asks for ./Packages
            target = self._replay_files.get(rel)
            if target is None:
                return self._not_found()
            if isinstance(target, Served):
                self._served(target)
                return 200, self.pool.blob_path(target.sha256), "application/vnd.debian.binary-package"
            return 200, target, "text/plain"
        return self._not_found()

    def _not_found(self) -> tuple[int, bytes, str]:
        with self._lock:
            self.counts["not_found"] += 1
        return 404, b"not found\n", "text/plain"

    def _served(self, item: Served) -> None:
        with self._lock:
            self.fetched[item.sha256] = item

    # ---- record mode ------------------------------------------------------------------------
    def _proxy(self, n: int, rest: str) -> tuple[int, bytes | Path, str]:
        url = f"{self.mirrors[n]}/{urllib.parse.quote(rest, safe='/~:')}"
        name = rest.rsplit("/", 1)[-1]
        if name.endswith(PACKAGE_SUFFIXES):
            digest = self.pool.cached_url(url)
            if digest is None:
                digest, _ = self._fetch_into_pool(url, deb=True)
                if digest is None:
                    return self._not_found()
                self.pool.remember_url(url, digest)
            else:
                with self._lock:
                    self.counts["cache_hits"] += 1
            self._served(self._describe(digest, name))
            return 200, self.pool.blob_path(digest), "application/vnd.debian.binary-package"
        if "/by-hash/SHA256/" in rest:
            want = name
            if not self.pool.has_blob(want):
                digest, _ = self._fetch_into_pool(url, expect=want)
                if digest is None:
                    return self._not_found()
            else:
                with self._lock:
                    self.counts["cache_hits"] += 1
            return 200, self.pool.blob_path(want), "application/octet-stream"
        # everything else (InRelease, Release, Release.gpg, indices by name): the index cache's rule
        got = fetch_index(self.pool, url, max_age=self.index_max_age, user_agent="image-bakery-package-server",
                          timeout=UPSTREAM_TIMEOUT)
        with self._lock:
            if got.source == "mirror":
                self.counts["not_found" if got.status == 404 else "upstream"] += 1
            else:
                self.counts["index_cache_hits" if got.source == "cache" else "revalidated"] += 1
            self.counts["bytes_upstream"] += got.downloaded
        return got.status, got.path if got.path is not None else got.body, "application/octet-stream"

    def _describe(self, digest: str, filename: str) -> Served:
        fields = control_fields(self.pool.control(digest))
        return Served(digest, self.pool.blob_path(digest).stat().st_size, fields["Package"], fields["Version"],
                      fields["Architecture"], filename)

    def _open(self, url: str):
        req = urllib.request.Request(url, headers={"User-Agent": "image-bakery-package-server"})
        return urllib.request.urlopen(req, timeout=UPSTREAM_TIMEOUT)  # noqa: S310 - the catalogue's mirrors

    def _fetch_into_pool(self, url: str, *, deb: bool = False, expect: str | None = None) -> tuple[str | None, int]:
        tmp = self.pool.new_tmp()
        try:
            with self._open(url) as resp, open(tmp, "wb") as out:
                shutil.copyfileobj(resp, out, 1 << 20)
        except urllib.error.HTTPError as exc:
            tmp.unlink(missing_ok=True)
            if exc.code == 404:
                return None, 0
            raise
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        size = tmp.stat().st_size
        with self._lock:
            self.counts["upstream"] += 1
            self.counts["bytes_upstream"] += size
        try:
            return self.pool.put_file(tmp, expect_sha256=expect, deb=deb)
        except PoolError as exc:
            raise PoolError(f"{url}: {exc}") from None

    # ---- replay mode ------------------------------------------------------------------------
    def _replay_repo(self, index: PoolIndex) -> dict[str, Served | bytes]:
        """The flat repository of one index: Packages (+ .gz), Release, and the package files."""
        files: dict[str, Served | bytes] = {}
        stanzas = []
        for p in sorted(index.packages, key=lambda p: (p.name, p.arch)):
            if not self.pool.has_blob(p.sha256):
                raise PoolError(f"the pool has lost {p.filename} ({p.sha256}) of {index.image} {index.version}")
            rel = f"pool/{p.sha256}/{p.filename}"
            files[rel] = Served(p.sha256, p.size, p.name, p.version, p.arch, p.filename)
            control = self.pool.control(p.sha256).rstrip("\n")
            stanzas.append(f"{control}\nFilename: {rel}\nSize: {p.size}\nSHA256: {p.sha256}\n")
        packages = "\n".join(stanzas).encode()
        packages_gz = gzip.compress(packages, mtime=0)
        files["Packages"] = packages
        files["Packages.gz"] = packages_gz
        date = format_datetime(datetime.now(timezone.utc), usegmt=True)
        sums = "".join(f" {hashlib.sha256(b).hexdigest()} {len(b)} {n}\n"
                       for n, b in (("Packages", packages), ("Packages.gz", packages_gz)))
        files["Release"] = (f"Origin: image-bakery\nLabel: pool {index.image} {index.version}\n"
                            f"Suite: bakery-pool\nDate: {date}\nSHA256:\n{sums}").encode()
        return files

    def replay_source_line(self) -> str:
        return f"deb [trusted=yes] {self.guest_url()}/r/ ./"

