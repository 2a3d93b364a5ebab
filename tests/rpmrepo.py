"""LoopbackRpmRepos: rpm repositories (rpm-md, as createrepo_c writes them) on 127.0.0.1 that a test
writes itself, standing in for AlmaLinux's mirrors in the pending-update check.

Each repository is ``<root>/<name>/x86_64/os/`` (``url(name)``, the shape of
``https://repo.almalinux.org/almalinux/9/BaseOS/x86_64/os``) with

    repodata/repomd.xml                      the index: <data type="primary"> with checksum and location
    repodata/<sha256>-primary.xml.gz         one <package type="rpm"> per package (name, arch, version
                                             epoch/ver/rel, checksum, location, format with rpm:provides ...)

``publish(name, packages)`` writes a new primary (``.gz``, ``.xz``, ``.bz2``, plain ``.xml``, or a
``.zst`` the check cannot read) and repomd.xml, replacing the previous state, like a mirror sync. The
metadata is hand-written test data, not real repositories: the package versions are real AlmaLinux 9
ones (the fake build VM's, ``tests/azure_emulator/fake_packer.py``). Every request is recorded as
(method, path, status). No package files are served: the check reads metadata only.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import lzma
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit
from xml.sax.saxutils import escape, quoteattr

COMPRESSORS = {"gz": gzip.compress, "xz": lzma.compress, "bz2": bz2.compress, "": bytes,
               # not zstd (the stdlib has none): bytes that start like a zstd frame, enough for the check to refuse
               "zst": lambda data: b"\x28\xb5\x2f\xfd" + b"\x00" * 16}


@dataclass(frozen=True)
class Rpm:
    name: str
    arch: str
    ver: str
    rel: str
    epoch: str = "0"

    @classmethod
    def of(cls, name: str, evr: str, arch: str) -> Rpm:
        """From the manifest's spelling: ``'1:1.20.1-14.el9_2.1'`` or ``'2.34-100.el9_4.2'``."""
        epoch, sep, rest = evr.partition(":")
        if not sep:
            epoch, rest = "0", evr
        ver, _, rel = rest.rpartition("-")
        return cls(name, arch, ver, rel, epoch)

    @property
    def nevra(self) -> str:
        return f"{self.name}-{self.ver}-{self.rel}.{self.arch}"

    def xml(self, n: int) -> str:
        pkgid = hashlib.sha256(f"{self.epoch}:{self.nevra}".encode()).hexdigest()
        src = f"{self.name}-{self.ver}-{self.rel}.src.rpm"
        v = f'epoch="{self.epoch}" ver={quoteattr(self.ver)} rel={quoteattr(self.rel)}'
        return f"""<package type="rpm">
  <name>{escape(self.name)}</name>
  <arch>{escape(self.arch)}</arch>
  <version {v}/>
  <checksum type="sha256" pkgid="YES">{pkgid}</checksum>
  <summary>{escape(self.name)} (test data)</summary>
  <description>Hand-written repository metadata standing in for an AlmaLinux 9 mirror.</description>
  <packager>AlmaLinux Packaging Team &lt;packager@almalinux.org&gt;</packager>
  <url>https://almalinux.org</url>
  <time file="{1714000000 + n}" build="{1713900000 + n}"/>
  <size package="{100000 + n}" installed="{400000 + n}" archive="{400500 + n}"/>
  <location href="Packages/{escape(self.nevra)}.rpm"/>
  <format>
    <rpm:license>MIT</rpm:license>
    <rpm:vendor>AlmaLinux</rpm:vendor>
    <rpm:group>Unspecified</rpm:group>
    <rpm:buildhost>build.almalinux.org</rpm:buildhost>
    <rpm:sourcerpm>{escape(src)}</rpm:sourcerpm>
    <rpm:header-range start="4504" end="{20000 + n}"/>
    <rpm:provides>
      <rpm:entry name={quoteattr(self.name)} flags="EQ" epoch="{self.epoch}" ver="99.0" rel="1"/>
    </rpm:provides>
    <rpm:requires>
      <rpm:entry name="glibc" flags="GE" epoch="0" ver="2.34"/>
    </rpm:requires>
    <file>/usr/share/doc/{escape(self.name)}/README</file>
  </format>
</package>
"""


def primary_xml(packages: Iterable[Rpm]) -> bytes:
    pkgs = list(packages)
    body = "".join(p.xml(n) for n, p in enumerate(pkgs))
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<metadata xmlns="http://linux.duke.edu/metadata/common" '
            f'xmlns:rpm="http://linux.duke.edu/metadata/rpm" packages="{len(pkgs)}">\n{body}</metadata>\n').encode()


