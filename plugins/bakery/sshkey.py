"""Ephemeral SSH key pairs: made for one Packer run in a private folder, gone afterwards.

The pair is generated in this process with ``cryptography`` (Ed25519, OpenSSH formats), so no
``ssh-keygen`` is needed on the worker and no other process ever sees the private key.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


def _write(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)  # created with its mode: never readable by others
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


@contextlib.contextmanager
def ephemeral_keypair(comment: str = "bakery-ephemeral") -> Iterator[tuple[Path, Path]]:
    """Yield (private key path, public key path); the folder (0700) is removed on exit.

    The private key is an unencrypted OpenSSH key (0600), the public key one ``authorized_keys``
    line (``ssh-ed25519 AAAA... <comment>``), as ``ssh-keygen -t ed25519 -N ''`` would write them.
    """
    folder = Path(tempfile.mkdtemp(prefix="bakery-key-"))  # mkdtemp: 0700
    try:
        key = Ed25519PrivateKey.generate()
        private = folder / "id_ed25519"
        public = folder / "id_ed25519.pub"
        _write(private, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                          serialization.NoEncryption()), 0o600)
        line = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        _write(public, line + (f" {comment}".encode() if comment else b"") + b"\n", 0o644)
        yield private, public
    finally:
        shutil.rmtree(folder, ignore_errors=True)
