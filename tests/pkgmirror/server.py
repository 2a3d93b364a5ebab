"""LoopbackMirror: a Debian archive on 127.0.0.1 that a test publishes to and moves forward.

It serves ONE suite (bookworm), component main, arch amd64, laid out on disk under `root`:

    root/objects/<sha256>                       every .deb and index file, once (content store)
    root/states/0001-20250101T000000Z/          one complete archive per publish() (hard links)
        dists/bookworm/Release                  unsigned, Acquire-By-Hash: yes
        dists/bookworm/main/binary-amd64/Packages{,.gz,.xz}
        dists/bookworm/main/binary-amd64/by-hash/SHA256/<hex>   (indices of this AND earlier states)
        pool/main/<prefix>/<source>/<file>.deb
    root/current -> states/...                  the state /debian serves (for humans; flipped atomically)

URLs: `/debian/...` is the current state (the "live mirror"); `/archive/debian/<YYYYmmddTHHMMSSZ>/...`
is the newest state published at or before that time, like snapshot.debian.org (404 before the
first one). There is no InRelease and no Release.gpg (404): clients use `[trusted=yes]`.
Every request is recorded as (method, path, status).
"""

from __future__ import annotations

import gzip
import hashlib
import lzma
import os
import re
import shutil
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import format_datetime, parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

from .debs import control_fields

TIMESTAMP = "%Y%m%dT%H%M%SZ"  # snapshot.debian.org's timestamp format
_SNAPSHOT_PATH = re.compile(r"^/archive/debian/(\d{8}T\d{6}Z)/(.*)$")


@dataclass(frozen=True)
class MirrorState:
    """One published state: when it was published, its directory and its packages (name=version)."""

    when: datetime
    path: Path
    packages: tuple[str, ...]


def _pool_prefix(source: str) -> str:
    """Debian's pool sub-directory: `libfoo` -> `libf`, `nginx` -> `n`."""
    return source[:4] if source.startswith("lib") and len(source) > 3 else source[0]