def repomd_xml(href: str, checksum: str, open_checksum: str, size: int, open_size: int, revision: int,
               checksum_type: str = "sha256") -> bytes:
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<repomd xmlns="http://linux.duke.edu/metadata/repo" xmlns:rpm="http://linux.duke.edu/metadata/rpm">
  <revision>{revision}</revision>
  <data type="filelists">
    <checksum type="sha256">{"0" * 64}</checksum>
    <location href="repodata/{"0" * 64}-filelists.xml.gz"/>
    <timestamp>{revision}</timestamp>
    <size>1</size>
  </data>
  <data type="primary">
    <checksum type="{checksum_type}">{checksum}</checksum>
    <open-checksum type="sha256">{open_checksum}</open-checksum>
    <location href="{href}"/>
    <timestamp>{revision}</timestamp>
    <size>{size}</size>
    <open-size>{open_size}</open-size>
  </data>
  <data type="other">
    <checksum type="sha256">{"1" * 64}</checksum>
    <location href="repodata/{"1" * 64}-other.xml.gz"/>
    <timestamp>{revision}</timestamp>
    <size>1</size>
  </data>
</repomd>
""".encode()


class LoopbackRpmRepos:
    """rpm repositories on loopback (see the module doc); ``with LoopbackRpmRepos(root) as repos: ...``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.requests: list[tuple[str, str, int]] = []
        self._revision = 1714000000
        repos = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = unquote(urlsplit(self.path).path)
                file = (repos.root / path.lstrip("/")).resolve()
                ok = file.is_file() and repos.root.resolve() in file.parents
                repos.requests.append(("GET", path, 200 if ok else 404))
                if not ok:
                    self.send_error(404)
                    return
                data = file.read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args) -> None:  # quiet
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True, name="rpm-repos")
        self._thread.start()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}/x86_64/os"

    def publish(self, name: str, packages: Iterable[Rpm], *, compression: str = "gz",
                checksum_type: str = "sha256", listed_checksum: str | None = None) -> str:
        """Write repository ``name`` anew with ``packages``; return the primary's path in the repo.
        ``listed_checksum``: what repomd.xml claims (default: the real one) - a mirror caught mid-sync."""
        base = self.root / name / "x86_64" / "os"
        repodata = base / "repodata"
        repodata.mkdir(parents=True, exist_ok=True)
        for old in repodata.iterdir():
            old.unlink()
        plain = primary_xml(packages)
        data = COMPRESSORS[compression](plain)
        digest = hashlib.new("sha1" if checksum_type == "sha" else checksum_type, data).hexdigest()
        href = f"repodata/{hashlib.sha256(data).hexdigest()}-primary.xml" + (f".{compression}" if compression else "")
        (base / href).write_bytes(data)
        self._revision += 1
        (repodata / "repomd.xml").write_bytes(repomd_xml(
            href, listed_checksum or digest, hashlib.sha256(plain).hexdigest(), len(data), len(plain),
            self._revision, checksum_type))
        return f"/{name}/x86_64/os/{href}"

    def fetched(self, suffix: str) -> int:
        """How many answered GETs asked for a path ending in ``suffix``."""
        return sum(1 for m, p, s in self.requests if m == "GET" and s == 200 and p.endswith(suffix))

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> LoopbackRpmRepos:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- AlmaLinux 9 as the fake build VM has it (tests/azure_emulator/fake_packer.py) ------------------
APPSTREAM = {"nginx", "nginx-core", "nginx-filesystem", "cloud-init", "WALinuxAgent"}
NGINX = ("nginx", "nginx-core", "nginx-filesystem")
# a build of the nginx:1.24 module stream (dnf offers it only to an image that enabled that stream)
NGINX_MODULE_STREAM = "1:1.24.0-4.module_el9.5.0+122+220a1c6c"
OLDER = {  # earlier builds a repository still lists beside the current one
    "glibc": "2.34-83.el9_3.12", "kernel-core": "5.14.0-362.24.1.el9_3", "openssl": "1:3.0.7-25.el9_3",
    "nginx": "1:1.20.1-10.el9",
}


def almalinux_repos(installed: Iterable[tuple[str, str, str]], nginx: str | None = None,
                    modular: bool = True) -> dict[str, list[Rpm]]:
    """BaseOS and AppStream listing every installed (name, version, arch) at its version (nginx's three
    packages at ``nginx`` if given), some older builds, and a module stream's nginx."""
    repos: dict[str, list[Rpm]] = {"BaseOS": [], "AppStream": []}
    for name, version, arch in installed:
        version = nginx if nginx and name in NGINX else version
        repo = repos["AppStream" if name in APPSTREAM else "BaseOS"]
        repo.append(Rpm.of(name, version, arch))
        if name in OLDER:
            repo.append(Rpm.of(name, OLDER[name], arch))
        if modular and name in NGINX:
            repo.append(Rpm.of(name, NGINX_MODULE_STREAM, arch))
    return repos
