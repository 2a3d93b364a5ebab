"""The host's real apt on a private tree, for tests of what apt gets from a mirror or a server."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path


class PrivateApt:
    """The host's apt-get / apt-cache on a private tree under `root`, for one sources.list line
    (``source``: a mirror URL with suite bookworm, main) or a whole ``sources`` text.

    APT_CONFIG points at a private apt.conf that is read first and redirects every directory
    (so the host's apt.conf.d hooks, sources, lists, caches, keyrings and dpkg status are never
    read or written); the dpkg status is an empty file: apt sees a system with nothing installed.
    """

    def __init__(self, root: Path, source: str = "", *, sources: str | None = None):
        self.root = root
        for sub in ("state/lists/partial", "cache/archives/partial", "etc/sources.list.d",
                    "etc/preferences.d", "etc/apt.conf.d", "etc/trusted.gpg.d", "log"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        (root / "state" / "status").write_text("")
        (root / "etc" / "apt.conf").write_text("")
        (root / "etc" / "sources.list").write_text(sources if sources is not None
                                                   else f"deb [trusted=yes] {source} bookworm main\n")
        options = {
            "Dir::State": root / "state",
            "Dir::State::status": root / "state" / "status",
            "Dir::Cache": root / "cache",
            "Dir::Etc": root / "etc",
            "Dir::Etc::main": root / "etc" / "apt.conf",
            "Dir::Etc::parts": root / "etc" / "apt.conf.d",
            "Dir::Etc::sourcelist": root / "etc" / "sources.list",
            "Dir::Etc::sourceparts": root / "etc" / "sources.list.d",
            "Dir::Etc::preferences": root / "etc" / "preferences",
            "Dir::Etc::preferencesparts": root / "etc" / "preferences.d",
            "Dir::Etc::trusted": root / "etc" / "trusted.gpg",
            "Dir::Etc::trustedparts": root / "etc" / "trusted.gpg.d",
            "Dir::Log": root / "log",
            "Debug::NoLocking": "1",
            "APT::Architecture": "amd64",
            "Acquire::Languages": "none",
            "Acquire::Retries": "0",
            "Acquire::http::Proxy::127.0.0.1": "DIRECT",
            "APT::Sandbox::User": "root",  # _apt cannot enter pytest's 0700 tmp dirs
        }
        self.config = root / "private-apt.conf"
        self.config.write_text("".join(f'{k} "{v}";\n' for k, v in options.items())
                               + 'APT::Architectures { "amd64"; };\n')
        self.args = [arg for k, v in options.items() for arg in ("-o", f"{k}={v}")]

    def run(self, tool: str, *args: str) -> subprocess.CompletedProcess:
        env = {**os.environ, "APT_CONFIG": str(self.config), "LC_ALL": "C.UTF-8",
               "DEBIAN_FRONTEND": "noninteractive"}
        return subprocess.run([tool, *self.args, *args], capture_output=True, text=True, env=env, timeout=300)

    def ok(self, tool: str, *args: str) -> str:
        proc = self.run(tool, *args)
        assert proc.returncode == 0 and "\nW: " not in "\n" + proc.stderr, (
            f"{tool} {' '.join(args)} -> {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        return proc.stdout

    def policy(self, package: str) -> tuple[str, list[str]]:
        """(candidate, versions in the version table) of a package."""
        out = self.ok("apt-cache", "policy", package)
        candidate = re.search(r"^\s+Candidate: (\S+)$", out, re.M)
        versions = re.findall(r"^\s+(?:\*\*\* )?(\S+) -?\d+$", out, re.M)
        return (candidate.group(1) if candidate else "(none)"), versions

    @property
    def archives(self) -> list[str]:
        """The .debs apt downloaded, by their pool file name (apt stores an epoch as `1%3a`)."""
        return sorted(re.sub(r"_\d+%3a", "_", p.name) for p in (self.root / "cache" / "archives").glob("*.deb"))
