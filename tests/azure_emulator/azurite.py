"""Azurite, Microsoft's Azure Storage emulator (the npm package ``azurite``), for the SBOM tests.

``scripts/setup.sh`` installs the pinned version into ``$BAKERY_HOME/node`` (``npm install --prefix``,
not globally). Here it is started as the blob service only, on a free loopback port (``--blobPort 0``:
Azurite prints the port it bound, so there is no race for a port), with its data in a test's temporary
folder, and stopped (its process group) at the end::

    with Azurite(tmp_path / "azurite") as azurite:
        azurite.create_container("sboms")
        env[f"AIRFLOW_CONN_{ID}"] = azurite.wasb_connection_json()   # an Airflow wasb connection
        ...
        azurite.blob_names("sboms"), azurite.read_blob("sboms", name), azurite.requests()

Requests use Azurite's well-known development account (``devstoreaccount1`` and its published key,
https://learn.microsoft.com/azure/storage/common/storage-use-azurite#well-known-storage-account-and-key):
no secret of ours. ``--skipApiVersionCheck``: the installed azure-storage-blob speaks a newer REST API
version than the Azurite release that still runs on the machine's Node (see scripts/setup.sh).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Self

import pytest

from tests.tools import in_ci

REPO = Path(__file__).resolve().parents[2]
ACCOUNT = "devstoreaccount1"
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
_LISTENING = re.compile(r"successfully listens on http://127\.0\.0\.1:(\d+)")


def azurite_blob_bin() -> Path | None:
    """``azurite-blob`` from BAKERY_AZURITE_BLOB, else the project's install ($BAKERY_HOME/node, then
    var/node of this checkout), else None."""
    explicit = os.environ.get("BAKERY_AZURITE_BLOB")
    candidates = [Path(explicit)] if explicit else []
    homes = [os.environ.get("BAKERY_HOME"), str(REPO / "var")]
    candidates += [Path(h) / "node" / "node_modules" / ".bin" / "azurite-blob" for h in homes if h]
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return path
    return None


def require_azurite() -> Path:
    """The azurite-blob executable; if it is not installed: skip the test, or fail it under CI."""
    path = azurite_blob_bin()
    if path is None:
        message = "needs Azurite: run scripts/setup.sh (it installs the pinned azurite into $BAKERY_HOME/node)"
        if in_ci():
            pytest.fail(f"{message} (CI is set: a missing tool fails the test instead of skipping it)", pytrace=False)
        pytest.skip(message)
    return path


class Azurite:
    """One Azurite blob service (see the module docstring)."""

    def __init__(self, location: Path, *, binary: Path | None = None, startup_timeout: float = 60) -> None:
        self.location = location
        self.binary = binary or require_azurite()
        self.startup_timeout = startup_timeout
        self.port: int | None = None
        self.output: list[str] = []  # Azurite's console: the start banner, then one access-log line per request
        self._proc: subprocess.Popen | None = None
        self._listening = threading.Event()
        self._reader: threading.Thread | None = None

    # --- life cycle ------------------------------------------------------------------------------------
    def start(self) -> Self:
        self.location.mkdir(parents=True, exist_ok=True)
        argv = [str(self.binary), "--blobHost", "127.0.0.1", "--blobPort", "0", "--location", str(self.location),
                "--skipApiVersionCheck", "--disableTelemetry"]
        # its own process group: stop() signals Azurite (node) and nothing else
        self._proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True, start_new_session=True, cwd=self.location)
        self._reader = threading.Thread(target=self._read, name="azurite-output", daemon=True)
        self._reader.start()
        deadline = time.monotonic() + self.startup_timeout
        while not self._listening.wait(0.1):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"Azurite did not start ({' '.join(argv)}):\n" + "\n".join(self.output[-30:]))
        return self

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:  # drained to the end: Azurite never blocks on a full pipe
            line = line.rstrip("\n")
            self.output.append(line)
            m = _LISTENING.search(line)
            if m and not self._listening.is_set():
                self.port = int(m.group(1))
                self._listening.set()

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=15)
            except ProcessLookupError:
                pass
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=15)
        if self._reader is not None:
            self._reader.join(timeout=5)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- how to reach it ---------------------------------------------------------------------------------
    @property
    def blob_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/{ACCOUNT}"

    @property
    def connection_string(self) -> str:
        return (f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
                f"BlobEndpoint={self.blob_endpoint};")

    def wasb_connection(self) -> dict[str, Any]:
        """An Airflow connection of type wasb (the Azure provider's Blob Storage) for this Azurite."""
        return {"conn_type": "wasb", "extra": {"connection_string": self.connection_string}}

    def wasb_connection_json(self) -> str:
        """The JSON form, for ``AIRFLOW_CONN_<ID>``."""
        return json.dumps(self.wasb_connection())

    def service(self) -> Any:
        """A BlobServiceClient of the test's own (not the product's path)."""
        from azure.storage.blob import BlobServiceClient

        return BlobServiceClient.from_connection_string(self.connection_string)

    # --- test helpers ------------------------------------------------------------------------------------
    def create_container(self, name: str) -> None:
        with self.service() as svc:
            svc.create_container(name)

    def blob_names(self, container: str) -> list[str]:
        with self.service() as svc:
            return sorted(b.name for b in svc.get_container_client(container).list_blobs())

    def read_blob(self, container: str, name: str) -> bytes:
        with self.service() as svc:
            return svc.get_blob_client(container, name).download_blob().readall()

    def blob_properties(self, container: str, name: str) -> Any:
        with self.service() as svc:
            return svc.get_blob_client(container, name).get_blob_properties()

    def requests(self, method: str | None = None, path: str = "") -> list[str]:
        """Azurite's access-log lines (``... "PUT /devstoreaccount1/<container>/<blob> HTTP/1.1" 201 ...``)."""
        out = []
        for line in list(self.output):
            m = re.search(r'"([A-Z]+) (\S+) HTTP/[\d.]+" (\d{3})', line)
            if m and (method is None or m.group(1) == method) and path in m.group(2):
                out.append(line)
        return out
