"""A real Airflow for tests that need the scheduler: ``airflow standalone`` (scheduler, DAG processor,
triggerer, API server with LocalExecutor) in a private Airflow home, driven through the API server's
public REST API (``/api/v2``) the way a user's tooling would.

    with AirflowStandalone(tmp_path / "airflow", env={...}) as af:
        af.unpause("bake_x")
        run = af.trigger("bake_x", logical_date=..., conf={...})
        af.wait_run("bake_x", run["dag_run_id"])

The metadata DB is a private PostgreSQL (:class:`PostgresServer`, Debian's server binaries, run as
the ``postgres`` user on loopback): Airflow refuses backfills on SQLite while the scheduler writes.
The simple auth manager runs with every user an admin (``SIMPLE_AUTH_MANAGER_ALL_ADMINS``): the
tests exercise the bakery, not Airflow's login; a test of what Airflow's login protects (the gallery
page) turns that off and signs in (``login``) with the generated admin password. Everything it started is stopped at exit (the
process group), and nothing of it listens beyond loopback.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import psutil
from bakery import processes

TERMINAL = {"success", "failed"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


PG_BIN = Path("/usr/lib/postgresql/15/bin")


class PostgresServer:
    """A throw-away PostgreSQL cluster on 127.0.0.1 (trust auth, loopback only), owned by the
    ``postgres`` user in a private folder under /tmp; removed at exit."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="bakery-test-pg-"))
        self.data = self.dir / "data"

    def _as_postgres(self, *argv: str) -> subprocess.CompletedProcess:
        return subprocess.run(["runuser", "-u", "postgres", "--", *argv], capture_output=True, text=True,
                              timeout=120, check=False)

    def __enter__(self) -> PostgresServer:
        bin_dir = PG_BIN if PG_BIN.is_dir() else Path(shutil.which("pg_ctl") or "pg_ctl").parent
        shutil.chown(self.dir, "postgres")
        self.dir.chmod(0o700)
        for argv in ([str(bin_dir / "initdb"), "-D", str(self.data), "--auth=trust", "-U", "postgres", "-E", "UTF8"],
                     [str(bin_dir / "pg_ctl"), "-D", str(self.data), "-l", str(self.dir / "pg.log"), "-w", "start", "-o",
                      f"-h 127.0.0.1 -p {self.port} -k {self.dir} -c max_connections=200"],
                     [str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "airflow"]):
            proc = self._as_postgres(*argv)
            if proc.returncode != 0:
                self.__exit__()
                raise RuntimeError(f"{' '.join(argv)} failed:\n{proc.stdout}{proc.stderr}")
        self._bin = bin_dir
        return self

    @property
    def url(self) -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/airflow"

    def __exit__(self, *exc) -> None:
        if (self.data / "postmaster.pid").exists():
            self._as_postgres(str(getattr(self, "_bin", PG_BIN) / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)


def _log_line(entry) -> str:
    """One structured log entry as text, with the exception a failed task raised (its error_detail)."""
    if not isinstance(entry, dict):
        return str(entry)
    line = str(entry.get("event", entry))
    for err in entry.get("error_detail") or []:
        if isinstance(err, dict):
            line += f"\n{err.get('exc_type', '')}: {err.get('exc_value', '')}"
    return line


class AirflowStandalone:
    def __init__(self, home: Path, *, env: dict[str, str] | None = None, parallelism: int = 4):
        self.home = Path(home)
        self.home.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = self.home / "standalone.log"
        self.env = {
            **os.environ,
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__BASE_URL": self.url,
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__CORE__PARALLELISM": str(parallelism),
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__SCHEDULER__MIN_FILE_PROCESS_INTERVAL": "5",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            **(env or {}),
        }
        self.proc: subprocess.Popen | None = None
        self.token: str | None = None  # sent as a Bearer token once set (``login``)

    # ---- lifecycle ------------------------------------------------------------------------------
    def __enter__(self) -> AirflowStandalone:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self, timeout: float = 240) -> None:
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(["airflow", "standalone"], stdout=self._log, stderr=subprocess.STDOUT,
                                     env=self.env, cwd=self.home, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"airflow standalone exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                if self.get("/api/v2/monitor/health")["scheduler"]["status"] == "healthy":
                    return
            except (OSError, KeyError, ValueError):
                pass
            time.sleep(2)
        raise TimeoutError(f"airflow standalone was not healthy after {timeout}s:\n{self.tail()}")

    def stop(self) -> None:
        if self.proc is None:
            return
        _stop_group(self.proc)
        self._log.close()
        self.proc = None

    def tail(self, n: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-n:] if self.log_path.exists() else ""

    # ---- REST -------------------------------------------------------------------------------------
    def admin_password(self) -> str:
        """The password ``airflow standalone`` generated for the simple auth manager's ``admin``."""
        return json.loads((self.home / "simple_auth_manager_passwords.json.generated").read_text())["admin"]

    def login(self, username: str = "admin", password: str | None = None) -> str:
        """Trade a user's password for a JWT (``POST /auth/token``); later requests send it. For a stack
        started with ``AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS=False``."""
        self.token = None
        self.token = self.request("POST", "/auth/token", {"username": username,
                                                          "password": password or self.admin_password()})["access_token"]
        return self.token

    def request(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                text = resp.read().decode()
        except urllib.error.HTTPError as exc:
            raise RuntimeError(f"{method} {path} -> HTTP {exc.code}: {exc.read().decode(errors='replace')[:2000]}") from None
        return json.loads(text) if text else None

    def get(self, path: str) -> Any:
        return self.request("GET", path)

    def wait_dag(self, dag_id: str, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.get(f"/api/v2/dags/{dag_id}")
                return
            except RuntimeError:
                time.sleep(3)
        raise TimeoutError(f"DAG {dag_id} was not parsed within {timeout}s:\n{self.tail()}")

    def unpause(self, dag_id: str, paused: bool = False) -> None:
        self.request("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": paused})

    def trigger(self, dag_id: str, *, logical_date: str | None = None, conf: dict | None = None) -> dict:
        return self.request("POST", f"/api/v2/dags/{dag_id}/dagRuns",
                            {"logical_date": logical_date, "conf": conf or {}})

    def backfill(self, dag_id: str, from_date: str, to_date: str, **kw: Any) -> dict:
        return self.request("POST", "/api/v2/backfills", {"dag_id": dag_id, "from_date": from_date, "to_date": to_date, **kw})

    def runs(self, dag_id: str) -> list[dict]:
        return self.get(f"/api/v2/dags/{dag_id}/dagRuns?limit=100&order_by=logical_date")["dag_runs"]

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        return self.get(f"/api/v2/dags/{dag_id}/dagRuns/{urllib.request.quote(run_id, safe='')}/taskInstances?limit=100")["task_instances"]

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int = 1) -> str:
        path = (f"/api/v2/dags/{dag_id}/dagRuns/{urllib.request.quote(run_id, safe='')}/taskInstances/"
                f"{task_id}/logs/{try_number}?full_content=true")
        data = self.get(path)
        content = data.get("content")
        if isinstance(content, list):
            return "\n".join(_log_line(c) for c in content)
        return str(content)

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value") -> Any:
        return self.get(f"/api/v2/dags/{dag_id}/dagRuns/{urllib.request.quote(run_id, safe='')}/taskInstances/"
                        f"{task_id}/xcomEntries/{key}?deserialize=true")["value"]

    def asset_events(self, uri: str, **filters: str) -> list[dict]:
        """The events of the Asset ``uri``, oldest first (``filters``: ``source_run_id=...`` and the like),
        each with the runs it created (``created_dagruns``)."""
        assets = self.get(f"/api/v2/assets?uri_pattern={urllib.parse.quote(uri, safe='')}")["assets"]
        (asset,) = [a for a in assets if a["uri"] == uri]
        query = urllib.parse.urlencode({"asset_id": asset["id"], "order_by": "timestamp", "limit": 100, **filters})
        return self.get(f"/api/v2/assets/events?{query}")["asset_events"]

    def run_from_event(self, uri: str, source_run_id: str, dag_id: str, timeout: float = 300) -> tuple[dict, dict]:
        """The one event of ``uri`` that run ``source_run_id`` emitted, and the run of ``dag_id`` it
        triggered, once that run finished."""
        def created():
            (event,) = self.asset_events(uri, source_run_id=source_run_id)
            runs = [r for r in event["created_dagruns"] if r["dag_id"] == dag_id and r["triggering"]]
            return (event, runs[0]) if runs else None
        event, run = self.wait_for(f"a run of {dag_id} from the asset event of {source_run_id}", created,
                                   timeout=timeout, interval=2)
        return event, self.wait_run(dag_id, run["run_id"], timeout=timeout)

    def wait_run(self, dag_id: str, run_id: str, timeout: float = 1800) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = self.get(f"/api/v2/dags/{dag_id}/dagRuns/{urllib.request.quote(run_id, safe='')}")
            if run["state"] in TERMINAL:
                return run
            time.sleep(5)
        raise TimeoutError(f"run {run_id} of {dag_id} did not finish within {timeout}s")

    def wait_for(self, what: str, predicate, timeout: float = 1800, interval: float = 5) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = predicate()
            if got:
                return got
            time.sleep(interval)
        raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


class WorkerProbe(threading.Thread):
    """Samples, every ``interval`` seconds, which task instances LocalExecutor's workers run: a busy
    worker's process title is ``airflow worker -- LocalExecutor: <task instance id>`` (its task
    process: ``airflow worker -- <task instance id>``), an idle one's ends in ``<idle>``."""

    def __init__(self, interval: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.interval = interval
        self.seen: list[tuple[float, str]] = []  # (time, process title)
        self.sweeps: list[float] = []  # when each sweep started (a sweep takes time on a loaded machine)
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            now = time.monotonic()  # one time per sweep
            self.sweeps.append(now)
            for p in psutil.process_iter(["cmdline"]):
                title = " ".join(p.info["cmdline"] or [])
                if title.startswith("airflow worker -- ") and "<idle>" not in title:
                    self.seen.append((now, title))
            time.sleep(self.interval)

    def held(self, ti_id: str, start: float = 0.0, end: float = float("inf")) -> list[float]:
        """The sweep times (sorted, distinct) at which a worker ran task instance ``ti_id``."""
        return sorted({t for t, title in self.seen if ti_id in title and start <= t <= end})

    def held_seconds(self, ti_id: str) -> float:
        """Seconds a worker ran ``ti_id``: each sweep that saw it counts until the next sweep started."""
        seen = set(self.held(ti_id))
        return sum(b - a for a, b in zip(self.sweeps, self.sweeps[1:], strict=False) if a in seen)


class ApiServer:
    """``airflow api-server`` alone (one worker, loopback), on the Airflow home and metadata DB ``env``
    names: to read through the REST API what a run made with ``airflow dags test`` (its task
    instances, XCom, extra links; the bakery's gallery page). Stopped (its process group) at exit."""

    def __init__(self, log_path: Path, *, env: dict[str, str], port: int | None = None):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = Path(log_path)
        self.env = {**env, "AIRFLOW__API__HOST": "127.0.0.1", "AIRFLOW__API__PORT": str(self.port),
                    "AIRFLOW__API__BASE_URL": env.get("AIRFLOW__API__BASE_URL", self.url),
                    "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": env.get(
                        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS", "True")}
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> ApiServer:
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(["airflow", "api-server", "-H", "127.0.0.1", "-p", str(self.port), "-w", "1"],
                                     stdout=self._log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"airflow api-server exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                with urllib.request.urlopen(self.url + "/api/v2/monitor/health", timeout=10):
                    return self
            except (OSError, ValueError):
                time.sleep(2)
        self.__exit__()
        raise TimeoutError(f"airflow api-server did not answer within 180s:\n{self.tail()}")

    def __exit__(self, *exc) -> None:
        if self.proc is None:
            return
        _stop_group(self.proc)
        self._log.close()
        self.proc = None

    def tail(self, n: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-n:] if self.log_path.exists() else ""

    def get(self, path: str) -> Any:
        try:
            with urllib.request.urlopen(self.url + path, timeout=120) as resp:
                return json.loads(resp.read().decode())
        except urllib.error.HTTPError as exc:
            raise RuntimeError(f"GET {path} -> HTTP {exc.code}: {exc.read().decode(errors='replace')[:2000]}") from None

    def links(self, dag_id: str, run_id: str, task_id: str) -> dict[str, str | None]:
        return self.get(f"/api/v2/dags/{dag_id}/dagRuns/{urllib.request.quote(run_id, safe='')}/taskInstances/"
                        f"{task_id}/links")["extra_links"]


def _stop_group(proc: subprocess.Popen) -> None:
    """Stop the process group a ``start_new_session`` Popen leads: SIGTERM, 30 s, SIGKILL (the
    bakery's own stop), then reap the leader."""
    processes.stop(group=proc.pid, grace_seconds=30)
    proc.wait(timeout=30)
