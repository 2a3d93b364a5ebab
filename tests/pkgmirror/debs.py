"""Tiny real .deb packages built with dpkg-deb, and reading the control fields of any .deb."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

_EPOCH = 1_700_000_000  # fixed mtimes: the same name/version/fields give the same bytes


def make_deb(name: str, version: str, out_dir: Path, *, description: str = "bakery test package",
             depends: str = "") -> Path:
    """Build `<name>_<version>_all.deb` in out_dir (Architecture: all) and return its path.

    It ships /usr/share/<name>/VERSION containing the version, so a guest can tell which one
    it got. Built with `dpkg-deb --build --root-owner-group`, i.e. a package dpkg/apt accept.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    control = [
        f"Package: {name}",
        f"Version: {version}",
        "Architecture: all",
        "Maintainer: Image Bakery Tests <bakery@example.invalid>",
        "Section: misc",
        "Priority: optional",
        "Installed-Size: 1",
        *([f"Depends: {depends}"] if depends else []),
        f"Description: {description}",
        " Built by tests/pkgmirror for the image bakery's end-to-end tests.",
    ]
    with tempfile.TemporaryDirectory(prefix=f"mkdeb-{name}-") as tmp:
        root = Path(tmp) / "root"
        (root / "DEBIAN").mkdir(parents=True)
        (root / "DEBIAN" / "control").write_text("\n".join(control) + "\n")
        payload = root / "usr" / "share" / name / "VERSION"
        payload.parent.mkdir(parents=True)
        payload.write_text(version + "\n")
        for path in [root, *root.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
            os.utime(path, (_EPOCH, _EPOCH))
        deb = out_dir / f"{name}_{version.split(':')[-1]}_all.deb"
        proc = subprocess.run(
            ["dpkg-deb", "--build", "--root-owner-group", str(root), str(deb)],
            capture_output=True, text=True, env={**os.environ, "SOURCE_DATE_EPOCH": str(_EPOCH)},
        )
        if proc.returncode != 0:
            raise RuntimeError(f"dpkg-deb --build {name} {version} failed: {proc.stderr.strip()}")
    return deb


def control_fields(deb: Path) -> str:
    """The control stanza of a .deb as `dpkg-deb -f` prints it (deb822 text, no trailing blank line)."""
    proc = subprocess.run(["dpkg-deb", "-f", str(deb)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"dpkg-deb -f {deb} failed: {proc.stderr.strip()}")
    return proc.stdout.rstrip("\n")
