"""A ``packer`` that records what the product hands Packer, then runs the real one (test double).

Put the folder of :func:`install` first on PATH. Every invocation appends one JSON line to the log:
``argv``, ``command`` (its first word that is not a flag), the names of the ``PKR_VAR_*`` variables in its environment, the content of every
``-var-file`` (JSON), and for each variable whose value names an existing file: its mode, whether it
holds a private key (never its content) and, for a public key (``*.pub``), its content. Then it execs
the real Packer with the same arguments, so what Packer does is what it would have done.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tests.tools import find_tool

REAL_PACKER = find_tool("packer") or "packer"  # on PATH, never the fake; before any shim is put first

_SHIM = r'''#!{python}
import json, os, stat, sys
argv = sys.argv[1:]
record = {{"argv": argv, "command": next((a for a in argv if not a.startswith("-")), ""), "pkr_var_names": sorted(k for k in os.environ if k.startswith("PKR_VAR_")),
          "var_files": {{}}, "files": {{}}}}
for arg in argv:
    if arg.startswith("-var-file="):
        path = arg.split("=", 1)[1]
        try:
            record["var_files"][path] = values = json.load(open(path))
        except (OSError, ValueError) as exc:
            record["var_files"][path] = {{"unreadable": str(exc)}}
            continue
        for name, value in values.items():
            if isinstance(value, str) and value.startswith("/") and os.path.isfile(value):
                text = open(value, errors="replace").read(1 << 16)
                info = {{"mode": oct(stat.S_IMODE(os.stat(value).st_mode)), "private_key": "PRIVATE KEY" in text}}
                if value.endswith(".pub"):
                    info["content"] = text
                record["files"][name] = info
with open({log!r}, "a") as fh:
    fh.write(json.dumps(record) + "\n")
os.execv({real!r}, [{real!r}, *argv])
'''


def install(folder: Path, log: Path) -> Path:
    """Write the recording ``packer`` into ``folder``; returns ``folder`` (put it first on PATH)."""
    folder.mkdir(parents=True, exist_ok=True)
    shim = folder / "packer"
    shim.write_text(_SHIM.format(python=sys.executable, log=str(log), real=REAL_PACKER))
    shim.chmod(0o755)
    return folder


def invocations(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