def _link(src: Path, dest: Path) -> None:
    """Hard-link src to dest (copy if the file system refuses), creating parent directories."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dest)
    except OSError:
        shutil.copyfile(src, dest)


class LoopbackMirror:
    """An HTTP Debian mirror on 127.0.0.1 whose content the test replaces with `publish()`.

    Use as a context manager (starts/stops the server); `publish()` works before or after start.
    """

    suite = "bookworm"
    component = "main"
    arch = "amd64"

    def __init__(self, root: Path, *, validators: bool = True):
        self.root = Path(root)
        # False: no Last-Modified, If-Modified-Since ignored (like a proxy that strips them)
        self.validators = validators
        (self.root / "objects").mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self.root / "states", ignore_errors=True)  # states of an earlier mirror on this root
        (self.root / "states").mkdir()
        (self.root / "current").unlink(missing_ok=True)
        self._states: list[MirrorState] = []
        self._index_hashes: list[str] = []  # SHA256 of every index file ever published (by-hash)
        self._requests: list[tuple[str, str, int]] = []
        self._lock = threading.Lock()  # guards _states and _requests
        self._publish_lock = threading.Lock()  # one publish() at a time
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- server life cycle --------------------------------------------------------------------

    def start(self) -> LoopbackMirror:
        """Bind 127.0.0.1 on a free port and serve in a background thread."""
        handler = type("Handler", (_Handler,), {"mirror": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.1,), name="loopback-mirror", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving and release the port."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=10)
            self._server = self._thread = None

    def __enter__(self) -> LoopbackMirror:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the mirror is not started")
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        """The live mirror, for `deb [trusted=yes] <url> bookworm main`."""
        return f"http://127.0.0.1:{self.port}/debian"

    @property
    def snapshot_template(self) -> str:
        """The snapshot archive; format {timestamp} as YYYYmmddTHHMMSSZ."""
        return f"http://127.0.0.1:{self.port}/archive/debian/{{timestamp}}"

    def snapshot_url(self, when: datetime) -> str:
        """The snapshot archive as it was at `when`."""
        return self.snapshot_template.format(timestamp=when.astimezone(timezone.utc).strftime(TIMESTAMP))

    # -- content ------------------------------------------------------------------------------

    @property
    def states(self) -> list[MirrorState]:
        with self._lock:
            return list(self._states)

    def publish(self, debs: list[Path], *, when: datetime) -> MirrorState:
        """Make the mirror serve exactly `debs` from now on, as a new state dated `when`.

        `when` must be timezone-aware, not in the future (apt rejects a Release file dated in
        the future) and later than the previous state (snapshots are ordered by it, and apt's
        If-Modified-Since must see a change). The switch is atomic for clients: a request is
        served entirely from the old or entirely from the new state.
        """
        if when.tzinfo is None:
            raise ValueError("publish(when=...) needs a timezone-aware datetime")
        when = when.astimezone(timezone.utc).replace(microsecond=0)
        if when > datetime.now(timezone.utc):
            raise ValueError(f"publish(when={when}) is in the future: apt would refuse the Release file")
        with self._publish_lock:
            return self._publish([Path(d) for d in debs], when)

    def _publish(self, debs: list[Path], when: datetime) -> MirrorState:
        with self._lock:
            previous = self._states[-1] if self._states else None
        if previous is not None and when <= previous.when:
            raise ValueError(f"publish(when={when}) is not after the current state ({previous.when})")

        stanzas: dict[str, str] = {}
        names: list[str] = []
        pool: dict[str, Path] = {}
        for deb in debs:
            control = control_fields(deb)
            fields = dict(re.findall(r"^(\S+?):[ \t]*(.*)$", control, re.M))
            key = f"{fields['Package']}:{fields['Architecture']}"
            if key in stanzas:
                raise ValueError(f"{key} given twice to publish()")
            source = fields.get("Source", fields["Package"]).split(" ")[0]
            filename = f"pool/{self.component}/{_pool_prefix(source)}/{source}/{deb.name}"
            blob, md5, sha256, size = self._store(deb)
            pool[filename] = blob
            names.append(f"{fields['Package']}={fields['Version']}")
            stanzas[key] = (f"{control}\nFilename: {filename}\nSize: {size}\n"
                            f"MD5sum: {md5}\nSHA256: {sha256}\n")
        packages = "\n".join(stanzas[k] for k in sorted(stanzas)).encode()

        number = len(self._states) + 1
        tmp = self.root / "states" / f".tmp-{number:04d}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        final = self.root / "states" / f"{number:04d}-{when.strftime(TIMESTAMP)}"
        for filename, blob in pool.items():
            _link(blob, tmp / filename)
        dists = tmp / "dists" / self.suite
        index_dir = dists / self.component / f"binary-{self.arch}"
        indices = {"Packages": packages, "Packages.gz": gzip.compress(packages, mtime=0),
                   "Packages.xz": lzma.compress(packages)}
        listed = []
        for name, data in indices.items():
            index_dir.mkdir(parents=True, exist_ok=True)
            (index_dir / name).write_bytes(data)
            blob, md5, sha256, size = self._store(index_dir / name)
            listed.append((f"{self.component}/binary-{self.arch}/{name}", md5, sha256, size))
            if sha256 not in self._index_hashes:
                self._index_hashes.append(sha256)
        for sha256 in self._index_hashes:  # a real mirror keeps earlier by-hash files for a while
            _link(self.root / "objects" / sha256, index_dir / "by-hash" / "SHA256" / sha256)
        (dists / "Release").write_text(self._release(when, listed))
        tmp.rename(final)

        state = MirrorState(when, final, tuple(sorted(names)))
        with self._lock:
            self._states.append(state)
        link = self.root / f".current-{os.getpid()}"
        link.unlink(missing_ok=True)
        link.symlink_to(final.relative_to(self.root))
        os.replace(link, self.root / "current")
        return state

    def _store(self, path: Path) -> tuple[Path, str, str, int]:
        """Copy a file into the content store; return (stored path, md5, sha256, size)."""
        data = path.read_bytes()
        sha256 = hashlib.sha256(data).hexdigest()
        blob = self.root / "objects" / sha256
        if not blob.exists():
            tmp = blob.with_name(f".{sha256}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, blob)
        return blob, hashlib.md5(data).hexdigest(), sha256, len(data)

    def _release(self, when: datetime, listed: list[tuple[str, str, str, int]]) -> str:
        """The (unsigned) Release file of a state."""
        lines = [
            "Origin: Debian",
            "Label: Debian",
            f"Suite: {self.suite}",
            f"Codename: {self.suite}",
            f"Date: {format_datetime(when, usegmt=True).replace('GMT', 'UTC')}",
            "Acquire-By-Hash: yes",
            f"Architectures: {self.arch}",
            f"Components: {self.component}",
            "Description: bakery test mirror (tests/pkgmirror)",
            "MD5Sum:",
            *(f" {md5} {size:>16} {name}" for name, md5, _, size in listed),
            "SHA256:",
            *(f" {sha256} {size:>16} {name}" for name, _, sha256, size in listed),
        ]
        return "\n".join(lines) + "\n"

    def state_at(self, when: datetime) -> MirrorState | None:
        """The newest state published at or before `when` (None before the first)."""
        with self._lock:
            return next((s for s in reversed(self._states) if s.when <= when), None)

    # -- requests -----------------------------------------------------------------------------

    @property
    def requests(self) -> list[tuple[str, str, int]]:
        """Every request served so far: (method, path, status), in order; the path percent-decoded
        (apt sends `+` as `%2b`), with its query string if any."""
        with self._lock:
            return list(self._requests)

    def reset_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    def deb_requests(self) -> list[str]:
        """The paths of the .deb files requested so far (any method, any status)."""
        return [path for _, path, _ in self.requests if urlsplit(path).path.endswith(".deb")]

    def _record(self, method: str, path: str, status: int) -> None:
        with self._lock:
            self._requests.append((method, path, status))

    def resolve(self, url_path: str) -> tuple[Path, datetime] | None:
        """The file a URL path names and its Last-Modified time, or None (-> 404)."""
        path = unquote(urlsplit(url_path).path)
        snapshot = _SNAPSHOT_PATH.match(path)
        if snapshot:
            try:
                at = datetime.strptime(snapshot.group(1), TIMESTAMP).replace(tzinfo=timezone.utc)
            except ValueError:
                return None
            state, rel = self.state_at(at), snapshot.group(2)
        elif path.startswith("/debian/"):
            with self._lock:
                state = self._states[-1] if self._states else None
            rel = path.removeprefix("/debian/")
        else:
            return None
        parts = rel.split("/")
        if state is None or parts[0] not in ("dists", "pool") or any(p in ("", ".", "..") for p in parts):
            return None
        file = state.path.joinpath(*parts)
        return (file, state.when) if file.is_file() else None


class _Handler(BaseHTTPRequestHandler):
    """GET/HEAD of the mirror's files, keep-alive (apt pipelines), If-Modified-Since, no ranges."""

    protocol_version = "HTTP/1.1"
    server_version = "bakery-loopback-mirror"
    timeout = 60
    mirror: LoopbackMirror

    def do_GET(self) -> None:
        self._serve(body=True)

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def _serve(self, body: bool) -> None:
        found = self.mirror.resolve(self.path)
        if found is None:
            return self._reply(404, b"not found\n", body)
        file, modified = found
        if not self.mirror.validators:
            modified = None
        since = self.headers.get("If-Modified-Since")
        if since and modified is not None:
            try:
                if modified <= parsedate_to_datetime(since):
                    return self._reply(304, b"", False, modified)
            except (TypeError, ValueError):
                pass
        with file.open("rb") as f:
            size = os.fstat(f.fileno()).st_size
            self._reply(200, None, False, modified, length=size)
            if body:
                try:
                    shutil.copyfileobj(f, self.wfile, 1 << 20)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True

    def _reply(self, status: int, content: bytes | None, body: bool, modified: datetime | None = None,
               length: int | None = None) -> None:
        self.mirror._record(self.command, unquote(self.path), status)
        self.send_response(status)
        if status != 304:
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(content) if content is not None else length))
        if modified is not None:
            self.send_header("Last-Modified", format_datetime(modified, usegmt=True))
        self.end_headers()
        if body and content:
            self.wfile.write(content)

    def log_message(self, format: str, *args) -> None:  # quiet: requests are recorded instead
        pass
