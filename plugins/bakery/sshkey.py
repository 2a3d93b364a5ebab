"""Ephemeral SSH key pairs: made for one Packer run in a private folder, gone afterwards."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def ephemeral_keypair(comment: str = "bakery-ephemeral") -> Iterator[tuple[Path, Path]]:
    """Yield (private key path, public key path); the folder (0700) is removed on exit."""
    if shutil.which("ssh-keygen") is None:
        raise RuntimeError("ssh-keygen not found on PATH: install openssh-client (make setup does)")
    folder = Path(tempfile.mkdtemp(prefix="bakery-key-"))
    try:
        key = folder / "id_ed25519"
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(key)],
            check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        )
        yield key, Path(str(key) + ".pub")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
