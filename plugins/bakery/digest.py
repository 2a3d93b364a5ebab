"""Content digests used for provenance (template folder, files)."""

from __future__ import annotations

import hashlib
from pathlib import Path


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def tree_digest(folder: Path) -> str:
    """sha256 over every regular file below ``folder`` (relative path + content), order-stable."""
    h = hashlib.sha256()
    for p in sorted(q for q in folder.rglob("*") if q.is_file()):
        rel = p.relative_to(folder).as_posix()
        if "/." in "/" + rel:  # skip hidden files (editor swap files, .packer.d caches)
            continue
        h.update(rel.encode() + b"\0")
        h.update(sha256_file(p).encode() + b"\n")
    return "sha256:" + h.hexdigest()
